"""One full scan at a time for one app: the scheduled runs and the API's "scan now"."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.scan_options import ScanOptions
from service.db.engine import database_url_of
from service.db.errors import log_failure
from service.runtime.fleet import Fleet, Share
from service.runtime.lifecycle import drain
from service.scanner.scanner import run_scanner

# The scheduler's log lines keep the logger of the original request, wherever they come from.
logger = logging.getLogger("service.scheduler")


class ScanAlreadyRunning(Exception):
    def __init__(self, scan_id: int | None) -> None:
        super().__init__("a full scan is already running")
        self.scan_id = scan_id


class ScanCoordinator:
    """The full scans of one app (one database).

    Invariants: at most one full scan runs at a time through this coordinator (a scheduled run
    skips its turn while another runs, `start_full_scan` raises ScanAlreadyRunning); from the
    moment `stop` begins, no scheduled run starts and a running scan ends after the job in hand.
    `stop` leaves the coordinator usable: a later scan runs (as after a restart).
    """

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        options: ScanOptions | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        self.session_factory = session_factory
        options = options or ScanOptions()
        if fleet is not None and options.replica is None:  # its scan runs name the replica
            options = dataclasses.replace(options, replica=fleet.name)
        self.options = options
        # In a PostgreSQL fleet, a scheduled scan lists this replica's share only.
        self.fleet = fleet
        # Set while stopping: a running scan finishes the job in hand, then stops.
        self._stopping = asyncio.Event()
        # Full scans in progress, with their scan id once it is recorded.
        self._runs: dict[asyncio.Task[Any], int | None] = {}

    @property
    def running(self) -> bool:
        """True while a full scan (scheduled or asked for) is in progress."""
        return bool(self._runs)

    async def start(self) -> None:
        self._stopping.clear()

    async def stop(self, grace: float) -> None:
        """Ask a running full scan to stop after its current job and wait for it up to `grace`
        seconds (then cancel it)."""
        self._stopping.set()
        await asyncio.sleep(0)  # a run created in this same loop step registers itself first
        if self._runs:
            logger.info("Waiting for the running scan to finish its current job.")
            await drain(self._runs, grace)
        self._stopping.clear()

    def _track(self, task: asyncio.Task[Any] | None) -> Callable[[int], None]:
        """Register `task` as the running full scan; return the callback that records its id."""
        if task is None:
            return lambda _scan_id: None
        self._runs[task] = None
        task.add_done_callback(lambda done: self._runs.pop(done, None))
        return lambda scan_id: self._runs.__setitem__(task, scan_id)

    async def run_scheduled(self) -> None:
        """One scheduled scan: a fresh session, the scanner, and the session closed whatever
        happens; any failure is logged, never raised (the next run must still happen)."""
        if self._stopping.is_set():  # fired in the same moment the service began to stop
            logger.info("Scheduled run of the backup scanner skipped: the service is stopping.")
            return
        if self._runs:
            logger.info("Scheduled run of the backup scanner skipped: a scan is already running.")
            return
        task = asyncio.current_task()
        on_start = self._track(task)
        session = self.session_factory()
        share: Share | None = None
        listed: list[str] = []
        try:
            logger.info("Scheduled run of the backup scanner started.")
            names = None
            if self.fleet is not None:
                share = await self.fleet.claim_share()
                names = sorted(share.jobs)
            report = await run_scanner(
                session, self.options, trigger="schedule", names=names, stop=self._stopping,
                on_start=on_start,
            )  # fmt: skip
            listed = [job.name for job in report.jobs]
            logger.info("Scheduled run of the backup scanner finished successfully.")
        except Exception as exc:
            log_failure(
                logger, "Error while running the backup scanner job", exc,
                database_url_of(self.session_factory),
            )  # fmt: skip
        finally:
            await session.close()
            logger.debug("Database session closed for the scanner job.")
            if self.fleet is not None and share is not None:
                await self.fleet.give_back(share.jobs, listed, share.at)
            if task is not None:  # done with it, even if its task goes on (a direct call)
                self._runs.pop(task, None)

    async def start_full_scan(self) -> tuple[int, asyncio.Task[None]]:
        """Start a full scan now (trigger "api"); return its id, once recorded, and its task.

        Raises ScanAlreadyRunning while another full scan of this coordinator runs.
        """
        if self._runs:
            raise ScanAlreadyRunning(next(iter(self._runs.values())))
        started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        recorded: list[Callable[[int], None]] = []

        def record(scan_id: int) -> None:
            recorded[0](scan_id)
            started.set_result(scan_id)

        async def run() -> None:
            try:
                async with self.session_factory() as session:
                    await run_scanner(
                        session, self.options, trigger="api", stop=self._stopping, on_start=record
                    )
            except Exception as exc:
                if not started.done():
                    started.set_exception(exc)
                    return
                log_failure(
                    logger, "Error while running the backup scanner", exc,
                    database_url_of(self.session_factory),
                )  # fmt: skip
            finally:
                if not started.done():
                    started.cancel()

        task = asyncio.create_task(run(), name="api-full-scan")
        # Registered before this coroutine yields: a request right behind this one gets the 409.
        recorded.append(self._track(task))
        return await asyncio.shield(started), task
