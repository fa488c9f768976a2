"""The six scheduler tests of the original request, in async form, on a real database."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.db.engine import create_engine, create_sessionmaker
from service.db.models import ScanRun
from service.scheduler import (
    JOB_ID,
    run_scanner_job,
    scan_running,
    scheduler,
    shutdown_scheduler,
    start_scheduler,
    wait_for_condition,
)

from tests.support import add_job, get_job, make_file


class RecordingSessions:
    """A real session factory that remembers each session it opened and each close."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker
        self.opened = 0
        self.closed = 0

    def __call__(self) -> AsyncSession:
        session = self.sessionmaker()
        self.opened += 1
        close = session.close

        async def recording_close() -> None:
            self.closed += 1
            await close()

        session.close = recording_close  # type: ignore[method-assign]
        return session


@pytest.fixture(autouse=True)
async def stopped_scheduler():
    """Every test starts and ends with the module-level scheduler stopped."""
    await shutdown_scheduler()
    yield
    await shutdown_scheduler()
    scheduler.remove_all_jobs()


async def test_scheduler_start_and_shutdown(sessionmaker):
    assert not scheduler.running
    await start_scheduler(sessionmaker, interval_minutes=15, run_now=False)
    assert scheduler.running
    job = scheduler.get_job(JOB_ID)
    assert job is not None
    assert isinstance(job.trigger, IntervalTrigger)
    assert job.trigger.interval == timedelta(minutes=15)
    assert job.misfire_grace_time == 60
    assert job.coalesce is True
    assert job.max_instances == 1

    await shutdown_scheduler()
    assert not scheduler.running


async def test_scheduler_job_execution(sessionmaker, clock, tmp_path: Path):
    """The interval fires and the real scanner runs: a scan is recorded and the job judged."""
    backups = tmp_path / "backups"
    make_file(backups / "b.tar", 2048, clock.now - timedelta(minutes=5))
    await add_job(
        sessionmaker, clock.now, name="files", source={"type": "local", "path": str(backups)}
    )
    sessions = RecordingSessions(sessionmaker)

    await start_scheduler(sessions, interval_minutes=0.01, run_now=False)  # every 0.6 s

    async def scheduled_scans() -> int:
        async with sessionmaker() as session:
            query = select(func.count()).select_from(ScanRun).where(ScanRun.trigger == "schedule")
            return int(await session.scalar(query) or 0)

    ran = False
    for _ in range(200):
        if sessions.closed >= 1 and await scheduled_scans() >= 1:
            ran = True
            break
        await asyncio.sleep(0.05)
    assert ran, "the scheduled scan did not run within 10 s"
    job = await get_job(sessionmaker, "files")
    assert job.status == "ok"
    assert job.artifact_count == 1
    await shutdown_scheduler()


async def test_run_scanner_job_db_session_management(sessionmaker, engine: AsyncEngine):
    sessions = RecordingSessions(sessionmaker)
    await run_scanner_job(sessions)
    assert sessions.opened == 1
    assert sessions.closed == 1
    assert engine.pool.checkedout() == 0  # the connection went back to the pool
    async with sessionmaker() as session:
        run = await session.scalar(select(ScanRun))
    assert run is not None and run.trigger == "schedule" and run.status == "finished"


async def test_run_scanner_job_exception_handling(tmp_path: Path, caplog):
    """A real failure (a database without the schema): logged, swallowed, session closed."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'no-schema.db'}")
    sessions = RecordingSessions(create_sessionmaker(engine))
    try:
        with caplog.at_level(logging.ERROR, logger="service.scheduler"):
            await run_scanner_job(sessions)  # must not raise
        assert "Error while running the backup scanner job" in caplog.text
        assert "no such table: scan_runs" in caplog.text
        assert sessions.closed == 1
        assert engine.pool.checkedout() == 0
    finally:
        await engine.dispose()


async def test_scheduler_not_start_if_running(sessionmaker, caplog):
    await start_scheduler(sessionmaker, interval_minutes=15, run_now=False)
    assert scheduler.running
    with caplog.at_level(logging.INFO, logger="service.scheduler"):
        await start_scheduler(sessionmaker, interval_minutes=15, run_now=False)
    assert "The scheduler is already running." in caplog.text
    assert len(scheduler.get_jobs()) == 1
    await shutdown_scheduler()


async def test_scheduler_not_shutdown_if_not_running(caplog):
    assert not scheduler.running
    with caplog.at_level(logging.INFO, logger="service.scheduler"):
        await shutdown_scheduler()
    assert "The scheduler was not running." in caplog.text


async def test_shutdown_lets_the_running_scan_finish_its_current_job(
    sessionmaker, clock, tmp_path, caplog
):
    """SIGTERM during a scan: the scan stops between jobs and records itself, never cancelled."""
    for index in range(150):
        make_file(tmp_path / f"j{index}" / "a.tar", 10, clock.now)
        await add_job(
            sessionmaker, clock.now, name=f"j{index:03d}",
            source={"type": "local", "path": str(tmp_path / f"j{index}")},
        )  # fmt: skip
    await start_scheduler(sessionmaker, interval_minutes=15, run_now=True)
    assert await wait_for_condition(scan_running, within=10), "the first scan did not start"
    with caplog.at_level(logging.INFO):
        await shutdown_scheduler()
    assert not scheduler.running
    assert not scan_running()
    async with sessionmaker() as session:
        run = await session.scalar(select(ScanRun))
    assert run is not None
    assert run.status in ("interrupted", "finished")  # not "failed" (cancelled), not "running"
    assert run.finished_at is not None
    assert "CancelledError" not in caplog.text
    assert "Error while running the backup scanner job" not in caplog.text
