"""Plain words for the dashboard: declarations, ages, deadlines. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cron_descriptor import ExpressionDescriptor, Options

from service.core.jobspec import Retention
from service.core.retention_slots import Slot
from service.core.units import format_duration, format_size
from service.notify.events import Hold, NoticeRule

_CRON_WORDS = Options()
_CRON_WORDS.use_24hour_time_format = True
_CRON_WORDS.verbose = False


def describe_cron(expression: str) -> str:
    """`0 2 * * *` -> `every day at 02:00`; other schedules as cron-descriptor words them."""
    try:
        text: str = ExpressionDescriptor(expression, _CRON_WORDS).get_description()
    except Exception:  # a declaration that validated is always describable; never fail a page
        return f"on the cron schedule {expression}"
    if text.startswith("At ") and "," not in text:
        return "every day " + text[0].lower() + text[1:]
    return text[0].lower() + text[1:]


_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
_EVERY_ONE = {604800: "week", 86400: "day", 3600: "hour", 60: "minute"}


def exact_duration(seconds: int) -> str:
    """A declared duration, exactly: `1 h`, `1 h 30 min`, `1 d 2 h`, `45 s`."""
    parts = []
    for unit, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}")
    return " ".join(parts) or "0 s"


def describe_schedule(schedule: dict[str, Any]) -> str:
    every = schedule.get("every")
    if every is not None:
        return "every " + _EVERY_ONE.get(every, exact_duration(every))
    zone = schedule.get("timezone") or "UTC"
    return f"{describe_cron(schedule['cron'])} {zone}"


_SIZE_UNITS = (
    ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3),
    ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10),
)  # fmt: skip


def declared_size(size: int) -> str:
    """A declared size in the unit the operator most likely wrote, exactly: `1 GB` for 10^9
    bytes, `1 GiB` for 2^30, `1.5 MB`, `512 B`. Only bytes are stored, so the unit is the one
    that writes the number exactly in the fewest characters (at most 3 decimals); bytes else."""
    best = f"{size} B"
    for name, unit in _SIZE_UNITS:
        thousandths, rest = divmod(size * 1000, unit)
        if size < unit or rest:
            continue
        text = _decimal(thousandths)
        candidate = f"{text} {name}"
        if len(candidate) < len(best):
            best = candidate
    return best


def _decimal(thousandths: int) -> str:
    whole, part = divmod(thousandths, 1000)
    return f"{whole}.{part:03d}".rstrip("0").rstrip(".") if part else str(whole)


def describe_source(source: dict[str, Any]) -> str:
    """What a job's source gives, and where: "a new *.sql.gz in /backups/db (and below)",
    "a new object in s3://bucket/db/ at https://s3.example.com", "a new restic snapshot in
    restic repository /srv/restic"."""
    kind = source.get("type", "local")
    if kind in ("restic", "borg"):
        what = "snapshot" if kind == "restic" else "archive"
        glob = source.get("archives")
        return f"a new {kind} {what}{f' matching {glob}' if glob else ''} in {source['repository']}"
    pattern = source.get("pattern") or "*"
    below = " (and below)" if source.get("recursive") else ""
    if kind == "s3":
        where = f"s3://{source['bucket']}/{source.get('prefix') or ''}{below}"
        if source.get("endpoint_url"):
            where += f" at {source['endpoint_url']}"
        return f"a new {'object' if pattern == '*' else pattern} in {where}"
    if kind == "sftp":
        where = f"sftp://{source['username']}@{source['host']}:{source.get('port', 22)}"
        where += f"{source['path']}{below}"
    else:
        where = f"{source['path']}{below}"
    return f"a new {'file' if pattern == '*' else pattern} in {where}"


def describe_declaration(
    source: dict[str, Any] | None, schedule: dict[str, Any], grace: int, rules: dict[str, Any]
) -> str:
    """One sentence: "a new *.sql.gz in /backups/db every day at 02:00 Europe/Paris, 1 h grace,
    at least 1.0 MiB"."""
    what = "a heartbeat" if source is None else describe_source(source)
    parts = [f"{what} {describe_schedule(schedule)}", f"{exact_duration(grace)} grace"]
    if rules.get("min_size") is not None:
        parts.append(f"at least {declared_size(rules['min_size'])}")
    if rules.get("max_size") is not None:
        parts.append(f"at most {declared_size(rules['max_size'])}")
    if rules.get("min_count") is not None:
        parts.append(f"{rules['min_count']} files kept at least")
    if rules.get("max_size_drop") is not None:
        parts.append(f"no more than {rules['max_size_drop']:g} % smaller than usual")
    return ", ".join(parts)


