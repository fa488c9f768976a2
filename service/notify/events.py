"""What is worth telling people, as pure functions: which status changes make a notice, when
a critical notice is repeated, and the outbox row of a notice."""

from __future__ import annotations

import os
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.notify.notice import Notice

PROBLEMS = ("warning", "critical", "unknown")


def reason_codes(reasons: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """The set of a judgement's reason codes: what the job's problem is, whatever the
    messages say (an age that grew is the same problem)."""
    return frozenset(str(reason["code"]) for reason in reasons)


def judgement_changed(
    before: str | None,
    before_codes: Collection[str],
    status: str,
    codes: Collection[str],
) -> bool:
    """Whether a new judgement is a change worth a history row: another status, or the same
    status for another set of reasons (late, then late and too_small)."""
    return status != before or frozenset(codes) != frozenset(before_codes)


def notice_kind(
    notified: str | None,
    status: str,
    told: Collection[str] | None = None,
    codes: Collection[str] = (),
    *,
    reminder_due: bool = False,
) -> str | None:
    """What a new judgement tells people who were last told `notified` (None: nothing yet)
    for the reason codes `told` (None: not known, as after a pause):

    - "problem" when the job enters a bad status, or another bad one;
    - "recovery" when it is ok again after one;
    - "changed" when it stays in the bad status told, for another set of reasons (a new
      problem, or one of several gone), never for the same set with other messages;
    - "reminder" when it stays critical, as told, and a reminder is due;
    - None otherwise (a new job found ok, a pause, a status already told, so that
      critical → paused → critical repeats nothing and critical → paused → ok recovers)."""
    if status in PROBLEMS and status != notified:
        return "problem"
    if status == "ok" and notified in PROBLEMS:
        return "recovery"
    if status in PROBLEMS and told is not None and frozenset(told) != frozenset(codes):
        return "changed"
    if status == "critical" and notified == "critical" and reminder_due:
        return "reminder"
    return None


@dataclass(frozen=True, slots=True)
class News:
    """What a judgement of a job means for people: a history row, and which notice."""

    recorded: bool  # a change of status or of the set of reasons: a job_checks row
    kind: str | None  # the notice to write: problem, changed, recovery, reminder or None


def news(
    *,
    stored: str | None,
    stored_codes: Collection[str],
    notified: str | None,
    reminder_due: bool,
    status: str,
    codes: Collection[str],
) -> News:
    """The one rule for every judgement (full scan, deadline tick, ping), from the state
    stored before it (`stored`, `stored_codes`), the status people were last told
    (`notified`), whether a reminder is due, and the new `status` and `codes`.

    While the job stands at the status people were told, its stored codes are what they were
    told (each change of them is told); after a pause in between, what they were told is not
    known, and the same status again tells nothing (as before reasons were compared)."""
    recorded = judgement_changed(stored, stored_codes, status, codes)
    if not recorded and not reminder_due:
        return News(False, None)
    told = stored_codes if stored == notified else None
    return News(recorded, notice_kind(notified, status, told, codes, reminder_due=reminder_due))


def reason_changes(told: Collection[str], codes: Collection[str]) -> dict[str, list[str]]:
    """What a "changed" notice says is new and what is gone, codes sorted."""
    return {"new": sorted(set(codes) - set(told)), "gone": sorted(set(told) - set(codes))}


def renotify_at(
    status: str,
    previous: str | None,
    scheduled: datetime | None,
    every: int | None,
    now: datetime,
    *,
    told_now: bool = False,
) -> datetime | None:
    """When to repeat a critical notice: `every` seconds after the job became critical, or
    after the last notice about it (`told_now`: one is written with this judgement), then as
    the reminders go out; None when the job is not critical or asks for no reminders."""
    if status != "critical" or not every:
        return None
    if told_now or previous != "critical" or scheduled is None:
        return now + timedelta(seconds=every)
    return scheduled


def located(
    artifact: Mapping[str, Any] | None, source: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The newest artifact with its full path (a job stores it relative to its source), so a
    notice read at 3 a.m. says where to look."""
    if artifact is None:
        return None
    if source is None or not source.get("path"):
        return dict(artifact)
    return {**artifact, "path": os.path.join(source["path"], artifact["path"])}


def event_row(
    *,
    job_id: int,
    job_name: str,
    kind: str,
    status: str,
    previous_status: str | None,
    reasons: list[dict[str, str]],
    latest_artifact: dict[str, Any] | None,
    channels: Sequence[str] | None,
    now: datetime,
    changes: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The notification_events row for a notice (insert it in the status change's transaction)."""
    notice = Notice(
        event_id=str(uuid.uuid4()),
        kind=kind,
        job=job_name,
        status=status,
        previous_status=previous_status,
        reasons=reasons,
        latest_artifact=latest_artifact,
        occurred_at=now,
        changes=changes,
    )
    return {
        "event_id": notice.event_id,
        "job_id": job_id,
        "job_name": job_name,
        "kind": kind,
        "created_at": now,
        "payload": notice.as_json(),
        "channels": None if channels is None else list(channels),
        "routed_at": None,
    }
