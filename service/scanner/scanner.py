"""BackupScanner and run_scanner: the façade of a scan. List each job's source, judge the job,
write what changed; record the run in scan_runs.

The parts, one home each: the pipeline lists sources ahead while the batches ready are settled
(service.scanner.pipeline); each job is judged by a pure function of what was listed, its pings'
facts, its silence and `now` (service.scanner.judge); the inventory diff is pure too
(service.scanner.inventory); the SQL lives in service.scanner.writer. This module reads the
clock and the facts a batch is judged on (the jobs' pings, the silences in force) and ties the
parts together, one batch at a time:

- the jobs whose state and aftermath change are written together, in one transaction per
  batch; when it fails, its jobs are replayed one transaction each, so one broken job never
  rolls back the others;
- a job whose listing is identical to the last one committed (same digest) reads and writes no
  artifact row; a job whose judgement changes nothing only has its checked_at moved, together
  with the other unchanged jobs, in one statement.

May import everything the scan needs (SQLAlchemy, the models, service.store.pings,
service.store.silences, service.store.verifications, service.settings); the modules it drives
import nothing from here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Coroutine, Sequence
from contextlib import suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.core.clock import Clock, utcnow
from service.core.rules import RunFacts, VerificationFacts
from service.core.scan_options import ScanOptions
from service.db.engine import is_postgresql
from service.db.errors import describe_error
from service.notify.silences import Silence, SilenceLookup
from service.scanner.judge import Judgement, judge, must_write, unjudged
from service.scanner.pipeline import Observer, Outcome, run_pipeline
from service.scanner.sources.base import KnownSizes, nothing_known
from service.scanner.sources.lister import list_any
from service.scanner.sources.walk_process import MIN_SOURCES, WALKER_PROCESSES, WalkerPool
from service.scanner.state import JobResult, JobRow, Observation, ScanReport
from service.scanner.writer import (
    TOUCH_BATCH,
    Change,
    ScanWriter,
    count_jobs,
    job_pieces,
    present_sizes,
)

# A module, not names: service.store.pings uses this package's rules (the import order is free).
from service.store import pings, verifications
from service.store.scans import (
    HEARTBEAT_SECONDS,
    keep_alive,
    record_finish,
    record_start,
    run_error,
    run_status,
)
from service.store.silences import load_current

__all__ = ["BackupScanner", "JobResult", "ScanReport", "run_scanner"]

logger = logging.getLogger(__name__)

# How long a scan uses the silences it read before reading them again: a silence set during a
# scan applies to the jobs judged from then on, within this.
SILENCES_FRESH = timedelta(seconds=1)
# Jobs judged between two chances for the event loop to run other tasks: a batch of 64 jobs of
# 500 files each took 40-60 ms to judge (the 1M-file first scan's longest stalls).
JUDGED_AT_ONCE = 8


class BackupScanner:
    """Scans every job (or the named ones) and records the run in scan_runs.

    `stop` set: the scan ends after the batch being written ("interrupted"); `on_start` is told
    the scan id once the run is recorded."""

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
        replica: str | None = None,
    ) -> None:
        self.session = session
        self.replica = replica  # named on the scan's row (a PostgreSQL fleet)
        self.clock = clock
        self.scan_roots = tuple(scan_roots)
        self.source_timeout = source_timeout
        self.trigger = trigger
        self.stop = stop or asyncio.Event()
        self.on_start = on_start  # told the scan id once the run is recorded
        self.heartbeat_seconds = heartbeat_seconds
        self._writer = ScanWriter(session)
        # The writer's lanes: this session's, and for a big scan on PostgreSQL one more on a
        # session of its own (see _lanes_for).
        self._lanes: list[ScanWriter] = [self._writer]
        self._reading: asyncio.Task[None] | None = None  # see _read_jobs
        self._pinged: set[int] = set()
        self._pinged_at: datetime | None = None  # when _pinged was read
        self._silences: tuple[datetime, list[Silence]] | None = None  # when read, and what

    async def scan_all_jobs(self, names: Sequence[str] | None = None) -> ScanReport:
        """Scan every job (or those named) and record the run."""
        session = self.session
        run_id = await record_start(session, self.trigger, self.clock(), self.replica)
        report = ScanReport(scan_id=run_id, status="finished")
        logger.info(
            "scan started",
            extra={"scan_id": run_id, "trigger": self.trigger, "replica": self.replica or "-"},
        )
        if self.on_start is not None:
            self.on_start(run_id)

        heartbeat = self._keep_alive(run_id)
        walkers: WalkerPool | None = None
        closing: asyncio.Task[None] | None = None
        pieces: asyncio.Queue[list[JobRow] | None] = asyncio.Queue()
        try:
            # Started first: their interpreters start while the jobs are read.
            walkers = await self._walkers(names)
            self._lanes = self._lanes_for(big=walkers is not None)
            # The first piece of jobs is listed while the others are read (_settle waits).
            self._reading = asyncio.create_task(self._read_jobs(names, pieces))
            report.status = await self._pipeline(_taken(pieces), report.jobs, walkers)
            await self._reading  # a failure to read the jobs is the scan's
            if walkers is not None:  # done with: they end while the last jobs are written
                closing = asyncio.create_task(walkers.aclose())
            await _all(*(writer.flush_touched() for writer in self._lanes))
        except BaseException as exc:
            # The database went away, a bug, or the task was cancelled: the run must not stay
            # "running" forever, and must say why. Best effort, the original error is what
            # matters. (The jobs' reader first, so that the session is free: cancelled with the
            # scan, else let finish, never cut short in a statement.)
            if isinstance(exc, asyncio.CancelledError):
                await _stop(self._reading)
            elif self._reading is not None:
                await asyncio.gather(self._reading, return_exceptions=True)
            bind = self.session.bind
            url = bind.url if isinstance(bind, AsyncEngine) else None
            report.status, report.error = run_status(exc), run_error(exc, url)
            await _stop(heartbeat)
            with suppress(Exception):
                await record_finish(session, run_id, report, self.clock())
            raise
        finally:
            self._reading = None
            if walkers is not None:
                await (closing or walkers.aclose())
            for writer in self._lanes[1:]:
                with suppress(Exception):  # a database gone: the scan's own error is what counts
                    await writer.session.close()
            self._lanes = [self._writer]
        if report.status == "interrupted":
            logger.warning("scan interrupted", extra={"scan_id": run_id})
        # Before the finish: once the run reads finished, its task ends with no more waiting.
        await _stop(heartbeat)
        await record_finish(session, run_id, report, self.clock())
        return report

    async def _read_jobs(
        self, names: Sequence[str] | None, pieces: asyncio.Queue[list[JobRow] | None]
    ) -> None:
        """Read the jobs (or those named) onto `pieces`, a piece at a time, then None; note
        which have pinged (most never do: run facts are read only for those that did); end
        the read transaction."""
        session = self.session
        self._pinged, self._pinged_at = set(), self.clock()
        try:
            async for piece in job_pieces(session, names):
                # By piece: all of a big fleet's ids would be more parameters than a statement
                # may carry (asyncpg: 32 767).
                self._pinged |= await pings.jobs_with_pings(session, [j.id for j in piece])
                await pieces.put(piece)
            await session.commit()
        finally:
            pieces.put_nowait(None)

    async def _current_silences(self, session: AsyncSession, now: datetime) -> list[Silence]:
        """The silences that may apply now, read again once SILENCES_FRESH older than `now`:
        read for every batch, with their transaction, they took 9 % of this process's samples
        in a rescan of 2 000 jobs (py-spy). (Those read earlier and over by now are judged over
        by the lookup; a clock set back reads them again.)"""
        if self._silences is None or not timedelta(0) <= now - self._silences[0] <= SILENCES_FRESH:
            self._silences = (now, await load_current(session, now))
        return self._silences[1]

    def _keep_alive(self, run_id: int) -> asyncio.Task[None] | None:
        engine = self.session.bind
        if not isinstance(engine, AsyncEngine):  # a session bound to one connection: no beat
            return None
        return asyncio.create_task(keep_alive(engine, run_id, self.clock, self.heartbeat_seconds))

    async def _walkers(self, names: Sequence[str] | None) -> WalkerPool | None:
        """Walker processes for a scan of MIN_SOURCES jobs or more (None: walks in a thread)."""
        count = len(names) if names is not None else await count_jobs(self.session)
        if count < MIN_SOURCES:
            return None
        pool = WalkerPool(WALKER_PROCESSES)
        await pool.start()
        return pool

    def _lanes_for(self, big: bool) -> list[ScanWriter]:
        """The writer's lanes for a scan: two for a big scan on PostgreSQL (one batch is
        written while the next is judged and written beside it, on its own connection:
        PostgreSQL's inserts of a first scan, most of its time, then run on two cores), else
        one. The batches hold other jobs, claimed by each (SKIP LOCKED); SQLite has one writer."""
        engine = self.session.bind
        if not big or not isinstance(engine, AsyncEngine) or not is_postgresql(self.session):
            return [self._writer]
        return [self._writer, ScanWriter(AsyncSession(engine, expire_on_commit=False))]

    async def _pipeline(
        self,
        jobs: AsyncIterable[Sequence[JobRow]],
        results: list[JobResult],
        walkers: WalkerPool | None = None,
    ) -> Outcome:
        """List sources ahead while writing what is ready: "finished" or "interrupted"."""
        observer = Observer(
            scan_roots=self.scan_roots, source_timeout=self.source_timeout,
            known_of=self._known_of, lister=functools.partial(list_any, pool=walkers),
        )  # fmt: skip
        return await run_pipeline(
            jobs, observer.observe, self._settle, results, self.stop, lanes=len(self._lanes)
        )

    def _known_of(self, job: JobRow) -> KnownSizes:
        """How a source reads the sizes stored for this job's present artifacts (nothing when
        the scan's session is bound to one connection: the sizes are then computed again)."""
        engine = self.session.bind
        if not isinstance(engine, AsyncEngine):
            return nothing_known
        return functools.partial(present_sizes, engine, job.id)

    async def _settle(self, batch: Sequence[Observation], lane: int = 0) -> list[JobResult]:
        """Judge each observed job; write those that changed, touch the others (on the
        writer's lane `lane`)."""
        if self._reading is not None:
            # The jobs are read (on lane 0's session), their pings known. Shielded: a batch
            # cancelled never cancels the reading the other lanes wait for.
            await asyncio.shield(self._reading)
        writer = self._lanes[lane]
        session = writer.session
        results: list[JobResult] = []
        changes: list[Change] = []
        pinged = [o.job.id for o in batch if o.job.id in self._pinged]
        facts_read_at = self.clock()
        facts = await pings.run_facts_of(session, pinged) if pinged else {}
        silences = SilenceLookup(
            await self._current_silences(session, facts_read_at), facts_read_at
        )
        verified = [o.job.id for o in batch if _declared(o, "verify")]
        checks = await verifications.facts_of(session, verified) if verified else {}
        await session.commit()  # end the read transaction before any write
        for index, observation in enumerate(batch):
            if index and not index % JUDGED_AT_ONCE:
                await asyncio.sleep(0)
            job = observation.job
            silenced_until = silences.silenced_until(job.name, _declared(observation, "tags") or ())
            try:
                # A job with no ping when the scan began was seen pingless then.
                seen_at = facts_read_at if job.id in self._pinged else self._pinged_at
                judgement = self._judge(
                    observation, facts.get(job.id), seen_at, silenced_until, checks.get(job.id)
                )
            except Exception as exc:  # a bug, or data no rule foresaw: this job only
                judgement = self._unjudged(observation, exc, silenced_until)
            result = _result(judgement)
            results.append(result)
            if must_write(judgement, job):
                changes.append(Change(judgement, result))
            else:
                writer.touch(judgement)
        if writer.touched >= TOUCH_BATCH:
            await writer.flush_touched()
        if changes:
            await writer.write_isolated(changes)
        return results

    def _judge(
        self,
        observation: Observation,
        runs: RunFacts | None = None,
        seen_at: datetime | None = None,
        silenced_until: datetime | None = None,
        verification: VerificationFacts | None = None,
    ) -> Judgement:
        """Judge the job now (the one read of the clock for it; the rules are pure)."""
        job = observation.job
        judgement = judge(
            observation, runs, now=self.clock(), seen_at=seen_at, silenced_until=silenced_until,
            verification=verification,
        )  # fmt: skip
        state = judgement.state
        if state.status != job.status or observation.source_error:
            logger.log(
                logging.WARNING if state.status in ("critical", "unknown") else logging.INFO,
                "job evaluated",
                extra={
                    "job": job.name, "status": state.status, "previous": job.status,
                    "reason": ",".join(reason.code for reason in state.reasons) or "-",
                },
            )  # fmt: skip
        return judgement

    def _unjudged(
        self, observation: Observation, exc: Exception, silenced_until: datetime | None
    ) -> Judgement:
        """The job could not be judged: it is unknown, with the error as its reason, until a
        scan judges it (its files and inventory are left as they were)."""
        logger.error("job judging failed", extra={"job": observation.job.name}, exc_info=exc)
        message = f"internal error while judging the job: {describe_error(exc)}"
        return unjudged(observation, message, now=self.clock(), silenced_until=silenced_until)


