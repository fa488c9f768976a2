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
    status for another set of problems (late, then late and too_small; see problem_codes)."""
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
    - "changed" when it is in the bad status told, for another set of problems `codes` than
      `told` (a new problem, or one of several gone), never for the same set with other
      messages;
    - "reminder" when it stays critical, as told, and a reminder is due;
    - None otherwise (a new job found ok, a pause, a status and problems already told, so
      that critical → paused → critical repeats nothing and critical → paused → ok
      recovers)."""
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


def problem_codes(status: str | None, reasons: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """The codes of a judgement's problems at its own status (its worst severity): what a
    "changed" notice and a history row compare. Lower-severity notes riding along (a
    subdirectory that vanished mid-listing, unknown, beside a critical `late`) come and go
    without the job's problem changing."""
    return frozenset(str(reason["code"]) for reason in reasons if reason.get("severity") == status)


def news(
    *,
    stored: str | None,
    stored_reasons: Iterable[Mapping[str, Any]],
    notified: str | None,
    notified_reasons: Iterable[Mapping[str, Any]] | None,
    reminder_due: bool,
    status: str,
    reasons: Iterable[Mapping[str, Any]],
) -> News:
    """The one rule for every judgement (full scan, deadline tick, ping), from the state
    stored before it (`stored`, `stored_reasons`), what people were last told (`notified`,
    `notified_reasons`; None: not known, as for a job paused before these were kept),
    whether a reminder is due, and the new `status` and `reasons`.

    Compared are the problems at the job's status (problem_codes): a history row for a
    change of status or of them; a "changed" notice when they differ from those told at the
    same status, whatever happened in between (a pause, pending), so a problem that appeared
    meanwhile is told once and the same problems are never told again."""
    reasons = list(reasons)
    codes = problem_codes(status, reasons)
    recorded = judgement_changed(stored, problem_codes(stored, stored_reasons), status, codes)
    if not recorded and not reminder_due:
        return News(False, None)
    told = None if notified_reasons is None else problem_codes(notified, notified_reasons)
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
