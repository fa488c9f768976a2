"""Pure evaluation of one backup job: (spec, artifacts present, now) -> status, reasons, deadline.

No I/O, no database and no clock: the caller passes `now`, so the same inputs always give the
same verdict and every rule can be tested at its exact boundary.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from fractions import Fraction
from typing import get_args
from zoneinfo import ZoneInfo

from cronsim import CronSim

from service.core.jobspec import JobSpec, Schedule
from service.core.kinds import Severity, Status
from service.core.retention_slots import Times, gap_message, retention_slots
from service.core.units import format_duration, format_size
from service.core.visible import quote

STATUSES: tuple[Status, ...] = get_args(Status)

FUTURE_TOLERANCE = timedelta(minutes=5)
# The smallest step both databases store: a strict rule ("longer than") first holds this much
# after its boundary.
_INSTANT = timedelta(microseconds=1)
SIZE_DROP_WINDOW = 10  # previous artifacts in the median
SIZE_DROP_MIN_HISTORY = 3
LISTING_WARNINGS_SHOWN = 3

_TIME_FORMAT = "%Y-%m-%d %H:%M %Z"
# An unset min_size still rejects an empty file (a failed dump that left a 0-byte file is the
# most common silent failure); `min_size: 0` accepts empty backups explicitly.
_DEFAULT_MIN_SIZE = 1
# Statuses that say nothing is wrong rank with "ok" when summarising several jobs.
_STATUS_RANK: dict[str, int] = {
    "ok": 0,
    "pending": 0,
    "paused": 0,
    "unknown": 1,
    "warning": 2,
    "critical": 3,
}
_RANKED_STATUSES: dict[int, Status] = {0: "ok", 1: "unknown", 2: "warning", 3: "critical"}


@dataclass(frozen=True, slots=True)
class ArtifactFact:
    """One artifact present in a job's source, as the evaluation needs it."""

    path: str  # relative to the source root, display form
    size: int  # bytes
    mtime: datetime  # aware, UTC


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What the job's pings say, as the evaluation needs it."""

    last_success_at: datetime | None = None  # the newest successful finish
    # The newest finished run: failed or not, and how long it took (None: no start seen).
    last_failed: bool = False
    last_finished_at: datetime | None = None
    last_duration: float | None = None
    last_exit_status: int | None = None
    running_since: datetime | None = None  # the start of a run not finished yet


