"""The periodic full scan: a module-level AsyncIOScheduler that awaits the async scanner.

The contract of the original request, in async form: `run_scanner_job` opens a session per run,
awaits `run_scanner(session)`, logs and swallows any exception and always closes the session;
`start_scheduler` and `shutdown_scheduler` are idempotent and say so in the log.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import and_, case, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db import database_url_of
from service.errors import log_failure
from service.models import Job, Ping
from service.retention import run_retention
from service.scanner import run_scanner
from service.settings import get_settings

logger = logging.getLogger(__name__)

JOB_ID = "backup_scanner_main_job"
TICK_JOB_ID = "backup_deadline_tick"
RETENTION_JOB_ID = "backup_retention"
TICK_BATCH = 500  # jobs claimed by one tick at most
MISFIRE_GRACE_SECONDS = 60

scheduler = AsyncIOScheduler(timezone=UTC)

# Set when the service stops: a running scan finishes the job in hand, then stops.
_stop = asyncio.Event()
# Full scans in progress (scheduled or asked for through the API), with their scan id once
# it is known. One at a time: a scheduled run skips its turn while an API scan runs.
_active_runs: dict[asyncio.Task[Any], int | None] = {}


class ScanAlreadyRunning(Exception):
    def __init__(self, scan_id: int | None) -> None:
        super().__init__("a full scan is already running")
        self.scan_id = scan_id


def _track(task: asyncio.Task[Any] | None) -> Callable[[int], None]:
    """Register `task` as the running full scan; return the callback that records its id."""
    if task is None:
        return lambda _scan_id: None
    _active_runs[task] = None
    task.add_done_callback(lambda done: _active_runs.pop(done, None))
    return lambda scan_id: _active_runs.__setitem__(task, scan_id)


async def run_scanner_job(
    session_factory: async_sessionmaker[AsyncSession], **scan_options: Any
) -> None:
    """One scheduled scan: a fresh session, the scanner, and the session closed whatever happens.

    `scan_options` go to `run_scanner` (scan_roots, source_timeout).
    """
    if _stop.is_set():  # created in the same moment the service began to stop
        logger.info("Scheduled run of the backup scanner skipped: the service is stopping.")
        return
    if _active_runs:
        logger.info("Scheduled run of the backup scanner skipped: a scan is already running.")
        return
    on_start = _track(asyncio.current_task())
    session = session_factory()
    try:
        logger.info("Scheduled run of the backup scanner started.")
        await run_scanner(
            session, trigger="schedule", stop=_stop, on_start=on_start, **scan_options
        )
        logger.info("Scheduled run of the backup scanner finished successfully.")
    except Exception as exc:
        # Never let a scan failure escape into the scheduler: the next run must still happen.
        log_failure(
            logger, "Error while running the backup scanner job", exc,
            database_url_of(session_factory),
        )  # fmt: skip
    finally:
        await session.close()
        logger.debug("Database session closed for the scanner job.")


# The newest ping this process's tick has looked at, per database (its session factory).
_last_ping_ids: weakref.WeakKeyDictionary[async_sessionmaker[AsyncSession], int] = (
    weakref.WeakKeyDictionary()
)


async def _claim(session: AsyncSession, job_id: int, condition: Any, now: datetime) -> bool:
    """A conditional UPDATE checked by its rowcount: one claimer wins, however many try."""
    result = await session.execute(
        update(Job).where(Job.id == job_id, Job.paused.is_(False), condition).values(checked_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _due_since() -> Any:
    """When a job became due for the tick: the earlier of its deadline and its reminder
    (a CASE, as SQLite has no LEAST and PostgreSQL no two-argument MIN)."""
    return case(
        (Job.renotify_at.is_(None), Job.next_check_at),
        (Job.next_check_at.is_(None), Job.renotify_at),
        (Job.renotify_at < Job.next_check_at, Job.renotify_at),
        else_=Job.next_check_at,
    )


async def run_deadline_tick(
    session_factory: async_sessionmaker[AsyncSession],
    *,
    batch: int = TICK_BATCH,
    **scan_options: Any,
) -> list[str]:
    """Judge now the jobs whose deadline passed, whose next notice is due (a reminder, or a
    notice held by notify.for until now), or that pinged, since they were last judged.

    Each job is claimed by a conditional UPDATE checked by its rowcount, so that several
    replicas ticking together never scan a job twice. Returns the names scanned. A `clock` in
    `scan_options` (tests) is the tick's time and the scan's.
    """
    if _stop.is_set():
        return []
    clock: Callable[[], datetime] = scan_options.get("clock") or (lambda: datetime.now(UTC))
    now = clock()
    never = Job.checked_at.is_(None)
    not_seen_since = or_(
        and_(Job.next_check_at <= now, or_(never, Job.checked_at < Job.next_check_at)),
        # A reminder (or a notice held until now: renotify_at is when the next notice is due)
        # is written by the judgement at its due time, with the reasons then. Due
        # whenever this job was last looked at: a tick whose scan skipped the job (another
        # writer held its row) or failed has set checked_at, and the reminder must not wait
        # for the next full scan. It clears itself: the judgement that writes the reminder
        # moves renotify_at on, one that ends the problem clears it (paused jobs: not taken).
        # (checked_at < now: replicas ticking at the same moment claim it once.)
        and_(Job.renotify_at <= now, or_(never, Job.checked_at < now)),
    )
    async with session_factory() as session:
        try:
            due = await session.execute(
                select(Job.id, Job.name)
                .where(Job.paused.is_(False), not_seen_since)
                # The longest due first, for a deadline or a reminder: none starves.
                .order_by(_due_since(), Job.id)
                .limit(batch)
            )
            claimed = {
                name
                for job_id, name in due.all()
                if await _claim(session, job_id, not_seen_since, now)
            }
            await session.commit()
            # Pings since the last tick: their jobs are judged now too (a failure is news).
            last_seen = _last_ping_ids.get(session_factory)
            if last_seen is None:  # pings before this process started: the first full scan
                last_seen = await session.scalar(select(func.max(Ping.id))) or 0
            pinged = await session.execute(
                select(Ping.job_id, Job.name, func.max(Ping.received_at), func.max(Ping.id))
                .join(Job, Job.id == Ping.job_id)
                .where(Ping.id > last_seen)
                .group_by(Ping.job_id, Job.name)
            )
            for job_id, name, _received, newest in pinged.all():
                last_seen = max(last_seen, newest)
                # Not "checked before the ping was received": a ping is received before the
                # writer commits it, so a look in between (a scan) would have hidden it. Each
                # new ping is seen by one tick of this process, which judges its job once.
                if name not in claimed and await _claim(session, job_id, true(), now):
                    claimed.add(name)
            await session.commit()
            _last_ping_ids[session_factory] = last_seen
            if claimed:
                await run_scanner(
                    session, trigger="tick", stop=_stop, names=sorted(claimed), **scan_options
                )
            return sorted(claimed)
        except Exception as exc:  # like the full scan: log, never kill the scheduler
            log_failure(
                logger, "Error while running the deadline tick", exc,
                database_url_of(session_factory),
            )  # fmt: skip
            return []


async def _start_pings_of_the_tick(session_factory: async_sessionmaker[AsyncSession]) -> None:
    """The tick judges the jobs of the pings from now on; those before are the first full
    scan's (it starts after this). Taken at the start, not at the first tick: a ping stored in
    between, whose job the first full scan had already judged, would have been nobody's until
    the next full scan. If the database cannot say now, the first tick takes it then."""
    try:
        async with session_factory() as session:
            newest = await session.scalar(select(func.max(Ping.id)))
    except Exception as exc:
        log_failure(logger, "cannot read the newest ping", exc, database_url_of(session_factory))
        return
    _last_ping_ids[session_factory] = newest or 0


def _add_interval_job(
    job_id: str,
    function: Callable[..., Any],
    session_factory: async_sessionmaker[AsyncSession],
    scan_options: dict[str, Any] | None,
    **trigger: Any,
) -> None:
    """One run at a time, late runs merged, replaced if already there (the original request)."""
    scheduler.add_job(
        function,
        "interval",
        args=[session_factory],
        kwargs=scan_options or {},
        id=job_id,
        replace_existing=True,
        misfire_grace_time=MISFIRE_GRACE_SECONDS,
        coalesce=True,
        max_instances=1,
        **trigger,
    )


async def start_scheduler(
    session_factory: async_sessionmaker[AsyncSession],
    interval_minutes: float | None = None,
    *,
    run_now: bool = True,
    scan_options: dict[str, Any] | None = None,
    tick_seconds: float | None = None,
    retention_days: float | None = None,
) -> None:
    """Start the scheduler with the scanner job; a no-op (logged) when it already runs.

    `run_now` also runs a first scan right away, so that a fresh start shows real statuses
    instead of waiting a whole interval.
    """
    if scheduler.running:
        logger.info("The scheduler is already running.")
        return
    minutes = (
        interval_minutes
        if interval_minutes is not None
        else (get_settings().scanner_interval_minutes)
    )
    options: dict[str, Any] = {}
    if run_now:
        options["next_run_time"] = datetime.now(UTC)
    _add_interval_job(
        JOB_ID, run_scanner_job, session_factory, scan_options, minutes=minutes, **options
    )
    logger.info("Job '%s' added to the scheduler. Interval: %g minutes.", JOB_ID, minutes)
    if tick_seconds is not None:
        await _start_pings_of_the_tick(session_factory)
        # Between full scans, a job is judged within seconds of its deadline.
        _add_interval_job(
            TICK_JOB_ID, run_deadline_tick, session_factory, scan_options, seconds=tick_seconds
        )
        logger.info("Job '%s' added to the scheduler. Interval: %g s.", TICK_JOB_ID, tick_seconds)
    if retention_days is not None:
        scheduler.add_job(
            run_retention, "interval", args=[session_factory], kwargs={"days": retention_days},
            id=RETENTION_JOB_ID, replace_existing=True, coalesce=True, max_instances=1,
            hours=1, next_run_time=datetime.now(UTC) + timedelta(minutes=1),
        )  # fmt: skip
        logger.info("Job '%s' added to the scheduler. Interval: 1 h.", RETENTION_JOB_ID)
    _stop.clear()
    scheduler.start()
    logger.info("APScheduler scheduler started.")


async def shutdown_scheduler(drain_timeout: float = 30.0) -> None:
    """Stop the scheduler; a running scan finishes its current job first (up to drain_timeout)."""
    if not scheduler.running:
        logger.info("The scheduler was not running.")
        return
    # APScheduler's shutdown cancels running jobs: pause it, drain the scan, then shut it down.
    scheduler.pause()
    await drain_scans(drain_timeout)
    scheduler.shutdown(wait=False)
    # AsyncIOScheduler applies the shutdown on the loop: let it happen before we report it.
    await wait_for_condition(lambda: not scheduler.running, within=5)
    await wait_for_condition(lambda: not _active_runs, within=5)
    _stop.clear()  # the stop is done; a later direct run_scanner_job() must scan
    logger.info("APScheduler scheduler stopped.")


async def drain_scans(drain_timeout: float = 30.0) -> None:
    """Ask a running full scan to stop after its current job and wait for it (then cancel)."""
    _stop.set()
    await asyncio.sleep(0)  # a run created in this same loop step registers itself first
    if _active_runs:
        logger.info("Waiting for the running scan to finish its current job.")
        _, pending = await asyncio.wait(set(_active_runs), timeout=drain_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
    _stop.clear()


async def start_full_scan(
    session_factory: async_sessionmaker[AsyncSession], **scan_options: Any
) -> tuple[int, asyncio.Task[None]]:
    """Start a full scan now (trigger "api"); return its id, once recorded, and its task.

    Raises ScanAlreadyRunning while another full scan runs in this process.
    """
    if _active_runs:
        raise ScanAlreadyRunning(next(iter(_active_runs.values())))
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    recorded: list[Callable[[int], None]] = []

    def record(scan_id: int) -> None:
        recorded[0](scan_id)
        started.set_result(scan_id)

    async def run() -> None:
        try:
            async with session_factory() as session:
                await run_scanner(
                    session, trigger="api", stop=_stop, on_start=record, **scan_options
                )
        except Exception as exc:
            if not started.done():
                started.set_exception(exc)
                return
            log_failure(
                logger, "Error while running the backup scanner", exc,
                database_url_of(session_factory),
            )  # fmt: skip
        finally:
            if not started.done():
                started.cancel()

    task = asyncio.create_task(run(), name="api-full-scan")
    # Registered before this coroutine yields: a request right behind this one gets the 409.
    recorded.append(_track(task))
    return await asyncio.shield(started), task


def scan_running() -> bool:
    """True while a scheduled scan is in progress."""
    return bool(_active_runs)


def scheduler_state() -> dict[str, Any]:
    """{"running": bool, "next_run_at": ISO time or None} for the status endpoint."""
    job = scheduler.get_job(JOB_ID) if scheduler.running else None
    next_run = job.next_run_time if job is not None else None
    return {
        "running": scheduler.running,
        "next_run_at": next_run.astimezone(UTC).isoformat() if next_run else None,
    }


async def wait_for_condition(
    condition: Callable[[], bool], within: float, interval: float = 0.01
) -> bool:
    """Yield to the loop until `condition()` holds or `within` seconds pass; return the outcome."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True