def _result(judgement: Judgement) -> JobResult:
    """The job's result as the judgement reports it (the writer adds the artifacts' counts)."""
    state, job = judgement.state, judgement.observation.job
    return JobResult(
        job.name, state.status, state.stored_reasons(), state.latest_artifact,
        state.artifact_count, error=judgement.error,
    )  # fmt: skip


def _declared(observation: Observation, field: str) -> Any:
    """A field of the job's declaration: from its validated spec, else (a declaration that no
    longer validates) as stored."""
    if observation.spec is not None:
        return getattr(observation.spec, field)
    return observation.job.declaration.get(field)


async def _taken(pieces: asyncio.Queue[list[JobRow] | None]) -> AsyncGenerator[list[JobRow], None]:
    """The pieces put on the queue, until None."""
    while (piece := await pieces.get()) is not None:
        yield piece


async def _all(*steps: Coroutine[Any, Any, None]) -> None:
    """Run the steps at once (the writer's lanes: sessions of their own); every one ends
    before the first failure is raised."""
    for outcome in await asyncio.gather(*steps, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def run_scanner(
    session: AsyncSession,
    options: ScanOptions | None = None,
    *,
    trigger: str = "schedule",
    names: Sequence[str] | None = None,
    stop: asyncio.Event | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ScanReport:
    """Entry point for the scheduler, the runtime and the CLI: scan every job (or those named)
    with this session. An option left None is the process settings' (SCAN_ROOTS,
    SOURCE_TIMEOUT_SECONDS) or the wall clock."""
    from service.settings import get_settings

    settings = get_settings()
    options = options or ScanOptions()
    scanner = BackupScanner(
        session,
        clock=options.clock or utcnow,
        scan_roots=settings.scan_roots if options.scan_roots is None else options.scan_roots,
        source_timeout=(
            settings.source_timeout_seconds
            if options.source_timeout is None
            else options.source_timeout
        ),
        trigger=trigger,
        stop=stop,
        on_start=on_start,
        replica=options.replica,
    )
    return await scanner.scan_all_jobs(names)
