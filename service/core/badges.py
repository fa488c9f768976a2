"""Status badges: the opaque key of a badge URL, the worst status of a tag, and the badge
itself (an SVG, or shields.io's endpoint JSON). Pure functions, no I/O.

A badge URL is `/badge/{key}/{name}.svg`. The key is an HMAC of what the badge shows (a job,
or a tag, by name) under a random secret stored once in the database (service.store.secrets):
- unguessable: without the secret no key can be made, for any name, so badges cannot be
  enumerated; one leaked URL (a public README) shows that one badge only, not the others;
- nothing to store per job or per tag, and every replica computes the same URL;
- a job and a tag of the same name get different keys (the kind is part of the message), so
  the key also says which one the URL is for.
Rotating the secret (deleting its row) voids every badge URL at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from html import escape
from typing import Literal

from service.core.kinds import Status

BadgeKind = Literal["job", "tag"]
KEY_LENGTH = 22  # URL-safe base64 characters: 132 bits of the HMAC
KEY_PATTERN = r"[A-Za-z0-9_-]{22}"

# shields.io's named colours (its endpoint format), and the same colours in the SVG.
COLOURS: dict[Status, tuple[str, str]] = {
    "ok": ("brightgreen", "#4c1"),
    "warning": ("yellow", "#dfb317"),
    "critical": ("red", "#e05d44"),
    "unknown": ("blueviolet", "#8a63d2"),
    "pending": ("lightgrey", "#9f9f9f"),
    "paused": ("lightgrey", "#9f9f9f"),
}
# Worst first; a paused job does not count while another job of the tag is watched.
_WORST_FIRST: tuple[Status, ...] = ("critical", "warning", "unknown", "ok", "pending")


def badge_key(secret: bytes, kind: BadgeKind, name: str) -> str:
    """The opaque key of the badge of the job (or tag) `name`."""
    digest = hmac.new(secret, f"badge\0{kind}\0{name}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:KEY_LENGTH]


def key_matches(secret: bytes, kind: BadgeKind, name: str, key: str) -> bool:
    """Whether `key` is the badge key of that job or tag (constant time)."""
    return hmac.compare_digest(badge_key(secret, kind, name).encode(), key.encode())


def worst_of(statuses: Iterable[str]) -> Status | None:
    """The status of a tag's badge: the worst of its jobs' (critical > warning > unknown > ok
    > pending); `paused` when all its jobs are paused; None for no job at all."""
    present = set(statuses)
    if not present:
        return None
    return next((status for status in _WORST_FIRST if status in present), "paused")


def shields_json(label: str, status: Status) -> dict[str, object]:
    """shields.io's endpoint format (https://shields.io/badges/endpoint-badge)."""
    return {"schemaVersion": 1, "label": label, "message": status, "color": COLOURS[status][0]}


# Widths of Verdana 11 px (what shields.io measures with), for the characters a job name or a
# tag may hold; others count as wide.
_NARROW = set("fijlrt.:-_ ")
_WIDE = set("mwMW")


def text_width(text: str) -> int:
    """About how wide `text` is in Verdana 11 px, in pixels."""
    width = 0.0
    for char in text:
        if char in _NARROW:
            width += 4.2
        elif char in _WIDE:
            width += 10.5
        elif char.isupper() or char.isdigit():
            width += 7.5
        else:
            width += 6.9
    return round(width)


def badge_svg(label: str, status: Status) -> str:
    """A flat badge like shields.io's: the name on grey, the status word on its colour (the
    word is always there: the colour is never the only signal)."""
    left, right = text_width(label) + 10, text_width(status) + 10
    total = left + right
    colour = COLOURS[status][1]
    name, word = escape(label), escape(status)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{name}: {word}"><title>{name}: {word}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" '
        'font-size="11">'
        f'<text x="{left / 2}" y="15" fill="#010101" fill-opacity=".3">{name}</text>'
        f'<text x="{left / 2}" y="14">{name}</text>'
        f'<text x="{left + right / 2}" y="15" fill="#010101" fill-opacity=".3">{word}</text>'
        f'<text x="{left + right / 2}" y="14">{word}</text></g></svg>'
    )
