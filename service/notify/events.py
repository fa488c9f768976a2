"""What is worth telling people, as pure functions: which status changes make a notice, when
a notice is held back (notify.after, notify.for, a silence), when a critical notice is
repeated, and the outbox row of a notice."""

from __future__ import annotations

import os
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from service.core.kinds import NoticeKind, Status, notice_kind_of
from service.notify.notice import Notice

PROBLEMS: tuple[Status, ...] = ("warning", "critical", "unknown")


class NoticeState(Protocol):
    """What decides a job's next notice, as stored: its judgement, what people were last told,
    its run of bad judgements (a Job, a row of its columns, or the scanner's snapshot)."""

    @property
    def status(self) -> str: ...
    @property
    def reasons(self) -> list[dict[str, str]]: ...
    @property
    def notified_status(self) -> str | None: ...
    @property
    def notified_reasons(self) -> list[dict[str, str]] | None: ...
    @property
    def bad_since(self) -> datetime | None: ...
    @property
    def bad_count(self) -> int: ...


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
) -> NoticeKind | None:
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
class Streak:
    """The job's current run of bad judgements (warning, critical or unknown in a row).

    Invariant: `since` is None exactly when `count` is 0 (the last judgement was not bad)."""

    since: datetime | None = None  # the first bad judgement of the run
    count: int = 0  # bad judgements in the run, counted up to the job's notify.after


def bad_streak(previous: Streak, status: str, now: datetime, after: int) -> Streak:
    """The run of bad judgements after one more judgement at `now` with `status`.

    Every judgement counts (a full scan, a deadline tick, a ping's), and any status that is
    not bad (ok, pending, paused) ends the run. The count stops at `after`, the most the rule
    asks for: a job that stays bad then writes nothing new judgement after judgement (its
    unchanged state is only touched), and a larger `after` declared later counts on."""
    if status not in PROBLEMS:
        return Streak()
    if previous.since is None or previous.count < 1:
        return Streak(now, 1)
    return Streak(previous.since, max(previous.count, min(previous.count + 1, after)))


HoldReason = Literal["silence", "for", "after"]


@dataclass(frozen=True, slots=True)
class Hold:
    """A notice kept back for now, and why.

    `reason` is the first condition not met, in this order: a silence, `for`, `after`.
    `until` is when the conditions on time are met (the end of the silence or of the `for`
    duration, whichever is later; None: `after` is the only condition left), and
    `judgements` how many more bad judgements `after` asks for (0: none): the notice goes
    out at the first judgement where both are met, if it is still owed then."""

    reason: HoldReason
    kind: NoticeKind  # the notice held: problem, changed, recovery or reminder
    until: datetime | None
    judgements: int = 0


@dataclass(frozen=True, slots=True)
class NoticeRule:
    """A job's notify.after and notify.for (seconds): when its problems may be told."""

    after: int = 1
    for_seconds: int = 0


def hold_of(
    kind: NoticeKind | None,
    streak: Streak,
    rule: NoticeRule,
    now: datetime,
    silenced_until: datetime | None = None,
) -> Hold | None:
    """Whether the notice `kind` owed at `now` waits, and until when (None: it goes out now).

    A problem, or a change of problems, is told once the job's run of bad judgements
    (`streak`, this judgement included) has lasted `rule.after` judgements and
    `rule.for_seconds` seconds; a flapping job whose runs are shorter is never told, and so
    never "recovers" either (its recovery is owed only for a problem told). Reminders and
    recoveries are about problems told: they wait only for a silence. While silenced (now
    before `silenced_until`), every notice waits; at the end the judgement then tells what
    is owed, once, with the job as it is."""
    if kind is None:
        return None
    unmet: list[HoldReason] = []
    ends: list[datetime] = []
    if silenced_until is not None and now < silenced_until:
        unmet.append("silence")
        ends.append(silenced_until)
    needed = 0
    if kind in ("problem", "changed"):
        if rule.for_seconds > 0:
            told_at = (streak.since or now) + timedelta(seconds=rule.for_seconds)
            if now < told_at:
                unmet.append("for")
                ends.append(told_at)
        needed = max(0, rule.after - streak.count)
        if needed:
            unmet.append("after")
    if not unmet:
        return None
    return Hold(unmet[0], kind, max(ends) if ends else None, needed)


