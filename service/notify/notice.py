"""One notice about a job: what every channel sends, as JSON, a subject line and a text body."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from service.core.kinds import NOTICE_KINDS, NoticeKind, Status, notice_kind_of, status_of
from service.core.units import format_size
from service.core.visible import quote, visible

SERVICE = "backup-monitor"
KINDS = NOTICE_KINDS


@dataclass(frozen=True, slots=True)
class Notice:
    """A status change (or reminder, or test) of one job, as sent to the channels."""

    event_id: str  # uuid4 text, stable across retries: receivers dedupe on it
    kind: NoticeKind
    job: str
    status: Status  # the new status: ok | warning | critical | unknown
    previous_status: Status | None
    reasons: list[dict[str, str]]  # each {"code", "severity", "message"}
    latest_artifact: dict[str, Any] | None  # {"path", "size" (bytes), "mtime" (ISO text)}
    occurred_at: datetime  # aware, UTC
    url: str | None = None  # the job's dashboard page, when PUBLIC_URL is set
    # A "changed" notice: the reason codes that are new, and those gone, since the last notice.
    changes: dict[str, list[str]] | None = None
    # A "digest" notice: the restore points (see digest_of in service.store.digests).
    digest: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at must be an aware datetime")

    def as_json(self) -> dict[str, Any]:
        """The webhook body (and what the outbox stores): every field, plus "service"."""
        return {
            "service": SERVICE,
            "event_id": self.event_id,
            "kind": self.kind,
            "job": self.job,
            "status": self.status,
            "previous_status": self.previous_status,
            "reasons": [dict(reason) for reason in self.reasons],
            "latest_artifact": None if self.latest_artifact is None else dict(self.latest_artifact),
            "occurred_at": self.occurred_at.isoformat(),
            "url": self.url,
            **({} if self.changes is None else {"changes": self._changes()}),
            **({} if self.digest is None else {"digest": dict(self.digest)}),
        }

    def _changes(self) -> dict[str, list[str]]:
        changes = self.changes or {}
        return {"new": list(changes.get("new", ())), "gone": list(changes.get("gone", ()))}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Notice:
        """The inverse of `as_json` (the "service" key is ignored)."""
        occurred_at = datetime.fromisoformat(data["occurred_at"])
        if occurred_at.tzinfo is None:
            raise ValueError("occurred_at has no time zone")
        artifact = data.get("latest_artifact")
        previous = data.get("previous_status")
        changes = data.get("changes")
        digest = data.get("digest")
        return cls(
            event_id=str(data["event_id"]),
            kind=notice_kind_of(data["kind"]),
            job=str(data["job"]),
            status=status_of(data["status"]),
            previous_status=None if previous is None else status_of(previous),
            reasons=[dict(reason) for reason in data.get("reasons") or []],
            latest_artifact=None if artifact is None else dict(artifact),
            occurred_at=occurred_at.astimezone(UTC),
            url=data.get("url"),
            changes=None
            if changes is None
            else {key: [str(code) for code in changes.get(key) or []] for key in ("new", "gone")},
            digest=None if digest is None else dict(digest),
        )

    def subject(self) -> str:
        """One line: `[backup-monitor] CRITICAL nightly-db (was ok)` and the like."""
        status = self.status.upper()
        was = f" (was {self.previous_status})" if self.previous_status else ""
        if self.kind == "test":
            line = "test message"
        elif self.kind == "recovery":
            line = f"RECOVERED {self.job}: {self.status}{was}"
        elif self.kind == "reminder":
            line = f"still {status} {self.job}"
        elif self.kind == "changed":
            line = f"{status} {self.job}: problem changed"
        elif self.kind == "digest":
            line = f"digest {self.job}: {digest_summary(self.digest or {})}"
        else:
            line = f"{status} {self.job}{was}"
        return " ".join(visible(f"[{SERVICE}] {line}").split())  # never a line break in a header

    def text(self) -> str:
        """The plain-text body: status, reasons, newest file, link and event id."""
        if self.kind == "digest":
            lines = [*digest_lines(self.job, self.status, self.digest or {}), ""]
            return self._ending(lines)
        lines = [self._headline(), *self._what_changed(), ""]
        lines += [f"- {reason.get('message', '')}" for reason in self.reasons]
        if self.reasons:
            lines.append("")
        if self.kind != "test":
            lines += [*describe_artifact(self.latest_artifact), ""]
        return self._ending(lines)

    def _ending(self, lines: list[str]) -> str:
        if self.url:
            lines.append(f"Dashboard: {self.url}")
        lines.append(f"At: {self.occurred_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC")
        lines.append(f"Event: {self.event_id}")
        # A file name (in the newest file, or quoted by a reason) may hold a line break, a
        # terminal escape, a bidi override: each line shows them as escapes, so the body has
        # only the lines written here.
        return "\n".join(visible(line) for line in lines) + "\n"

    def _headline(self) -> str:
        status = self.status.upper()
        was = f" (was {self.previous_status})" if self.previous_status else ""
        if self.kind == "test":
            return f"This is a test message from {SERVICE}."
        if self.kind == "recovery":
            return f"{self.job} has recovered: {status}{was}."
        if self.kind == "reminder":
            return f"{self.job} is still {status}."
        if self.kind == "changed":
            return f"{self.job} is still {status}, and its problem changed."
        return f"{self.job} is {status}{was}."

    def _what_changed(self) -> list[str]:
        if self.kind != "changed" or self.changes is None:
            return []
        changes = self._changes()
        return [
            f"New: {', '.join(changes['new']) or 'nothing'}",
            f"Gone: {', '.join(changes['gone']) or 'nothing'}",
        ]


def digest_summary(digest: Mapping[str, Any]) -> str:
    """A digest in a few words: `7 new backups, 1 retention gap`."""
    count = len(digest.get("points") or ()) + int(digest.get("more") or 0)
    words = [f"{count} new {'backup' if count == 1 else 'backups'}"]
    missing = len(digest.get("missing") or ())
    if digest.get("retention"):
        words.append(f"{missing} retention {'gap' if missing == 1 else 'gaps'}")
    return ", ".join(words)


# A restore point's verification state (service.store.verifications.state_of) in a digest.
_VERIFICATION_WORDS = {
    "ok": "ok", "corrupt": "CORRUPT", "checksum_mismatch": "CHECKSUM MISMATCH",
    "sidecar_error": "checksum file unusable", "too_large": "not read through (limit)",
    "unreadable": "unreadable", "not_yet": "not yet",
}  # fmt: skip


def digest_lines(job: str, status: str, digest: Mapping[str, Any]) -> list[str]:
    """A digest as plain text: the period, the retention slots, each backup made in it."""
    start, end, zone = digest.get("from", "?"), digest.get("to", "?"), digest.get("timezone", "UTC")
    lines = [
        f"Restore points of {job}, from {_when(start, zone)} to {_when(end, zone)} ({zone}).",
        f"Status now: {status}. Backups present in all: {digest.get('present', '?')}.",
        "",
    ]
    retention = digest.get("retention")
    if retention:
        policy = ", ".join(
            f"{kind} {retention[kind]}"
            for kind in ("daily", "weekly", "monthly", "yearly")
            if retention.get(kind)
        )
        slots = digest.get("slots") or {}
        missing = list(digest.get("missing") or ())
        lines.append(
            f"Retention ({policy}): {slots.get('kept', 0)} slots kept, "
            f"{len(missing)} missing, {slots.get('not_expected', 0)} not expected yet."
        )
        if missing:
            lines.append(f"No backup kept for: {', '.join(missing)}.")
        lines.append("")
    points = list(digest.get("points") or ())
    if not points:
        lines.append("No new backup in this period.")
    else:
        lines.append(f"New backups in this period ({len(points) + int(digest.get('more') or 0)}):")
    for point in points:
        size = point.get("size")
        size_text = format_size(size) if isinstance(size, int) else "?"
        kept = point.get("slots") or []
        slots_text = f", kept for {', '.join(kept)}" if kept else ""
        verified = point.get("verification")
        verified_text = (
            f", verification: {_VERIFICATION_WORDS.get(verified, verified)}" if verified else ""
        )
        lines.append(
            f"- {_when(point.get('mtime', '?'), zone)}  {point.get('path', '?')}  "
            f"{size_text}{slots_text}{verified_text}"
        )
    if digest.get("more"):
        lines.append(f"- and {digest['more']} more (GET /api/v1/jobs/{job}/restore-points)")
    return lines


def _when(moment: object, zone: object) -> str:
    """An ISO time of a digest as `2026-11-30 03:00` in the digest's zone."""
    try:
        parsed = datetime.fromisoformat(str(moment))
        return f"{parsed.astimezone(ZoneInfo(str(zone))):%Y-%m-%d %H:%M}"
    except (ValueError, KeyError, OSError):
        return str(moment)


