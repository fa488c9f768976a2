"""One app's APScheduler wiring: the full scan every interval, the deadline tick, retention."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from service.runtime.coordinator import ScanCoordinator
from service.runtime.lifecycle import wait_for_condition
from service.runtime.tick import DeadlineTick
from service.store.retention import run_retention

# The scheduler's log lines keep the logger of the original request, wherever they come from.
logger = logging.getLogger("service.scheduler")

JOB_ID = "backup_scanner_main_job"
TICK_JOB_ID = "backup_deadline_tick"
RETENTION_JOB_ID = "backup_retention"
MISFIRE_GRACE_SECONDS = 60


class ScanScheduler:
    """An AsyncIOScheduler that runs the full scan through `coordinator` every
    `interval_minutes` (and at once when `run_now`), `tick` every `tick_seconds`, and retention
    hourly when `retention_days` is set.

    Jobs follow the original request: fixed ids, `replace_existing`, `misfire_grace_time` 60 s,
    late runs coalesced, one instance at a time. `start` when running and `stop` when not are
    no-ops that say so in the log. `stop(grace)` lets a running scan and tick finish the job in
    hand (APScheduler's own shutdown would cancel them), then stops the scheduler.
    """

    def __init__(
        self,
        coordinator: ScanCoordinator,
        interval_minutes: float,
        *,
        run_now: bool = True,
        tick: DeadlineTick | None = None,
        tick_seconds: float | None = None,
        retention_days: float | None = None,
        scheduler: AsyncIOScheduler | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.interval_minutes = interval_minutes
        self.run_now = run_now
        self.tick = tick
        self.tick_seconds = tick_seconds
        self.retention_days = retention_days
        self.scheduler = scheduler if scheduler is not None else AsyncIOScheduler(timezone=UTC)

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def state(self) -> dict[str, Any]:
        """{"running": bool, "next_run_at": ISO time or None} for the status endpoint."""
        job = self.scheduler.get_job(JOB_ID) if self.scheduler.running else None
        next_run = job.next_run_time if job is not None else None
        return {
            "running": self.running,
            "next_run_at": next_run.astimezone(UTC).isoformat() if next_run else None,
        }

    def _add_interval_job(self, job_id: str, function: Callable[..., Any], **trigger: Any) -> None:
        """One run at a time, late runs merged, replaced if already there (the original request)."""
        self.scheduler.add_job(
            function,
            "interval",
            id=job_id,
            replace_existing=True,
            misfire_grace_time=MISFIRE_GRACE_SECONDS,
            coalesce=True,
            max_instances=1,
            **trigger,
        )

    async def start(self) -> None:
        if self.scheduler.running:
            logger.info("The scheduler is already running.")
            return
        options: dict[str, Any] = {}
        if self.run_now:  # a fresh start shows real statuses instead of waiting an interval
            options["next_run_time"] = datetime.now(UTC)
        minutes = self.interval_minutes
        self._add_interval_job(JOB_ID, self.coordinator.run_scheduled, minutes=minutes, **options)
        logger.info("Job '%s' added to the scheduler. Interval: %g minutes.", JOB_ID, minutes)
        if self.tick is not None and self.tick_seconds is not None:
            await self.tick.start()
            # Between full scans, a job is judged within seconds of its deadline.
            self._add_interval_job(TICK_JOB_ID, self.tick.run, seconds=self.tick_seconds)
            logger.info(
                "Job '%s' added to the scheduler. Interval: %g s.", TICK_JOB_ID, self.tick_seconds
            )
        if self.retention_days is not None:
            self.scheduler.add_job(
                run_retention, "interval", args=[self.coordinator.session_factory],
                kwargs={"days": self.retention_days}, id=RETENTION_JOB_ID, replace_existing=True,
                coalesce=True, max_instances=1, hours=1,
                next_run_time=datetime.now(UTC) + timedelta(minutes=1),
            )  # fmt: skip
            logger.info("Job '%s' added to the scheduler. Interval: 1 h.", RETENTION_JOB_ID)
        await self.coordinator.start()
        self.scheduler.start()
        logger.info("APScheduler scheduler started.")

    async def stop(self, grace: float) -> None:
        """Stop the scheduler; a running scan finishes its current job first (up to `grace`)."""
        if not self.scheduler.running:
            logger.info("The scheduler was not running.")
            return
        # APScheduler's shutdown cancels running jobs: pause it, drain the scans, then shut it.
        self.scheduler.pause()
        drains = [self.coordinator.stop(grace)]
        if self.tick is not None:
            drains.append(self.tick.stop(grace))
        await asyncio.gather(*drains)
        self.scheduler.shutdown(wait=False)
        # AsyncIOScheduler applies the shutdown on the loop: let it happen before we report it.
        await wait_for_condition(lambda: not self.scheduler.running, within=5)
        await wait_for_condition(lambda: not self.coordinator.running, within=5)
        logger.info("APScheduler scheduler stopped.")