@dataclass(frozen=True, slots=True)
class News:
    """What a judgement of a job means for people: a history row, and which notice."""

    recorded: bool  # a change of status or of the set of reasons: a job_checks row
    kind: NoticeKind | None  # the notice to write: problem, changed, recovery, reminder or None
    held: Hold | None = None  # a notice owed but kept back (then kind is None)


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
    streak: Streak | None = None,
    rule: NoticeRule = NoticeRule(),
    now: datetime | None = None,
    silenced_until: datetime | None = None,
) -> News:
    """The one rule for every judgement (full scan, deadline tick, ping), from the state
    stored before it (`stored`, `stored_reasons`), what people were last told (`notified`,
    `notified_reasons`; None: not known, as for a job paused before these were kept),
    whether a reminder is due, the new `status` and `reasons`, and what may hold a notice
    back: the job's run of bad judgements with this one (`streak`, see bad_streak), its
    `rule` (notify.after, notify.for), the judgement's time `now` and the end of a silence
    in force (`silenced_until`). Without a streak, nothing is held: it is needed (with
    `now`) as soon as the rule or a silence could hold something.

    Compared are the problems at the job's status (problem_codes): a history row for a
    change of status or of them; a "changed" notice when they differ from those told at the
    same status, whatever happened in between (a pause, pending, a hold), so a problem that
    appeared meanwhile is told once and the same problems are never told again.

    The notice owed is weighed at every judgement, changed or not: one held until a later
    judgement with the same status (the `for` has passed, the `after`-th bad judgement, the
    silence is over) goes out with that judgement. When nothing is held this is what it
    always was: a judgement that changes nothing owes nothing (what people were told is what
    the job stands at), so only a change or a due reminder makes a notice."""
    reasons = list(reasons)
    codes = problem_codes(status, reasons)
    recorded = judgement_changed(stored, problem_codes(stored, stored_reasons), status, codes)
    told = None if notified_reasons is None else problem_codes(notified, notified_reasons)
    kind = notice_kind(notified, status, told, codes, reminder_due=reminder_due)
    if streak is None:
        if rule != NoticeRule() or silenced_until is not None:
            raise ValueError("a notice rule or a silence needs the job's streak")
        return News(recorded, kind)
    if now is None:
        raise ValueError("holding a notice needs the judgement's time")
    held = hold_of(kind, streak, rule, now, silenced_until)
    return News(recorded, None if held else kind, held)


def owed_notice(
    *,
    status: str,
    reasons: Iterable[Mapping[str, Any]],
    notified: str | None,
    notified_reasons: Iterable[Mapping[str, Any]] | None,
    streak: Streak,
    rule: NoticeRule,
    judged_at: datetime,
    silenced_until: datetime | None = None,
) -> Hold | None:
    """The notice a job's stored state owes and holds, as its last judgement (at
    `judged_at`) left it: what the API and the dashboard show ("critical since 03:10; told
    at 03:40 if it lasts"). None: nothing is held. A hold whose `until` has passed since is
    written by the deadline tick within seconds (see notice_due)."""
    reasons = list(reasons)
    codes = problem_codes(status, reasons)
    told = None if notified_reasons is None else problem_codes(notified, notified_reasons)
    kind = notice_kind(notified, status, told, codes)
    return hold_of(kind, streak, rule, judged_at, silenced_until)


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


def notice_due(
    reminder: datetime | None, held: Hold | None, notified: str | None, status: str
) -> datetime | None:
    """When the next notice about the job is due: what jobs.renotify_at stores, and the
    deadline tick judges the job at (within TICK_SECONDS).

    `reminder` is renotify_at's answer. A notice held until a known moment (a `for`, a
    silence) is due then, before any later reminder, when the judgement that tells it is
    made; a problem not told yet
    has no reminder (the reminder of a problem told and silenced waits for the silence's
    end). Held by `after` alone, nothing is due at a moment: the next judgements count."""
    if held is None:
        return reminder
    if held.kind in ("problem", "changed") and notified != status:
        reminder = None  # nothing was told of this status yet: nothing to remind of
    if held.until is None:
        return reminder
    # Due when the hold ends, even before a later reminder: the judgement then tells what is
    # owed and sets the next reminder (a change held by a silence must not wait a day).
    return held.until


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
    status: Status,
    previous_status: Status | None,
    reasons: list[dict[str, str]],
    latest_artifact: dict[str, Any] | None,
    channels: Sequence[str] | None,
    now: datetime,
    changes: dict[str, list[str]] | None = None,
    digest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The notification_events row for a notice (insert it in the status change's transaction,
    or a digest's claim)."""
    notice = Notice(
        event_id=str(uuid.uuid4()),
        kind=notice_kind_of(kind),
        job=job_name,
        status=status,
        previous_status=previous_status,
        reasons=reasons,
        latest_artifact=latest_artifact,
        occurred_at=now,
        changes=changes,
        digest=digest,
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