def describe_artifact(artifact: Mapping[str, Any] | None) -> list[str]:
    """The newest file as text lines: path, then human size and modification time."""
    if artifact is None:
        return ["Newest file: none"]
    size = artifact.get("size")
    details = []
    if isinstance(size, int):
        details.append(f"size {format_size(size)} ({size} bytes)")
    if artifact.get("mtime"):
        details.append(f"modified {artifact['mtime']}")
    if artifact.get("being_written"):
        details.append("still being written (sizes are judged on the newest settled file)")
    lines = [f"Newest file: {artifact.get('path', '?')}"]
    if details:
        lines.append("  " + ", ".join(details))
    return lines


def test_notice(channel: str, now: datetime) -> Notice:
    """The notice `backup-monitor notify test CHANNEL` sends."""
    message = f"Sent by `backup-monitor notify test {channel}`: the channel {quote(channel)} works."
    return Notice(
        event_id=str(uuid.uuid4()),
        kind="test",
        job=SERVICE,
        status="ok",
        previous_status=None,
        reasons=[{"code": "test", "severity": "ok", "message": message}],
        latest_artifact=None,
        occurred_at=now.astimezone(UTC),
    )


# Not a test, whatever pytest thinks of a module that imports it.
test_notice.__test__ = False  # type: ignore[attr-defined]