def describe_notify(notify: dict[str, Any] | None, defaults: Sequence[str]) -> str:
    """ "tells ops, mail (the default channels), again every 4 h while critical, of a problem
    once it has lasted for 30 min and for 2 checks in a row"."""
    notify = notify or {}
    channels = notify.get("channels")
    if channels is None:
        who = f"tells {', '.join(defaults)} (the default channels)" if defaults else "tells no one"
    else:
        who = f"tells {', '.join(channels)}" if channels else "tells no one (silenced)"
    every = notify.get("renotify_every")
    if every:
        who += f", again every {exact_duration(every)} while critical"
    lasted = []
    if notify.get("for"):
        lasted.append(f"for {exact_duration(notify['for'])}")
    if (notify.get("after") or 1) > 1:
        lasted.append(f"for {notify['after']} checks in a row")
    return f"{who}, of a problem once it has lasted {' and '.join(lasted)}" if lasted else who


def relative_time(moment: datetime | None, now: datetime) -> str:
    """`3 h ago`, `in 20 min`, `just now`; an em dash for no time at all."""
    if moment is None:
        return "—"
    seconds = (now - moment).total_seconds()
    if abs(seconds) < 30:
        return "just now"
    text = format_duration(abs(seconds))
    return f"{text} ago" if seconds > 0 else f"in {text}"


def describe_deadline(moment: datetime | None, now: datetime, being_written: bool = False) -> str:
    """The "next deadline" column: `in 5 h`, `overdue by 47 h`, an em dash for none.

    jobs.next_check_at is the next moment the job must be looked at. While its newest file is
    being written that is the settle re-check, not the job's deadline: it is said so."""
    if moment is None:
        return "—"
    seconds = (moment - now).total_seconds()
    if being_written:
        return f"re-checked {relative_time(moment, now)}: newest file being written"
    if seconds < -30:
        return f"overdue by {format_duration(-seconds)}"
    return relative_time(moment, now)


def as_of(moment: datetime | None, now: datetime) -> str:
    """When a stored judgement was made: `12:03 UTC` today, `2026-11-20 12:03 UTC` before.
    A reason's message ("is 83 s old") is true at that time, not at `now`."""
    if moment is None:
        return "—"
    moment = moment.astimezone(UTC)
    if moment.date() == now.astimezone(UTC).date():
        return f"{moment:%H:%M} UTC"
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _checks(count: int) -> str:
    return "the next check" if count == 1 else f"{count} more checks"


def describe_held(
    hold: Hold,
    status: str,
    bad_since: datetime | None,
    status_changed_at: datetime | None,
    rule: NoticeRule,
    now: datetime,
) -> str:
    """One line on a notice held back: "critical since 03:10 UTC; you will be told at 03:40
    UTC if it lasts (notify.for 30 min)"."""
    since = as_of(status_changed_at or bad_since, now)
    if bad_since is not None and status_changed_at is not None and bad_since < status_changed_at:
        since += f" (bad since {as_of(bad_since, now)})"
    where = f"{status} since {since}"
    if hold.reason == "silence":
        what = (
            "you will be told then if it is still so"
            if hold.kind in ("problem", "changed")
            else f"the {hold.kind} notice goes out then"
        )
        return f"{where}; silenced until {as_of(hold.until, now)}: {what}"
    parts = []
    if hold.reason == "for":
        parts.append(f"you will be told at {as_of(hold.until, now)} if it lasts")
    if hold.judgements:
        more = f"if {_checks(hold.judgements)} find{'s' if hold.judgements == 1 else ''} it bad"
        parts.append(f"and {more}" if parts else f"you will be told {more} too")
    settings = []
    if rule.for_seconds:
        settings.append(f"notify.for {exact_duration(rule.for_seconds)}")
    if rule.after > 1:
        settings.append(f"notify.after {rule.after}")
    return f"{where}; {' '.join(parts)} ({', '.join(settings)})"


# What one artifact of each kind of source is called, singular and plural.
ARTIFACT_WORDS = {
    "local": ("File", "Files"), "sftp": ("File", "Files"), "s3": ("Object", "Objects"),
    "restic": ("Snapshot", "Snapshots"), "borg": ("Archive", "Archives"),
}  # fmt: skip


