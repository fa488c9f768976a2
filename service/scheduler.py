"""The original request's scheduler, as a thin facade over service.runtime.

A module-level AsyncIOScheduler that awaits the async scanner, in async form:
`run_scanner_job` opens a session per run, awaits `run_scanner(session)`, logs and swallows any
exception and always closes the session; `start_scheduler` adds the job `backup_scanner_main_job`
(interval SCANNER_INTERVAL_MINUTES, replace_existing, misfire_grace_time 60 s, coalesced, one
instance at a time) and starts the scheduler; `start_scheduler` and `shutdown_scheduler` are
idempotent and say so in the log.

The service itself does not run this module's scheduler: each app builds its own
ScanScheduler, ScanCoordinator and DeadlineTick (service/runtime/app.py) and holds them under
AppKeys.
"""

from __future__ import annotations

import logging
from datetime import UTC

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.scan_options import ScanOptions
from service.runtime.coordinator import ScanCoordinator
from service.runtime.lifecycle import wait_for_condition
from service.runtime.scheduling import JOB_ID, ScanScheduler
from service.runtime.tick import DeadlineTick
from service.settings import get_settings

__all__ = [
    "JOB_ID",
    "run_scanner_job",
    "scan_running",
    "scheduler",
    "shutdown_scheduler",
    "start_scheduler",
    "wait_for_condition",
]

logger = logging.getLogger(__name__)

DRAIN_SECONDS = 30.0

scheduler = AsyncIOScheduler(timezone=UTC)
# What this module's scheduler runs while started by start_scheduler (the facade's own).
_started: list[ScanScheduler] = []


async def run_scanner_job(
    session_factory: async_sessionmaker[AsyncSession], options: ScanOptions | None = None
) -> None:
    """One scheduled scan: a fresh session, the scanner, and the session closed whatever happens.

    `options` go to `run_scanner` (without: the settings' SCAN_ROOTS, SOURCE_TIMEOUT_SECONDS).
    """
    await ScanCoordinator(session_factory, options).run_scheduled()


async def start_scheduler(
    session_factory: async_sessionmaker[AsyncSession],
    interval_minutes: float | None = None,
    *,
    run_now: bool = True,
    options: ScanOptions | None = None,
    tick_seconds: float | None = None,
    retention_days: float | None = None,
) -> None:
    """Start the scheduler with the scanner job; a no-op (logged) when it already runs.

    `run_now` also runs a first scan right away, so that a fresh start shows real statuses
    instead of waiting a whole interval. `tick_seconds` adds the deadline tick,
    `retention_days` the hourly retention.
    """
    if scheduler.running:
        logger.info("The scheduler is already running.")
        return
    minutes = (
        interval_minutes
        if interval_minutes is not None
        else get_settings().scanner_interval_minutes
    )
    started = ScanScheduler(
        ScanCoordinator(session_factory, options),
        minutes,
        run_now=run_now,
        tick=DeadlineTick(session_factory, options) if tick_seconds is not None else None,
        tick_seconds=tick_seconds,
        retention_days=retention_days,
        scheduler=scheduler,
    )
    await started.start()
    _started[:] = [started]


async def shutdown_scheduler(drain_timeout: float = DRAIN_SECONDS) -> None:
    """Stop the scheduler; a running scan finishes its current job first (up to drain_timeout)."""
    if not scheduler.running:
        logger.info("The scheduler was not running.")
        return
    if _started:
        await _started.pop().stop(drain_timeout)
    else:  # started by hand, not by start_scheduler: nothing of ours to drain
        scheduler.shutdown(wait=False)
        await wait_for_condition(lambda: not scheduler.running, within=5)


def scan_running() -> bool:
    """True while a scan started by this module's scheduler is in progress."""
    return bool(_started) and _started[0].coordinator.running
