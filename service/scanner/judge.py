"""Judging a job, as pure functions: (observation, run facts, silence, now) -> its new state,
and what that judgement means against the state stored (history row, notice, reminder, run
of bad judgements).

No I/O, no clock, no logging, no SQLAlchemy: the caller reads the clock and the facts, and
writes (service.scanner.writer). The same inputs always give the same Judgement. May import:
the standard library, service.core.jobspec, service.core.rules, service.scanner.state and the
pure rules of service.notify.events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.core.jobspec import JobSpec
from service.core.rules import (
    ArtifactFact,
    Evaluation,
    Reason,
    RunFacts,
    VerificationFacts,
    evaluate,
    next_check,
)
from service.notify.events import (
    News,
    NoticeRule,
    Streak,
    bad_streak,
    news,
    notice_due,
    renotify_at,
)
from service.scanner.state import (
    NEWEST_JUDGED,
    JobRow,
    JobState,
    Observation,
    StoredState,
    artifact_summary,
    entry_time,
    last_listed,
)


@dataclass(frozen=True, slots=True)
class Judgement:
    """A job judged from one observation: the state to store, and when.

    Invariants: seen_at <= checked_at; `sync` only with a listing (the inventory is synced
    with the listing judged, never with a guess); `silenced_until` is the end of the silence
    covering the job when it was judged (None: not silenced): its notices wait until then."""

    observation: Observation
    state: JobState
    # The job's artifacts must be synced with the listing (it differs from the one synced last).
    sync: bool
    checked_at: datetime  # when it was judged (history, notices)
    # When the facts it was judged on were read (<= checked_at): what jobs.checked_at records, so
    # that a ping stored after that read is still newer than the job's last look (the deadline
    # tick judges the jobs whose pings are newer than their checked_at).
    seen_at: datetime
    silenced_until: datetime | None = None
    error: str | None = None  # why the job could not be looked at (reported on its result)


def judge(
    observation: Observation,
    runs: RunFacts | None = None,
    *,
    now: datetime,
    seen_at: datetime | None = None,
    silenced_until: datetime | None = None,
    verification: VerificationFacts | None = None,
) -> Judgement:
    """Judge the observed job at `now` (rules.evaluate), from the facts read at `seen_at`
    (default: now), with what verification recorded. A source that could not be listed keeps
    the inventory as it was."""
    job, spec, listing = observation.job, observation.spec, observation.listing
    newest = [
        ArtifactFact(entry[0], entry[1], entry_time(entry))
        for entry in observation.ordered[-NEWEST_JUDGED:]
    ]
    reasons: tuple[Reason, ...]
    if spec is None:
        evaluation = Evaluation("unknown", (), None, None)
        message = observation.source_error or "the stored declaration is invalid"
        reasons = (Reason("source_error", "unknown", message),)
    else:
        evaluation = evaluate(
            spec, newest, now=now, created_at=job.created_at,
            source_error=observation.source_error,
            listing_warnings=listing.warnings if listing else (),
            count=observation.count, runs=runs,
            undated=listing.undated if listing else (),
            last_listed=last_listed(job.latest_artifact),
            backup_times=observation.backup_times, verification=verification,
        )  # fmt: skip
        reasons = evaluation.reasons
    if listing is not None or (spec is not None and spec.source is None):
        writing = evaluation.writing is not None and evaluation.writing == evaluation.newest
        latest = artifact_summary(evaluation.newest, being_written=writing)
        count = observation.count
    else:  # the source could not be read: keep what we knew
        latest, count = job.latest_artifact, job.artifact_count
    state = JobState(
        status=evaluation.status,
        reasons=reasons,
        next_check_at=next_check(spec, evaluation, runs, now) if spec else None,
        latest_artifact=latest,
        artifact_count=count,
        listing_digest=observation.digest,
    )
    sync = listing is not None and (
        observation.digest is None or observation.digest != job.listing_digest
    )
    return Judgement(
        observation, state, sync, checked_at=now, seen_at=min(now, seen_at or now),
        silenced_until=silenced_until, error=observation.source_error,
    )  # fmt: skip


def unjudged(
    observation: Observation, message: str, *, now: datetime, silenced_until: datetime | None = None
) -> Judgement:
    """The job could not be judged (`message` says why): it is unknown, with that as its
    reason, until a scan judges it; its files and inventory are left as they were, and its
    listing digest cleared so that the next scan syncs the files again."""
    job = observation.job
    state = JobState(
        status="unknown",
        reasons=(Reason("scan_error", "unknown", message),),
        next_check_at=None,
        latest_artifact=job.latest_artifact,
        artifact_count=job.artifact_count,
        listing_digest=None,
    )
    return Judgement(
        observation, state, sync=False, checked_at=now, seen_at=now,
        silenced_until=silenced_until, error=message,
    )  # fmt: skip


def notice_rule(spec: JobSpec | None) -> NoticeRule:
    """The job's notify.after and notify.for (the defaults for a declaration that does not
    validate: its `unknown` is told at once)."""
    if spec is None:
        return NoticeRule()
    return NoticeRule(spec.notify.after, spec.notify.for_)


def streak(judgement: Judgement, stored: StoredState) -> Streak:
    """The job's run of bad judgements with this one (pure rule: bad_streak)."""
    before = Streak(stored.bad_since, stored.bad_count or 0)
    rule = notice_rule(judgement.observation.spec)
    return bad_streak(before, judgement.state.status, judgement.checked_at, rule.after)