def artifact_words(source: dict[str, Any] | None) -> tuple[str, str]:
    """("Snapshot", "Snapshots") for a restic job; files for a job without a source."""
    kind = (source or {}).get("type", "local")
    return ARTIFACT_WORDS.get(kind, ARTIFACT_WORDS["local"])


def artifact_name(path: str, details: dict[str, Any] | None, kind: str | None = None) -> str:
    """How an artifact is named in a list: a restic snapshot by its short id (its path is the
    full id: the first 8 characters when the details are not at hand), everything else by its
    path."""
    short = (details or {}).get("short_id")
    if isinstance(short, str) and short:
        return short
    return path[:8] if kind == "restic" else path


def describe_details(details: dict[str, Any] | None) -> str:
    """What a remote source tells of an artifact, in one line: "host web1 · tags daily, db ·
    /var/lib/pg" (restic), "compressed 1.2 MiB · deduplicated 4.0 KiB · 1 234 files" (borg), the
    storage class of an object when it is not STANDARD (s3). Empty when there is nothing."""
    if not details:
        return ""
    parts = []
    if details.get("hostname"):
        parts.append(f"host {details['hostname']}")
    if details.get("tags"):
        parts.append(f"tags {', '.join(map(str, details['tags']))}")
    if details.get("paths"):
        parts.append(", ".join(map(str, details["paths"])))
    for key in ("compressed_size", "deduplicated_size"):
        if isinstance(details.get(key), int):
            parts.append(f"{key.partition('_')[0]} {format_size(details[key])}")
    if isinstance(details.get("nfiles"), int):
        parts.append(f"{details['nfiles']:,} files".replace(",", " "))
    storage = details.get("storage_class")
    if storage and storage != "STANDARD":
        parts.append(f"storage class {storage}")
    return " · ".join(parts)


_SLOT_WORDS = {
    "kept": ("✔", "kept"),
    "missing": ("✖", "missing"),
    "not_expected": ("–", "not expected yet"),
}
_KIND_WORDS = {"daily": "days", "weekly": "ISO weeks", "monthly": "months", "yearly": "years"}


def retention_rows(policy: Retention | None, slots: Sequence[Slot]) -> list[dict[str, Any]]:
    """The retention calendar strip: one row per kind of slot the policy keeps, its cells
    oldest first, each with a symbol and a word (never color alone) and a title saying which
    backup keeps it or why none was due."""
    if policy is None:
        return []
    rows = []
    for kind, noun in _KIND_WORDS.items():
        cells = []
        for slot in reversed([slot for slot in slots if slot.kind == kind]):
            symbol, word = _SLOT_WORDS[slot.state]
            if slot.newest is not None:
                title = f"{slot.label}: kept by the backup of {slot.newest:%Y-%m-%d %H:%M} UTC"
            elif slot.state == "missing":
                title = f"{slot.label}: no backup kept, though one was due"
            else:
                title = f"{slot.label}: {slot.why}"
            cells.append({
                "label": slot.label, "state": slot.state, "symbol": symbol, "word": word,
                "title": title,
            })  # fmt: skip
        if cells:
            missing = sum(cell["state"] == "missing" for cell in cells)
            rows.append({
                "kind": kind, "title": f"the last {policy.count(kind)} {noun}",
                "summary": f"{missing} missing" if missing else "none missing", "cells": cells,
            })  # fmt: skip
    return rows


# A verification state (service.store.verifications.state_of) as a file's mark on the job page:
# (the badge's colour class, its words). The detail is shown as text beside it.
VERIFICATION_MARKS: dict[str, tuple[str, str]] = {
    "ok": ("s-ok", "✓ ok"),
    "corrupt": ("s-critical", "✗ corrupt"),
    "checksum_mismatch": ("s-critical", "✗ checksum mismatch"),
    "sidecar_error": ("s-warning", "checksum file unusable"),
    "too_large": ("s-warning", "not read through"),
    "unreadable": ("s-unknown", "unreadable"),
    "not_yet": ("s-pending", "not yet"),
}


def verification_mark(state: str) -> tuple[str, str]:
    """The mark of a file on the job page for its verification state."""
    return VERIFICATION_MARKS.get(state, ("s-unknown", state))
