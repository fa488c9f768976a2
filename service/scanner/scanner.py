"""BackupScanner: list each job's source, sync the artifact inventory, judge the job.

The scan is a small pipeline. A producer lists the jobs' sources one after the other (the walk
runs in a worker thread) and queues what it saw; the writer judges each job and commits the jobs
that changed together, in one transaction per batch of whatever is ready. When a batch fails,
its jobs are replayed one transaction each, so one broken job never rolls back the others.

A job whose listing is identical to the last one committed (same digest) reads and writes no
artifact row; a job whose state did not change either only has its checked_at moved, together
with the other unchanged jobs, in one statement.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

# A module, not names: service.pings uses this package's rules (the import order is free).
from service import pings
from service.db import lock_for_write
from service.errors import database_unavailable, describe_error
from service.jobspec import DECLARATION_FIELDS, JobSpec, error_details, parse_job
from service.models import Artifact, Job, JobCheck, NotificationEvent, ScanRun
from service.notify.events import (
    News,
    NoticeRule,
    Streak,
    bad_streak,
    event_row,
    located,
    news,
    notice_due,
    problem_codes,
    reason_changes,
    renotify_at,
)
from service.notify.silences import SilenceLookup
from service.scanner.rules import (
    SIZE_DROP_WINDOW,
    ArtifactFact,
    Evaluation,
    RunFacts,
    evaluate,
    next_check,
)
from service.scanner.runs import (
    HEARTBEAT_SECONDS,
    close_abandoned,
    keep_alive,
    run_error,
    run_status,
)
from service.scanner.sources import (
    CHUNK,
    FileEntry,
    Listing,
    Source,
    SourceError,
    list_sources,
    open_source,
)
from service.silences import load_current

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Listings walked ahead of the writer; the writer commits up to this many changed jobs at once.
WALK_AHEAD = 64
# Entries diffed, or rows copied, between two chances for the event loop to run other tasks.
YIELD_EVERY = 5_000
COPY_PIECE = 10_000
# Unchanged jobs only need their checked_at moved; they are written together, this many at once.
TOUCH_BATCH = 500
# The columns of a job's state, as the scanner writes them.
STATE_FIELDS = ("status", "reasons", "next_check_at", "latest_artifact", "artifact_count",
                "listing_digest")  # fmt: skip
_STATE_COLUMNS = (*STATE_FIELDS, "checked_at")

_jobs: Table = Job.__table__  # type: ignore[assignment]
_artifacts: Table = Artifact.__table__  # type: ignore[assignment]
_job_checks: Table = JobCheck.__table__  # type: ignore[assignment]
_events: Table = NotificationEvent.__table__  # type: ignore[assignment]
_UPDATE_JOB = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("job_id"))
    # Parameters may not carry a column's own name in an UPDATE's SET clause: prefix them.
    .values(
        {
            name: bindparam(f"new_{name}")
            for name in (
                *_STATE_COLUMNS,
                "status_changed_at",
                "renotify_at",
                "notified_status",
                "notified_reasons",
                "bad_since",
                "bad_count",
            )
        }
    )
)
_TOUCH_JOB = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("job_id"))
    .where(or_(_jobs.c.checked_at.is_(None), _jobs.c.checked_at < bindparam("checked")))
    .values(checked_at=bindparam("checked"))
)
_UPDATE_CHANGED = (
    update(_artifacts)
    .where(_artifacts.c.id == bindparam("artifact_id"))
    .values(size=bindparam("size"), mtime=bindparam("mtime"), last_seen=bindparam("last_seen"))
)
_MARK_GONE = (
    update(_artifacts)
    .where(_artifacts.c.id == bindparam("artifact_id"))
    .values(gone_since=bindparam("gone_since"), last_seen=bindparam("last_seen"))
)
_COPY_COLUMNS = ("job_id", "path", "size", "mtime", "first_seen", "last_seen")


def utcnow() -> datetime:
    return datetime.now(UTC)


def entry_time(entry: FileEntry) -> datetime:
    return EPOCH + timedelta(microseconds=entry[2])


def to_microseconds(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


# Validated declarations by their JSON text: dumping one costs a fraction of validating it, and
# a JobSpec is frozen data. SCAN_ROOTS are not part of it: the walk checks them, with symlinks
# resolved at that moment.
_specs: dict[str, JobSpec] = {}
_SPECS_KEPT = 50_000


def job_spec(job: JobRow) -> JobSpec:
    """The job's validated declaration (raises pydantic.ValidationError)."""
    key = json.dumps(job.declaration, sort_keys=True)
    spec = _specs.get(key)
    if spec is None:
        if len(_specs) >= _SPECS_KEPT:
            _specs.clear()
        spec = _specs[key] = parse_job(job.declaration)
    return spec


