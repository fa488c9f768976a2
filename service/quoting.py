"""Quoting a value a user gave back to them in an error message, shortened.

A bad value may be 300 KB of text, or a YAML structure whose aliases expand to millions of
items: echoing it whole floods the terminal or the log and can take the process' memory.
"""

from __future__ import annotations

import reprlib

QUOTE_LIMIT = 60


def _short_repr(limit: int) -> reprlib.Repr:
    # Python 3.11's Repr takes no constructor arguments.
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    shortener.maxlevel, shortener.maxlist, shortener.maxtuple = 2, 4, 4
    shortener.maxdict = shortener.maxset = shortener.maxfrozenset = 4
    return shortener


def shorten(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` cut to `limit` characters, with "…" when something was cut."""
    return text if len(text) <= limit else text[:limit] + "…"


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`value` as repr() shows it, at most about `limit` characters of it: a longer text is cut
    ("'xxxx…' (300000 characters)"), a container shows its first few items."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit] + '…'!r} ({len(value)} characters)"
    try:
        return _short_repr(limit).repr(value)
    except ValueError:  # an integer of more than 4300 digits has no repr
        return f"<{type(value).__name__}>"