# What a verification of an artifact found (artifact_verifications.outcome; the engine's words,
# service.verify.formats.Result, less those that record nothing: changed, stopped).
VERIFY_OK = "ok"
VERIFY_CORRUPT = "corrupt"  # a format check failed: the archive cannot be restored whole
VERIFY_MISMATCH = "checksum_mismatch"  # the bytes do not match the sidecar's digest
VERIFY_SIDECAR_ERROR = "sidecar_error"  # the sidecar is not a checksum file (foreign format)
VERIFY_TOO_LARGE = "too_large"  # the expansion guard stopped reading (a zip bomb?)
VERIFY_UNREADABLE = "unreadable"  # the file could not be opened or read
VERIFY_OUTCOMES = (
    VERIFY_OK, VERIFY_CORRUPT, VERIFY_MISMATCH, VERIFY_SIDECAR_ERROR, VERIFY_TOO_LARGE,
    VERIFY_UNREADABLE,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class VerifiedFact:
    """The last verification recorded for one present artifact (by path), as the evaluation
    needs it. `size` and `mtime` are those of the version verified: a result for another
    version (the file was rewritten since) does not count for the current one."""

    path: str
    size: int | None = None
    mtime: datetime | None = None
    verified_at: datetime | None = None  # None: never verified
    outcome: str | None = None  # VERIFY_*
    detail: str = ""
    sidecar: str | None = None  # the sidecar compared (None: none was found, or not asked)
    first_seen: datetime | None = None  # when the artifact was first listed (None: not known)


@dataclass(frozen=True, slots=True)
class RepositoryFact:
    """The last check of a restic or borg repository."""

    checked_at: datetime | None
    ok: bool | None  # None: never checked
    detail: str = ""
    # Not ok because the tool found damage; else the check could not run (a lock held by a
    # backup, a wrong password, the time up): not damage, tried again soon.
    damaged: bool = True


@dataclass(frozen=True, slots=True)
class VerificationFacts:
    """What verification recorded for a job: its newest artifacts' results, by path, and its
    repository's last check."""

    artifacts: Mapping[str, VerifiedFact] = field(default_factory=dict)
    repository: RepositoryFact | None = None


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a job is not ok: a stable code, its severity and a sentence a person can act on."""

    code: str
    severity: Severity
    message: str

    def as_dict(self) -> dict[str, str]:
        """The JSON form: {"code", "severity", "message"}."""
        return {"code": self.code, "severity": self.severity, "message": self.message}


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The verdict on one job at one instant."""

    status: Status
    reasons: tuple[Reason, ...]
    # When the job is (or was) due, aware UTC; may be in the past. None when paused or when
    # the source could not be listed.
    deadline: datetime | None
    newest: ArtifactFact | None
    # The newest artifact when it is still being written (see being_written): it counts for
    # freshness, while the size rules judge the newest settled one.
    writing: ArtifactFact | None = None
    # When `writing` may have settled: the job is judged again then (see next_check).
    settles_at: datetime | None = None
    # When the newest settled artifact, not verified yet, becomes `unverified` (see next_check).
    unverified_at: datetime | None = None


def evaluate(
    spec: JobSpec,
    artifacts: Sequence[ArtifactFact],
    *,
    now: datetime,
    created_at: datetime,
    source_error: str | None = None,
    listing_warnings: Sequence[str] = (),
    count: int | None = None,
    runs: RunFacts | None = None,
    undated: Sequence[tuple[str, int, int]] = (),
    last_listed: ArtifactFact | None = None,
    backup_times: Times | None = None,
    verification: VerificationFacts | None = None,
) -> Evaluation:
    """Judge a job from the artifacts present in its source at `now`.

    Only the newest SIZE_DROP_WINDOW + 2 artifacts matter (one more than the size-drop window,
    for a newest file still being written): a caller holding many may pass just those, with
    `count` the number present in all. `undated` are the files left out because no date can
    hold their modification time: (path, size, mtime in microseconds). `last_listed`: the
    newest artifact as the previous listing saw it (None: no previous listing).
    `backup_times`: the times of every artifact present, oldest first, for the retention
    policy (None: those of `artifacts`, which are then all of them).
    `verification`: what verification recorded (used when the job declares `verify`). Its
    reasons are about the newest settled artifact only (a corrupt older one is shown with its
    file, not judged: the newest is the one a restore would use) and the repository.
    """
    now = _as_utc(now, "now")
    created_at = _as_utc(created_at, "created_at")
    newest, previous = _newest_and_previous(artifacts)
    if count is None:
        count = len(artifacts)
    elif count < len(artifacts):
        raise ValueError(f"count ({count}) is smaller than the artifacts given")

    if spec.paused:
        return Evaluation(status="paused", reasons=(), deadline=None, newest=newest)

    if source_error is not None:
        # Whatever was listed before is stale or absent: judging it would be a guess.
        reason = Reason("source_error", "unknown", source_error or "the source could not be read")
        return Evaluation(status="unknown", reasons=(reason,), deadline=None, newest=None)

    reasons: list[Reason] = []
    if listing_warnings:
        reasons.append(_listing_reason(listing_warnings))
    if undated:
        reasons.append(_undated_reason(undated))

    zone = _display_zone(spec.schedule)

    runs = runs or RunFacts()
    reasons.extend(_run_reasons(spec, runs, now, zone))
    if spec.source is None and runs.last_success_at is not None:
        # A heartbeat job: its last successful run is what must be fresh.
        deadline = next_deadline(spec.schedule, spec.grace, min(runs.last_success_at, now))
        if now > deadline:
            age = format_duration((now - runs.last_success_at).total_seconds())
            reasons.append(
                Reason(
                    "late",
                    "critical",
                    f"the last successful run was {age} ago; "
                    f"a new one was due by {_format_time(deadline, zone)}",
                )
            )
        status: Status = _worst_severity(reasons) if reasons else "ok"
        return Evaluation(status=status, reasons=tuple(reasons), deadline=deadline, newest=None)

    if newest is None:
        deadline = next_deadline(spec.schedule, spec.grace, created_at)
        if now > deadline:
            reasons.append(Reason("missing", "critical", _missing_message(spec, deadline, zone)))
        # A partial listing of a source with nothing found is not "pending": the backups may
        # be in the part that could not be read.
        status = _worst_severity(reasons) if reasons else "pending"
        return Evaluation(status=status, reasons=tuple(reasons), deadline=deadline, newest=None)

    # A clock ahead on the writer must not postpone the deadline to a time that never comes.
    in_future = newest.mtime > now + FUTURE_TOLERANCE
    base = now if in_future else newest.mtime
    deadline = next_deadline(spec.schedule, spec.grace, base)

    if now > deadline:
        age = format_duration((now - newest.mtime).total_seconds())
        reasons.append(
            Reason(
                "late",
                "critical",
                f"newest backup {newest.path} is {age} old; "
                f"a new one was due by {_format_time(deadline, zone)}",
            )
        )
    if in_future:
        ahead = format_duration((newest.mtime - now).total_seconds())
        reasons.append(
            Reason(
                "future_mtime",
                "warning",
                f"newest backup {newest.path} has a modification time in the future "
                f"({_format_time(newest.mtime, zone)}, {ahead} ahead); "
                "check the clock of the machine that writes it",
            )
        )
    # A file still being written proves that the backup started (freshness above counts it),
    # but its size says nothing yet: the size rules judge the newest settled file, if any.
    settle = spec.source.settle if spec.source is not None else 0
    writing = newest if being_written(newest, last_listed, settle=settle, now=now) else None
    judged: ArtifactFact | None = newest
    if writing is not None:
        judged = previous[-1] if previous else None
        previous = previous[:-1]
        # It may have settled when its time is `settle` old, or (changed since the last
        # listing) `settle` from now.
        settled_at = writing.mtime + timedelta(seconds=settle)
        settles_at = settled_at if settled_at > now else now + timedelta(seconds=settle)
    else:
        settles_at = None
    if judged is not None:
        what = "newest settled backup" if writing is not None else "newest backup"
        reasons.extend(_size_reasons(spec, judged, previous[-SIZE_DROP_WINDOW:], what))

    unverified_at = None
    if spec.verify is not None:
        facts = verification or VerificationFacts()
        verify_reasons, unverified_at = _verify_reasons(spec, judged, facts, settle, now, zone)
        reasons.extend(verify_reasons)

    min_count = spec.rules.min_count
    if min_count is not None and count < min_count:
        reasons.append(
            Reason(
                "too_few",
                "warning",
                f"only {count} {'backup' if count == 1 else 'backups'} present; "
                f"at least {min_count} expected",
            )
        )

    if spec.retention is not None and not listing_warnings:
        # A partial listing may miss the backups of a slot: no gap is claimed from it.
        times = backup_times
        if times is None:
            times = sorted(artifact.mtime.astimezone(UTC) for artifact in artifacts)
        reasons.extend(_retention_reasons(spec, times, now, created_at))

    status = _worst_severity(reasons) if reasons else "ok"
    return Evaluation(
        status=status, reasons=tuple(reasons), deadline=deadline, newest=newest,
        writing=writing, settles_at=settles_at, unverified_at=unverified_at,
    )  # fmt: skip


def _verify_reasons(
    spec: JobSpec,
    judged: ArtifactFact | None,
    facts: VerificationFacts,
    settle: int,
    now: datetime,
    zone: tzinfo,
) -> tuple[list[Reason], datetime | None]:
    """The verification reasons of the newest settled artifact and of the repository, and
    when that artifact becomes `unverified` if it is not verified by then (None: not ahead)."""
    verify = spec.verify
    assert verify is not None
    reasons: list[Reason] = []
    unverified_at = None
    if verify.files and judged is not None:
        fact = facts.artifacts.get(judged.path)
        current = (
            fact is not None
            and fact.verified_at is not None
            and fact.size == judged.size
            and fact.mtime is not None
            and _as_utc(fact.mtime, "verified mtime") == judged.mtime
        )
        if current:
            assert fact is not None
            reason = _verified_reason(judged.path, fact, verify.checksum == "sidecar", zone)
            if reason is not None:
                reasons.append(reason)
        elif fact is not None and fact.first_seen is not None:
            # Settled when its time is `settle` old, and not before it was first listed (a file
            # copied in with an old time settles when it lands).
            settled_at = max(
                judged.mtime + timedelta(seconds=settle), _as_utc(fact.first_seen, "first_seen")
            )
            due = settled_at + timedelta(seconds=verify.unverified_after)
            if now > due:
                reasons.append(
                    Reason(
                        "unverified",
                        "warning",
                        f"newest backup {judged.path} is not verified "
                        f"{format_duration((now - settled_at).total_seconds())} after it "
                        f"settled (the limit is {format_duration(verify.unverified_after)}); "
                        "verification is behind (VERIFY_BYTES_PER_SECOND) or cannot read it",
                    )
                )
            else:
                unverified_at = due + _INSTANT
    repository = facts.repository
    if verify.repository is not None and repository is not None and repository.ok is False:
        when = (
            f" at {_format_time(repository.checked_at, zone)}"
            if repository.checked_at is not None
            else ""
        )
        where = spec.source.location() if spec.source is not None else "the repository"
        detail = repository.detail or "no message"
        if repository.damaged:
            reasons.append(
                Reason("repository_check_failed", "critical",
                       f"the check of {where} failed{when}: {detail}")
            )  # fmt: skip
        else:
            reasons.append(
                Reason("repository_check_error", "unknown",
                       f"the check of {where} could not run{when}: {detail}")
            )  # fmt: skip
    return reasons, unverified_at


def _verified_reason(path: str, fact: VerifiedFact, sidecar: bool, zone: tzinfo) -> Reason | None:
    """What the last verification of the current version of `path` says, if not all is well.
    A sidecar that is missing or unreadable is reported, never taken for a mismatch."""
    assert fact.verified_at is not None
    when = f"verified {_format_time(fact.verified_at, zone)}"
    detail = fact.detail or "no detail"
    if fact.outcome == VERIFY_CORRUPT:
        return Reason("corrupt", "critical", f"newest backup {path} is corrupt: {detail} ({when})")
    if fact.outcome == VERIFY_MISMATCH:
        return Reason(
            "checksum_mismatch", "critical",
            f"newest backup {path} does not match its checksum: {detail} ({when})",
        )  # fmt: skip
    if fact.outcome == VERIFY_UNREADABLE:
        return Reason(
            "source_error", "unknown", f"newest backup {path} could not be read to verify it: "
            f"{detail}",
        )  # fmt: skip
    if fact.outcome == VERIFY_TOO_LARGE:
        return Reason(
            "verify_limit", "warning",
            f"newest backup {path} was not read through: {detail} ({when}; the limits are "
            "VERIFY_MAX_RATIO and VERIFY_MAX_EXPANDED)",
        )  # fmt: skip
    if fact.outcome == VERIFY_SIDECAR_ERROR:
        return Reason(
            "checksum_unreadable", "warning",
            f"the checksum file of newest backup {path} cannot be used: {detail} ({when})",
        )  # fmt: skip
    if sidecar and fact.sidecar is None:
        return Reason(
            "checksum_missing", "warning",
            f"newest backup {path} has no checksum file beside it ({path}.sha256, .sha512, .md5 "
            f"or a SHA256SUMS, SHA512SUMS, MD5SUMS in its directory; {when})",
        )  # fmt: skip
    return None


def being_written(
    artifact: ArtifactFact, last_listed: ArtifactFact | None, *, settle: int, now: datetime
) -> bool:
    """Whether `artifact` may still be written: its modification time less than `settle`
    seconds from `now`, or listed before (same path) with another size or modification time.
    Never with settle 0. A file new since the previous listing is judged by its time alone: a
    finished file copied in with its old time (cp -p, rsync -t) is settled at once."""
    if settle <= 0:
        return False
    # Within `settle` either way: a writer whose clock is a little ahead writes "in the future";
    # one far ahead is a clock problem (future_mtime), and its file changes still tell.
    if abs(now - artifact.mtime) < timedelta(seconds=settle):
        return True
    return (
        last_listed is not None
        and last_listed.path == artifact.path
        and (last_listed.size != artifact.size or last_listed.mtime != artifact.mtime)
    )


def next_deadline(schedule: Schedule, grace: int, after: datetime) -> datetime:
    """When the next backup after `after` is due, grace included (aware UTC)."""
    after = _as_utc(after, "after")
    if schedule.every is not None:
        # Pure seconds: an `every` schedule does not care about DST or time zones.
        return after + timedelta(seconds=schedule.every + grace)
    if schedule.cron is None:  # pragma: no cover - Schedule validation guarantees one of both
        raise ValueError("schedule has neither 'every' nor 'cron'")
    return _next_fire(schedule.cron, schedule.zone, after) + timedelta(seconds=grace)


def next_check(
    spec: JobSpec, evaluation: Evaluation, runs: RunFacts | None, now: datetime
) -> datetime | None:
    """When the deadline tick must judge the job again: the first moment after `now` at which
    its verdict can change without anything new arriving (the deadline tick takes jobs whose
    `next_check_at` has passed). Else, when no such moment is ahead or the job is late, the
    deadline as it was.

    Candidates: the deadline; the first instant an open run is past `max_duration` (the newest
    start only, as run_facts says; a finished or superseded run has none); the instant a
    newest file dated in the future stops being so (its deadline then counts from its date);
    the instant a newest file being written may have settled (its size is judged then); the
    instant the newest settled artifact, still not verified, becomes `unverified`.
    """
    now = _as_utc(now, "now")
    if evaluation.deadline is None:  # paused, or nothing could be listed: nothing to wait for
        return None
    if evaluation.deadline <= now:
        # Late already: the job keeps its passed deadline, as next_check_at is also the deadline
        # shown on the dashboard and in backup_job_deadline_timestamp_seconds (BackupJobLate
        # fires on it): a moment ahead would show a late job as on time. An open run's limit
        # is then seen at the next full scan; the job is critical already.
        return evaluation.deadline
    candidates = [evaluation.deadline]
    if evaluation.settles_at is not None:
        candidates.append(evaluation.settles_at)
    if evaluation.unverified_at is not None:
        candidates.append(evaluation.unverified_at)
    max_duration = spec.rules.max_duration
    if max_duration is not None and runs is not None and runs.running_since is not None:
        # run_overdue holds once the run is strictly longer than max_duration.
        candidates.append(runs.running_since + timedelta(seconds=max_duration) + _INSTANT)
    newest = evaluation.newest
    if newest is not None and newest.mtime > now + FUTURE_TOLERANCE:
        candidates.append(newest.mtime - FUTURE_TOLERANCE)
    ahead = [moment for moment in candidates if moment > now]
    return min(ahead) if ahead else evaluation.deadline


def worst_status(statuses: Iterable[str]) -> Status:
    """The status of a set of jobs: critical > warning > unknown > ok (pending, paused = ok)."""
    rank = 0
    for status in statuses:
        try:
            rank = max(rank, _STATUS_RANK[status])
        except KeyError:
            raise ValueError(f"unknown status {status!r}") from None
    return _RANKED_STATUSES[rank]


def _next_fire(expression: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first fire time strictly after `after` (aware UTC), evaluated in `zone`."""
    # cronsim works on local wall-clock times for fixed-time expressions and returns the first
    # occurrence of an ambiguous time (fold=0). When `after` lies in the repeated hour of a
    # fall-back, it can therefore return a time that is already past (the first 02:30 when we
    # are at the second 02:15): skip those, so a job never becomes due twice in one night.
    for fire in CronSim(expression, after.astimezone(zone)):
        fire_utc = fire.astimezone(UTC)
        if fire_utc > after:
            return fire_utc
    raise ValueError(f"cron expression {quote(expression)} never fires after {after.isoformat()}")


def _newest_and_previous(
    artifacts: Sequence[ArtifactFact],
) -> tuple[ArtifactFact | None, list[ArtifactFact]]:
    """The newest artifact and the ones right before it, oldest first, mtimes in UTC."""
    if not artifacts:
        return None, []
    for artifact in artifacts:
        if artifact.mtime.tzinfo is not UTC:  # UTC is aware (a listing's times all are)
            _as_utc(artifact.mtime, f"mtime of {artifact.path}")  # rejects naive mtimes
    newest_first = heapq.nlargest(SIZE_DROP_WINDOW + 2, artifacts, key=_order)
    ordered = [
        a if a.mtime.tzinfo is UTC else replace(a, mtime=a.mtime.astimezone(UTC))
        for a in reversed(newest_first)
    ]
    return ordered[-1], ordered[:-1]


def _order(artifact: ArtifactFact) -> tuple[datetime, str]:
    return artifact.mtime, artifact.path


def _size_reasons(
    spec: JobSpec, newest: ArtifactFact, previous: Sequence[ArtifactFact], what: str
) -> list[Reason]:
    rules = spec.rules
    reasons: list[Reason] = []
    min_size = _DEFAULT_MIN_SIZE if rules.min_size is None else rules.min_size
    if newest.size < min_size:
        if newest.size == 0:
            message = f"{what} {newest.path} is empty (0 bytes)"
        else:
            size, limit = _format_sizes(newest.size, min_size)
            message = f"{what} {newest.path} is {size}, below the minimum of {limit}"
        reasons.append(Reason("too_small", "critical", message))

    if rules.max_size is not None and newest.size > rules.max_size:
        size, limit = _format_sizes(newest.size, rules.max_size)
        reasons.append(
            Reason(
                "too_large",
                "warning",
                f"{what} {newest.path} is {size}, above the maximum of {limit}",
            )
        )

    if rules.max_size_drop is not None and len(previous) >= SIZE_DROP_MIN_HISTORY:
        median = statistics.median(p.size for p in previous)
        limit_pct = rules.max_size_drop
        # Exact arithmetic: the boundary (a drop of exactly the limit is accepted) must not
        # depend on float rounding of e.g. 0.9 * median.
        if Fraction(newest.size) * 100 < Fraction(median) * (100 - Fraction(limit_pct)):
            drop = (1 - newest.size / median) * 100
            reasons.append(
                Reason(
                    "size_drop",
                    "warning",
                    f"{what} {newest.path} is {format_size(newest.size)}, "
                    f"{_format_drop(drop, limit_pct)} % smaller than the median of the previous "
                    f"{len(previous)} ({format_size(median)}); "
                    f"the limit is a {limit_pct:g} % drop",
                )
            )
    return reasons


def _retention_reasons(
    spec: JobSpec, times: Times, now: datetime, created_at: datetime
) -> list[Reason]:
    """`retention_gap` when a slot of the retention policy expected to hold a backup holds none
    (service.core.retention_slots says which are expected). A file still being written counts:
    it can only make the current period count, which never makes a gap appear."""
    policy = spec.retention
    if policy is None:
        return []
    slots = retention_slots(
        policy, times, schedule=spec.schedule, grace=spec.grace, created_at=created_at, now=now
    )
    message = gap_message(policy, slots)
    if message is None:
        return []
    return [Reason("retention_gap", "critical" if policy.strict else "warning", message)]


def _listing_reason(warnings: Sequence[str]) -> Reason:
    shown = "; ".join(warnings[:LISTING_WARNINGS_SHOWN])
    hidden = len(warnings) - LISTING_WARNINGS_SHOWN
    more = f" (and {hidden} more)" if hidden > 0 else ""
    # Said up front: the verdict below only covers what could be listed.
    return Reason("source_error", "unknown", f"the listing is incomplete: {shown}{more}")


def _undated_reason(undated: Sequence[tuple[str, int, int]]) -> Reason:
    # Ignored rather than clamped to year 1 or 9999: a made-up date would be judged as the
    # newest (or oldest) backup, and the files that do have a date tell the truth.
    shown = ", ".join(
        f"{path} (@{mtime_us // 1_000_000})"
        for path, _, mtime_us in undated[:LISTING_WARNINGS_SHOWN]
    )
    hidden = len(undated) - LISTING_WARNINGS_SHOWN
    more = f" (and {hidden} more)" if hidden > 0 else ""
    files = "file has" if len(undated) == 1 else "files have"
    return Reason(
        "bad_mtime",
        "warning",
        f"{len(undated)} {files} a modification time outside the years 1 to 9999, in seconds "
        f"since 1970: {shown}{more}; ignored until their times are set right (touch -d)",
    )


def _run_reasons(spec: JobSpec, runs: RunFacts, now: datetime, zone: tzinfo) -> list[Reason]:
    """What the pings say: a failed last run, a run going on too long, a success too quick."""
    reasons = []
    rules = spec.rules
    if runs.last_failed and runs.last_finished_at is not None:
        code = f" (exit status {runs.last_exit_status})" if runs.last_exit_status else ""
        reasons.append(
            Reason(
                "run_failed",
                "critical",
                f"the last run failed{code} at {_format_time(runs.last_finished_at, zone)}; "
                "the job stays critical until a run succeeds",
            )
        )
    if rules.max_duration is not None and runs.running_since is not None:
        running = (now - runs.running_since).total_seconds()
        if running > rules.max_duration:
            reasons.append(
                Reason(
                    "run_overdue",
                    "critical",
                    f"a run started at {_format_time(runs.running_since, zone)} is still going "
                    f"after {format_duration(running)}; it should take at most "
                    f"{format_duration(rules.max_duration)}",
                )
            )
    if (
        rules.min_duration is not None
        and not runs.last_failed
        and runs.last_duration is not None
        and runs.last_duration < rules.min_duration
    ):
        reasons.append(
            Reason(
                "run_too_short",
                "warning",
                f"the last run succeeded in {format_duration(runs.last_duration)}; "
                f"a real one takes at least {format_duration(rules.min_duration)}",
            )
        )
    return reasons


def _missing_message(spec: JobSpec, deadline: datetime, zone: tzinfo) -> str:
    due = f"the first one was due by {_format_time(deadline, zone)}"
    source = spec.source
    if source is None:
        return f"no backup has been reported; {due}"
    return f"{source.missing()}; {due}"


def _worst_severity(reasons: Sequence[Reason]) -> Status:
    return _RANKED_STATUSES[max(_STATUS_RANK[r.severity] for r in reasons)]


def _display_zone(schedule: Schedule) -> tzinfo:
    """Cron times read best in the zone they are written in; `every` has no zone: UTC."""
    return schedule.zone if schedule.cron is not None else UTC


def _format_time(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(zone).strftime(_TIME_FORMAT)


def _format_sizes(size: int, limit: int) -> tuple[str, str]:
    """Both sizes in human units, with exact bytes when the rounding would make them look equal."""
    size_text, limit_text = format_size(size), format_size(limit)
    if size_text == limit_text:
        return f"{size_text} ({size} bytes)", f"{limit_text} ({limit} bytes)"
    return size_text, limit_text


def _format_drop(drop: float, limit: float) -> str:
    """The drop in percent, with as many decimals as needed to read as above the limit, and
    never as 100 unless the file is empty (99.5 % is a truncated dump, 100 % an empty one)."""
    for decimals in range(12):  # 1 byte against a median of a terabyte: 99.9999999999
        text = f"{drop:.{decimals}f}"
        if float(text) > limit and (float(text) < 100 or drop >= 100):
            return text
    return "over 99.999999999999"  # 1 byte of a petabyte: not "100", that is an empty file


def _as_utc(moment: datetime, name: str) -> datetime:
    # A naive datetime here is a bug in the caller (e.g. SQLite handing back naive values),
    # never user input: fail loudly instead of guessing a zone.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)