def artifact_summary(
    fact: ArtifactFact | None, *, being_written: bool = False
) -> dict[str, Any] | None:
    if fact is None:
        return None
    summary = {"path": fact.path, "size": fact.size, "mtime": fact.mtime.isoformat()}
    # Only when so: a settled file's summary stays as it always was.
    return {**summary, "being_written": True} if being_written else summary


def last_listed(summary: dict[str, Any] | None) -> ArtifactFact | None:
    """The newest artifact as the job's previous judgement stored it (None: none, or a
    summary this version cannot read)."""
    try:
        if summary is None:
            return None
        mtime = datetime.fromisoformat(summary["mtime"])
        return ArtifactFact(summary["path"], int(summary["size"]), mtime.astimezone(UTC))
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class JobRow:
    """What the scanner reads of a job: a plain snapshot, safe to use after a rollback."""

    id: int
    name: str
    declaration: dict[str, Any]
    created_at: datetime
    status: str
    reasons: list[dict[str, str]]
    next_check_at: datetime | None
    checked_at: datetime | None
    status_changed_at: datetime | None
    latest_artifact: dict[str, Any] | None
    artifact_count: int
    listing_digest: str | None
    renotify_at: datetime | None = None
    # What people were last told, and the run of bad judgements: with renotify_at, what a
    # judgement's notice depends on (the writer weighs it again on the row it claims).
    notified_status: str | None = None
    notified_reasons: list[dict[str, str]] | None = None
    bad_since: datetime | None = None
    bad_count: int = 0


_JOB_COLUMNS = (
    Job.id, Job.name, *(getattr(Job, name) for name in DECLARATION_FIELDS), Job.created_at,
    Job.status, Job.reasons, Job.next_check_at, Job.checked_at, Job.status_changed_at,
    Job.latest_artifact, Job.artifact_count, Job.listing_digest, Job.renotify_at,
    Job.notified_status, Job.notified_reasons, Job.bad_since, Job.bad_count,
)  # fmt: skip


def _job_row(row: Any) -> JobRow:
    return JobRow(
        id=row.id,
        name=row.name,
        declaration={"name": row.name, **{key: getattr(row, key) for key in DECLARATION_FIELDS}},
        created_at=row.created_at,
        status=row.status,
        reasons=row.reasons,
        next_check_at=row.next_check_at,
        checked_at=row.checked_at,
        status_changed_at=row.status_changed_at,
        latest_artifact=row.latest_artifact,
        artifact_count=row.artifact_count,
        listing_digest=row.listing_digest,
        renotify_at=row.renotify_at,
        notified_status=row.notified_status,
        notified_reasons=row.notified_reasons,
        bad_since=row.bad_since,
        bad_count=row.bad_count,
    )


@dataclass(slots=True)
class JobResult:
    """The outcome of one job's scan, as the CLI and the API report it."""

    name: str
    status: str
    reasons: list[dict[str, str]]
    latest_artifact: dict[str, Any] | None
    artifact_count: int
    new: int = 0
    changed: int = 0
    gone: int = 0
    error: str | None = None
    # Not written: another scan held the job or had judged it from a later look.
    skipped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "reasons": self.reasons,
            "latest_artifact": self.latest_artifact,  # {"path", "size", "mtime"} or None
            "artifact_count": self.artifact_count,
        }

    def keep_stored(self, job: JobRow) -> None:
        """Report the job as it stands in the database: this scan wrote nothing for it."""
        self.latest_artifact, self.artifact_count = job.latest_artifact, job.artifact_count
        self.new = self.changed = self.gone = 0


@dataclass(slots=True)
class ScanReport:
    scan_id: int
    status: str
    jobs: list[JobResult] = field(default_factory=list)
    error: str | None = None  # why the scan failed as a whole


@dataclass(slots=True)
class Observation:
    """What one listing of a job's source showed (or why it could not be listed)."""

    job: JobRow
    spec: JobSpec | None
    listing: Listing | None = None
    source_error: str | None = None
    digest: str | None = None

    @property
    def ordered(self) -> list[FileEntry]:
        """The files listed, oldest to newest by (mtime, path) (the walker sorts them)."""
        return self.listing.entries if self.listing is not None else []