@dataclass(frozen=True, slots=True)
class Aftermath:
    """What a judgement writes beyond its state, against the state stored: the news (history
    row, notice or held notice) and the job's notice bookkeeping."""

    news: News
    streak: Streak
    status_changed_at: datetime | None
    # When the next notice is due (jobs.renotify_at): a reminder, or a held notice's moment.
    renotify_at: datetime | None
    # What people were last told: changed only by a notice, written with it.
    notified_status: str | None
    notified_reasons: list[dict[str, str]] | None


def aftermath(judgement: Judgement, stored: StoredState) -> Aftermath:
    """What this judgement means against `stored` (the rules are pure: news, renotify_at,
    notice_due in service.notify.events). The writer weighs it on the row it claims, so that
    a change is recorded, and notified, once."""
    state, spec, now = judgement.state, judgement.observation.spec, judgement.checked_at
    reasons = state.stored_reasons()
    run = streak(judgement, stored)
    due = stored.renotify_at is not None and stored.renotify_at <= now
    told = news(
        stored=stored.status, stored_reasons=stored.reasons or [],
        notified=stored.notified_status, notified_reasons=stored.notified_reasons,
        reminder_due=due, status=state.status, reasons=reasons,
        streak=run, rule=notice_rule(spec), now=now,
        silenced_until=judgement.silenced_until,
    )  # fmt: skip
    every = spec.notify.renotify_every if spec is not None else None
    reminder = renotify_at(
        state.status, stored.status, stored.renotify_at, every, now,
        told_now=told.kind is not None,
    )  # fmt: skip
    if told.kind is None:
        notified, notified_reasons = stored.notified_status, stored.notified_reasons
    else:
        notified, notified_reasons = state.status, reasons
    return Aftermath(
        news=told,
        streak=run,
        status_changed_at=now if state.status != stored.status else stored.status_changed_at,
        renotify_at=notice_due(reminder, told.held, stored.notified_status, state.status),
        notified_status=notified,
        notified_reasons=notified_reasons,
    )


def must_write(judgement: Judgement, job: JobRow) -> bool:
    """Whether the judgement writes more than the job's checked_at (else it is only touched,
    in a batch: nothing is lost by that), judged from the job as read: its files to sync,
    another state, a reminder due, a notice owed (one held until now), another count of bad
    judgements, another moment for the next notice."""
    if judgement.sync or not judgement.state.same_as(job):
        return True
    # A reminder is due: it is written with this judgement, so it tells the job as it is now,
    # not as it was at the first alert.
    if job.renotify_at is not None and job.renotify_at <= judgement.checked_at:
        return True
    after = aftermath(judgement, job)
    return (
        after.news.kind is not None
        or after.streak != Streak(job.bad_since, job.bad_count)
        or after.renotify_at != job.renotify_at
    )