@dataclass(slots=True)
class Change:
    """A job whose new state must be written (and maybe its artifacts synced)."""

    observation: Observation
    state: dict[str, Any]
    result: JobResult
    sync: bool
    checked_at: datetime  # when it was judged (history, notices)
    # When the facts it was judged on were read (<= checked_at): what jobs.checked_at records, so
    # that a ping stored after that read is still newer than the job's last look (the deadline
    # tick judges the jobs whose pings are newer than their checked_at).
    seen_at: datetime
    # The end of the silence covering the job when it was judged (None: not silenced): its
    # notices wait until then (see service.notify.events.hold_of).
    silenced_until: datetime | None = None


class BackupScanner:
    """Scans every job (or the named ones) and records the run in scan_runs."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        clock: Clock = utcnow,
        scan_roots: Sequence[Path] = (),
        source_timeout: float = 300.0,
        trigger: str = "schedule",
        stop: asyncio.Event | None = None,
        on_start: Callable[[int], None] | None = None,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.session = session
        self.clock = clock
        self.scan_roots = tuple(scan_roots)
        self.source_timeout = source_timeout
        self.trigger = trigger
        self.stop = stop or asyncio.Event()
        self.on_start = on_start  # told the scan id once the run is recorded
        self.heartbeat_seconds = heartbeat_seconds
        self._touched: list[dict[str, Any]] = []
        self._pinged: set[int] = set()
        self._pinged_at: datetime | None = None  # when _pinged was read

    async def scan_all_jobs(self, names: Sequence[str] | None = None) -> ScanReport:
        """Scan every job (or those named) and record the run."""
        session = self.session
        started = self.clock()
        # A scan whose process died cannot close its own row: each new scan closes those.
        abandoned = await close_abandoned(session, started)
        run = ScanRun(
            trigger=self.trigger, status="running", started_at=started, jobs_scanned=0,
            artifacts_new=0, artifacts_changed=0, artifacts_gone=0, errors=0, error_details=[],
        )  # fmt: skip
        session.add(run)
        await session.commit()
        run_id = run.id  # a rollback below would expire `run`: never touch it again
        report = ScanReport(scan_id=run_id, status="finished")
        for scan_id in abandoned:
            logger.warning("abandoned scan closed", extra={"scan_id": scan_id, "by": run_id})
        logger.info("scan started", extra={"scan_id": run_id, "trigger": self.trigger})
        if self.on_start is not None:
            self.on_start(run_id)

        heartbeat = self._keep_alive(run_id)
        try:
            query = select(*_JOB_COLUMNS).order_by(Job.name)
            if names is not None:
                query = query.where(Job.name.in_(names))
            jobs = [_job_row(row) for row in (await session.execute(query)).all()]
            # Most jobs never ping: read runs only for those that did (one query per scan).
            self._pinged_at = self.clock()
            self._pinged = await pings.jobs_with_pings(session, [job.id for job in jobs])
            await session.commit()  # end the read transaction
            report.status = await self._pipeline(jobs, report.jobs)
            await self._flush_touched()
        except BaseException as exc:
            # The database went away, a bug, or the task was cancelled: the run must not stay
            # "running" forever, and must say why. Best effort, the original error is what
            # matters.
            bind = self.session.bind
            url = bind.url if isinstance(bind, AsyncEngine) else None
            report.status, report.error = run_status(exc), run_error(exc, url)
            await _stop(heartbeat)
            with suppress(Exception):
                await self._finish_run(run_id, report)
            raise
        if report.status == "interrupted":
            logger.warning("scan interrupted", extra={"scan_id": run_id})
        # Before the finish: once the run reads finished, its task ends with no more waiting.
        await _stop(heartbeat)
        await self._finish_run(run_id, report)
        return report

    def _keep_alive(self, run_id: int) -> asyncio.Task[None] | None:
        engine = self.session.bind
        if not isinstance(engine, AsyncEngine):  # a session bound to one connection: no beat
            return None
        return asyncio.create_task(keep_alive(engine, run_id, self.clock, self.heartbeat_seconds))

    async def _finish_run(self, run_id: int, report: ScanReport) -> None:
        session = self.session
        with suppress(Exception):
            await session.rollback()
        errors = [{"job": job.name, "message": job.error} for job in report.jobs if job.error]
        totals = {
            "jobs_scanned": len(report.jobs),
            "artifacts_new": sum(job.new for job in report.jobs),
            "artifacts_changed": sum(job.changed for job in report.jobs),
            "artifacts_gone": sum(job.gone for job in report.jobs),
            "errors": len(errors),
        }
        finished = {
            "status": report.status, "finished_at": self.clock(), "error": report.error, **totals
        }  # fmt: skip
        await session.execute(
            update(ScanRun)
            .where(ScanRun.id == run_id)
            .values(error_details=errors[:100], **finished)
        )
        await session.commit()
        failure = {"error": report.error} if report.error else {}
        logger.info(
            "scan finished",
            extra={"scan_id": run_id, "status": report.status, **totals, **failure},
        )

    async def _pipeline(self, jobs: Sequence[JobRow], results: list[JobResult]) -> str:
        """List sources ahead while writing what is ready: "finished" or "interrupted"."""
        ready: asyncio.Queue[Observation | None] = asyncio.Queue(maxsize=WALK_AHEAD)
        failure: list[BaseException] = []

        async def produce() -> None:
            try:
                for start in range(0, len(jobs), CHUNK):
                    if self.stop.is_set():
                        break
                    async with aclosing(self._observe(jobs[start : start + CHUNK])) as seen:
                        async for observation in seen:
                            await ready.put(observation)
                            if self.stop.is_set():
                                break
            except Exception as exc:  # a bug: the writer finishes what it has, then re-raises
                failure.append(exc)
            # Not in a `finally`: a cancelled producer must not wait on a full queue.
            await ready.put(None)

        producer = asyncio.create_task(produce())
        try:
            while (first := await ready.get()) is not None:
                batch = [first]
                while len(batch) < WALK_AHEAD and not ready.empty():
                    item = ready.get_nowait()
                    if item is None:
                        ready.put_nowait(None)  # seen again by the outer loop
                        break
                    batch.append(item)
                results.extend(await self._settle(batch))
                if self.stop.is_set() and len(results) < len(jobs):
                    return "interrupted"
        finally:
            if not producer.done():
                producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
        if failure:
            raise failure[0]
        return "interrupted" if len(results) < len(jobs) else "finished"

    async def _observe(self, jobs: Sequence[JobRow]) -> AsyncGenerator[Observation, None]:
        """List the jobs' sources, in order; never raises for a source or declaration problem."""
        specs: list[JobSpec | None] = []
        errors: list[str | None] = []
        sources: list[Source] = []
        for job in jobs:
            spec, error = self._prepare(job, sources)
            specs.append(spec)
            errors.append(error)
        broken: SourceError | None = None  # the walker itself failed: a bug, not a source problem
        async with aclosing(list_sources(sources, self.source_timeout)) as listings:
            for job, spec, error in zip(jobs, specs, errors, strict=True):
                if spec is None or spec.source is None:  # no listing for this one
                    yield Observation(job, spec, source_error=error)
                    continue
                result: Listing | SourceError
                if broken is not None:
                    result = broken
                else:
                    try:
                        result = await anext(listings)
                    except Exception as exc:
                        logger.error("job listing failed", extra={"job": job.name}, exc_info=exc)
                        broken = SourceError(f"internal error while listing: {describe_error(exc)}")
                        result = broken
                if isinstance(result, SourceError):
                    yield Observation(job, spec, source_error=str(result))
                else:
                    yield self._observed(job, spec, result)

    def _prepare(self, job: JobRow, sources: list[Source]) -> tuple[JobSpec | None, str | None]:
        """The job's declaration, its source appended to `sources` (if it has one); or None and
        why not. Whatever fails here fails for this job only."""
        try:
            spec = job_spec(job)
            if spec.source is not None:
                sources.append(open_source(spec.source, scan_roots=self.scan_roots))
        except ValidationError as exc:
            # A stored declaration that no longer validates (written by hand, or by an older
            # version): report it on the job instead of scanning.
            details = error_details(exc)
            return None, "; ".join(f"{d['field']}: {d['message']}" for d in details)
        except Exception as exc:  # a bug: this job's scan fails, not the whole scan
            logger.error("job declaration failed", extra={"job": job.name}, exc_info=exc)
            return None, f"internal error while reading the declaration: {describe_error(exc)}"
        return spec, None

    @staticmethod
    def _observed(job: JobRow, spec: JobSpec, listing: Listing) -> Observation:
        for note in listing.skipped:
            logger.info("entry skipped", extra={"job": job.name, "detail": note})
        digest = None
        if listing.fingerprint is not None:
            # The same files seen through another source declaration are another listing.
            source = json.dumps(spec.declaration()["source"], sort_keys=True)
            digest = hashlib.blake2b(f"{source}\0{listing.fingerprint}".encode(), digest_size=20)
        hexdigest = digest.hexdigest() if digest else None
        return Observation(job, spec, listing, digest=hexdigest)

    async def _settle(self, batch: Sequence[Observation]) -> list[JobResult]:
        """Judge each observed job; write those that changed, touch the others."""
        results: list[JobResult] = []
        changes: list[Change] = []
        pinged = [o.job.id for o in batch if o.job.id in self._pinged]
        facts_read_at = self.clock()
        facts = await pings.run_facts_of(self.session, pinged) if pinged else {}
        silences = SilenceLookup(await load_current(self.session, facts_read_at), facts_read_at)
        await self.session.commit()  # end the read transaction before any write
        for observation in batch:
            job = observation.job
            try:
                # A job with no ping when the scan began was seen pingless then.
                seen_at = facts_read_at if job.id in self._pinged else self._pinged_at
                change = self._judge(observation, facts.get(job.id), seen_at)
            except Exception as exc:  # a bug, or data no rule foresaw: this job only
                change = self._unjudged(observation, exc)
            change.silenced_until = silences.silenced_until(
                job.name, job.declaration.get("tags") or ()
            )
            results.append(change.result)
            reminder = job.renotify_at
            if (
                change.sync
                or any(getattr(job, key) != value for key, value in change.state.items())
                # A reminder is due: it is written with this judgement, so it tells the job as
                # it is now, not as it was at the first alert.
                or (reminder is not None and reminder <= change.checked_at)
                # A notice owed (one held until now), or the run of bad judgements counted on.
                or self._aftermath_changes(change, job)
            ):
                changes.append(change)
            else:
                self._touched.append({"job_id": observation.job.id, "checked": change.seen_at})
        if len(self._touched) >= TOUCH_BATCH:
            await self._flush_touched()
        if changes:
            await self._write_isolated(changes)
        return results

    def _judge(
        self,
        observation: Observation,
        runs: RunFacts | None = None,
        seen_at: datetime | None = None,
    ) -> Change:
        job, spec, listing = observation.job, observation.spec, observation.listing
        now = self.clock()
        newest = [
            ArtifactFact(entry[0], entry[1], entry_time(entry))
            for entry in observation.ordered[-(SIZE_DROP_WINDOW + 2) :]
        ]
        if spec is None:
            evaluation = Evaluation("unknown", (), None, None)
            message = observation.source_error or "the stored declaration is invalid"
            reasons = [{"code": "source_error", "severity": "unknown", "message": message}]
        else:
            evaluation = evaluate(
                spec, newest, now=now, created_at=job.created_at,
                source_error=observation.source_error,
                listing_warnings=listing.warnings if listing else (),
                count=len(observation.ordered), runs=runs,
                undated=listing.undated if listing else (),
                last_listed=last_listed(job.latest_artifact),
            )  # fmt: skip
            reasons = [reason.as_dict() for reason in evaluation.reasons]
        if listing is not None or (spec is not None and spec.source is None):
            writing = evaluation.writing is not None and evaluation.writing == evaluation.newest
            latest = artifact_summary(evaluation.newest, being_written=writing)
            count = len(observation.ordered)
        else:  # the source could not be read: keep what we knew
            latest, count = job.latest_artifact, job.artifact_count
        state = {
            "status": evaluation.status,
            "reasons": reasons,
            # The next moment the verdict can change (a deadline, an open run's max_duration).
            "next_check_at": next_check(spec, evaluation, runs, now) if spec else None,
            "latest_artifact": latest,
            "artifact_count": count,
            "listing_digest": observation.digest,
        }
        sync = listing is not None and (
            observation.digest is None or observation.digest != job.listing_digest
        )
        if evaluation.status != job.status or observation.source_error:
            logger.log(
                logging.WARNING if evaluation.status in ("critical", "unknown") else logging.INFO,
                "job evaluated",
                extra={
                    "job": job.name, "status": evaluation.status, "previous": job.status,
                    "reason": ",".join(r["code"] for r in reasons) or "-",
                },
            )  # fmt: skip
        result = JobResult(
            job.name, evaluation.status, reasons, latest, count, error=observation.source_error
        )
        return Change(observation, state, result, sync, now, min(now, seen_at or now))

    def _unjudged(self, observation: Observation, exc: Exception) -> Change:
        """The job could not be judged: it is unknown, with the error as its reason, until a
        scan judges it (its files and inventory are left as they were)."""
        job = observation.job
        logger.error("job judging failed", extra={"job": job.name}, exc_info=exc)
        message = f"internal error while judging the job: {describe_error(exc)}"
        reasons = [{"code": "scan_error", "severity": "unknown", "message": message}]
        state = {
            "status": "unknown", "reasons": reasons, "next_check_at": None,
            "latest_artifact": job.latest_artifact, "artifact_count": job.artifact_count,
            "listing_digest": None,  # the next scan syncs the files again
        }  # fmt: skip
        result = JobResult(
            job.name, "unknown", reasons, job.latest_artifact, job.artifact_count, error=message
        )
        now = self.clock()
        return Change(observation, state, result, sync=False, checked_at=now, seen_at=now)

    async def _write_isolated(self, changes: Sequence[Change]) -> None:
        """Write the changes in one transaction; if that fails, one transaction per job."""
        try:
            await self._write(changes)
            return
        except Exception as exc:
            await self._rollback()
            if database_unavailable(exc):
                raise  # every job would fail the same way: end the scan, marked failed
            if len(changes) == 1:
                self._failed(changes[0], exc)
                return
        for change in changes:
            try:
                await self._write([change])
            except Exception as exc:
                await self._rollback()
                if database_unavailable(exc):
                    raise
                self._failed(change, exc)

    async def _rollback(self) -> None:
        # On a dead connection the rollback fails too; the error that matters is the first.
        with suppress(Exception):
            await self.session.rollback()

    def _failed(self, change: Change, exc: Exception) -> None:
        job = change.observation.job
        logger.error("job scan failed", extra={"job": job.name}, exc_info=exc)
        message = f"internal error while scanning: {describe_error(exc)}"
        result = change.result
        result.keep_stored(job)
        result.status = "unknown"
        result.reasons = [{"code": "scan_error", "severity": "unknown", "message": message}]
        result.error = message

    async def _write(self, changes: Sequence[Change]) -> None:
        """One transaction: claim the jobs, sync their artifacts, record their state."""
        session = self.session
        current = await self._claim(changes)
        mine = [change for change in changes if change.observation.job.id in current]
        await self._sync_artifacts([change for change in mine if change.sync])
        # The change is from the state stored now (another scan may have written since this
        # one read the job), so a change is recorded, and notified, once.
        decided = [
            (change, stored, self._news(change, stored))
            for change in mine
            for stored in [current[change.observation.job.id]]
        ]
        checks = [
            {
                "job_id": change.observation.job.id, "checked_at": change.checked_at,
                "status": change.state["status"], "previous_status": stored.status,
                "reasons": change.state["reasons"],
                "latest_artifact": change.state["latest_artifact"],
            }
            for change, stored, told in decided
            if told.recorded
        ]  # fmt: skip
        if checks:
            await session.execute(_job_checks.insert(), checks)
        # The outbox: the notices commit with the change they tell of, or not at all.
        notices = [
            self._event(change, stored, told.kind)
            for change, stored, told in decided
            if told.kind is not None
        ]
        if notices:
            await session.execute(_events.insert(), notices)
        if mine:
            values = [self._job_values(change, stored, told) for change, stored, told in decided]
            await session.execute(_UPDATE_JOB, values)
        await session.commit()
        for change in changes:
            if change.observation.job.id not in current:
                job = change.observation.job
                logger.info("job skipped: another scan wrote it", extra={"job": job.name})
                change.result.keep_stored(job)
                change.result.status, change.result.reasons = job.status, job.reasons
                change.result.skipped = True

    @staticmethod
    def _streak(change: Change, stored: Any) -> Streak:
        """The job's run of bad judgements with this one (pure rule: bad_streak)."""
        before = Streak(stored.bad_since, stored.bad_count or 0)
        return bad_streak(before, change.state["status"], change.checked_at, _rule(change).after)

    @classmethod
    def _news(cls, change: Change, stored: Any) -> News:
        """What this judgement means against the state stored now (the rule is pure: see
        service.notify.events.news)."""
        due = stored.renotify_at is not None and stored.renotify_at <= change.checked_at
        return news(
            stored=stored.status, stored_reasons=stored.reasons or [],
            notified=stored.notified_status, notified_reasons=stored.notified_reasons,
            reminder_due=due, status=change.state["status"], reasons=change.state["reasons"],
            streak=cls._streak(change, stored), rule=_rule(change), now=change.checked_at,
            silenced_until=change.silenced_until,
        )  # fmt: skip

    @classmethod
    def _aftermath_changes(cls, change: Change, job: JobRow) -> bool:
        """Whether the judgement writes something beyond its state, judged from the job as
        read: a notice, a counted bad judgement, another moment for the next notice. (Else
        its checked_at is only touched, in a batch: nothing here is lost by that.)"""
        told = cls._news(change, job)
        counted = cls._streak(change, job) != Streak(job.bad_since, job.bad_count)
        return (
            told.kind is not None or counted or cls._notice_at(change, job, told) != job.renotify_at
        )

    @staticmethod
    def _event(change: Change, stored: Any, kind: str) -> dict[str, Any]:
        """The notice of a judgement, told against what people were last told."""
        state = change.state
        job, spec = change.observation.job, change.observation.spec
        changes = None
        if kind == "changed":
            # The problems told last (the rule is news's: problem_codes at each status).
            told = problem_codes(stored.notified_status, stored.notified_reasons or [])
            changes = reason_changes(told, problem_codes(state["status"], state["reasons"]))
        return event_row(
            job_id=job.id, job_name=job.name, kind=kind, status=state["status"],
            previous_status=stored.notified_status, reasons=state["reasons"],
            latest_artifact=located(state["latest_artifact"], job.declaration["source"]),
            channels=spec.notify.channels if spec is not None else None, now=change.checked_at,
            changes=changes,
        )  # fmt: skip

    @staticmethod
    def _notice_at(change: Change, stored: Any, told_now: News) -> datetime | None:
        """When the next notice is due (jobs.renotify_at): a reminder, or a held notice's
        moment (pure rules: renotify_at, notice_due)."""
        state, spec = change.state, change.observation.spec
        every = spec.notify.renotify_every if spec is not None else None
        reminder = renotify_at(
            state["status"], stored.status, stored.renotify_at, every, change.checked_at,
            told_now=told_now.kind is not None,
        )  # fmt: skip
        return notice_due(reminder, told_now.held, stored.notified_status, state["status"])

    @classmethod
    def _job_values(cls, change: Change, stored: Any, told_now: News) -> dict[str, Any]:
        state = change.state
        changed_at = (
            change.checked_at if state["status"] != stored.status else stored.status_changed_at
        )
        reminder = cls._notice_at(change, stored, told_now)
        streak = cls._streak(change, stored)
        # What people were last told: changed only by a notice, written with it.
        if told_now.kind is None:
            told, told_reasons = stored.notified_status, stored.notified_reasons
        else:
            told, told_reasons = state["status"], state["reasons"]
        values = {f"new_{name}": value for name, value in state.items()}
        values.update(job_id=change.observation.job.id, new_checked_at=change.seen_at,
                      new_status_changed_at=changed_at, new_renotify_at=reminder,
                      new_notified_status=told, new_notified_reasons=told_reasons,
                      new_bad_since=streak.since, new_bad_count=streak.count)  # fmt: skip
        return values

    async def _claim(self, changes: Sequence[Change]) -> dict[int, Any]:
        """Lock the jobs' rows for this transaction; return their stored state by job id.

        Left out: a job another scan holds right now (SKIP LOCKED), one already judged from a
        later look at its files than ours (its checked_at is after our observation), one
        deleted meanwhile, one whose declaration changed after our look.
        """
        session = self.session
        await lock_for_write(session)
        observed = {change.observation.job.id: change.seen_at for change in changes}
        query = select(
            Job.id, Job.status, Job.reasons, Job.status_changed_at, Job.checked_at,
            Job.updated_at, Job.renotify_at, Job.notified_status, Job.notified_reasons,
            Job.bad_since, Job.bad_count,
        ).where(Job.id.in_(list(observed)))  # fmt: skip
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = await session.execute(query)
        return {
            row.id: row
            for row in rows
            # A declaration changed since we looked (an API PATCH) makes our verdict stale too.
            if (row.checked_at is None or row.checked_at <= observed[row.id])
            and row.updated_at <= observed[row.id]
        }

    async def _flush_touched(self) -> None:
        """Move checked_at on jobs whose state did not change, together; each gets the time it
        was looked at, and never moves back (another scan may have looked later)."""
        if not self._touched:
            return
        touched, self._touched = self._touched, []
        await self.session.execute(_TOUCH_JOB, touched)
        await self.session.commit()

    async def _sync_artifacts(self, changes: Sequence[Change]) -> None:
        """Insert new artifacts, update changed ones, mark vanished ones; count them."""
        if not changes:
            return
        session = self.session
        known: dict[int, dict[str, Any]] = {change.observation.job.id: {} for change in changes}
        rows = await session.execute(
            select(
                _artifacts.c.id, _artifacts.c.job_id, _artifacts.c.path, _artifacts.c.size,
                _artifacts.c.mtime,
            ).where(_artifacts.c.job_id.in_(list(known)), _artifacts.c.gone_since.is_(None))
        )  # fmt: skip
        for row in rows:
            known[row.job_id][row.path] = row

        new: list[tuple[Any, ...]] = []
        changed: list[dict[str, Any]] = []
        gone: list[dict[str, Any]] = []
        for change in changes:
            observation, now = change.observation, change.checked_at
            job = observation.job
            present = known[job.id]
            counts = [0, 0, 0]
            for index, entry in enumerate(observation.ordered):
                if index and not index % YIELD_EVERY:
                    await asyncio.sleep(0)  # a job of 200 000 files must not stall the loop
                path, size, mtime_us = entry
                row = present.pop(path, None)
                if row is None:
                    new.append((job.id, path, size, entry_time(entry), now, now))
                    counts[0] += 1
                elif row.size != size or to_microseconds(row.mtime) != mtime_us:
                    changed.append({"artifact_id": row.id, "size": size,
                                    "mtime": entry_time(entry), "last_seen": now})  # fmt: skip
                    counts[1] += 1
            # Files that no date can hold are still there: not gone, left as they were.
            for undated in observation.listing.undated if observation.listing else ():
                present.pop(undated[0], None)
            # An incomplete listing may hide files that still exist: mark nothing gone from it.
            if observation.listing is not None and not observation.listing.warnings:
                # Present artifacts are confirmed by every scan without a write; the last scan
                # that saw these is the job's previous check.
                last_seen = job.checked_at or now
                gone += [{"artifact_id": row.id, "gone_since": now, "last_seen": last_seen}
                         for row in present.values()]  # fmt: skip
                counts[2] = len(present)
            change.result.new, change.result.changed, change.result.gone = counts

        if new:
            await self._insert_artifacts(new)
        if changed:
            await session.execute(_UPDATE_CHANGED, changed)
        if gone:
            await session.execute(_MARK_GONE, gone)

    async def _insert_artifacts(self, rows: list[tuple[Any, ...]]) -> None:
        """COPY on PostgreSQL (the jobs are claimed: no concurrent writer); elsewhere an INSERT
        that skips a path already present."""
        session = self.session
        if session.get_bind().dialect.name == "postgresql":
            connection = await session.connection()
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            # In pieces: encoding 100 000 records at once would hold the event loop.
            for start in range(0, len(rows), COPY_PIECE):
                piece = rows[start : start + COPY_PIECE]
                await driver.copy_records_to_table(
                    "artifacts", records=piece, columns=_COPY_COLUMNS
                )
            return
        statement = sqlite.insert(Artifact).on_conflict_do_nothing(
            index_elements=["job_id", "path"], index_where=Artifact.gone_since.is_(None)
        )
        await session.execute(
            statement, [dict(zip(_COPY_COLUMNS, row, strict=True)) for row in rows]
        )


def _rule(change: Change) -> NoticeRule:
    """The job's notify.after and notify.for (the defaults for a declaration that does not
    validate: its `unknown` is told at once)."""
    spec = change.observation.spec
    if spec is None:
        return NoticeRule()
    return NoticeRule(spec.notify.after, spec.notify.for_)


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def run_scanner(session: AsyncSession, **options: Any) -> ScanReport:
    """Entry point for the scheduler and the CLI: scan every job with this session."""
    from service.settings import get_settings

    settings = get_settings()
    options.setdefault("scan_roots", settings.scan_roots)
    options.setdefault("source_timeout", settings.source_timeout_seconds)
    names = options.pop("names", None)
    return await BackupScanner(session, **options).scan_all_jobs(names)
