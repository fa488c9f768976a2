"""The deadline tick: a job is judged within seconds of its deadline, not at the next full scan;
a claim is taken once, however many replicas tick."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from service.core.scan_options import ScanOptions
from service.db.models import Job
from service.runtime.coordinator import ScanCoordinator
from service.runtime.scheduling import ScanScheduler
from service.runtime.tick import DeadlineTick
from service.scheduler import shutdown_scheduler, start_scheduler

from tests.support import add_job, get_job, make_file, store_failure_ping


async def test_a_late_job_is_marked_within_seconds_of_its_deadline(sessionmaker, tmp_path):
    """`every: 5s`, `grace: 1s`, and the file stops appearing: critical within 3 s of the
    deadline (the full scan runs only every 15 minutes here)."""
    folder = tmp_path / "fast"
    written = datetime.now(UTC)
    make_file(folder / "a.tar", 10, written)
    await add_job(
        sessionmaker, written - timedelta(hours=1), name="fast", grace="1s",
        schedule={"every": "5s"}, source={"type": "local", "path": str(folder)},
    )  # fmt: skip
    deadline = written + timedelta(seconds=6)
    await start_scheduler(sessionmaker, interval_minutes=15, run_now=True, tick_seconds=0.5)
    try:
        marked_at = None
        while datetime.now(UTC) < deadline + timedelta(seconds=10):
            job = await get_job(sessionmaker, "fast")
            if job.status == "critical":
                marked_at = datetime.now(UTC)
                break
            await asyncio.sleep(0.1)
    finally:
        await shutdown_scheduler()
    assert marked_at is not None, "never marked late"
    assert [reason["code"] for reason in job.reasons] == ["late"]
    delay = (marked_at - deadline).total_seconds()
    print(f"marked late {delay:.2f} s after its deadline")
    assert 0 <= delay <= 3


async def test_a_due_job_is_claimed_by_one_tick_only(sessionmaker, tmp_path):
    now = datetime.now(UTC)
    make_file(tmp_path / "d" / "a.tar", 10, now - timedelta(days=3))
    await add_job(
        sessionmaker, now - timedelta(days=5), name="due",
        source={"type": "local", "path": str(tmp_path / "d")},
    )  # fmt: skip
    async with sessionmaker() as session:
        job = await session.scalar(select(Job).where(Job.name == "due"))
        job.next_check_at = now - timedelta(seconds=1)
        await session.commit()
    # Four replicas, each with its tick.
    results = await asyncio.gather(*(DeadlineTick(sessionmaker).run() for _ in range(4)))
    assert sorted(map(len, results)) == [0, 0, 0, 1]
    judged = await get_job(sessionmaker, "due")
    assert judged.status == "critical"
    # Judged after its deadline: not due again until a new deadline passes.
    assert await DeadlineTick(sessionmaker).run() == []


async def test_a_failure_ping_is_judged_at_the_next_tick(sessionmaker):
    await add_job(sessionmaker, datetime.now(UTC), name="hb", schedule={"every": "1d"})
    key = (await get_job(sessionmaker, "hb")).ping_key
    tick = DeadlineTick(sessionmaker)
    await tick.run()  # the tick starts from the pings already there
    await store_failure_ping(sessionmaker, key)
    assert await tick.run() == ["hb"]
    job = await get_job(sessionmaker, "hb")
    assert job.status == "critical" and job.reasons[0]["code"] == "run_failed"
    assert await tick.run() == []  # judged: not again


async def test_a_ping_between_the_start_and_the_first_tick_is_judged_by_it(sessionmaker):
    """The tick used to take the pings already stored at its first run as the first full
    scan's: a /start sent just after the service started (its job judged by that scan before
    the ping came) was judged only at the next full scan, 15 minutes later."""
    await add_job(sessionmaker, datetime.now(UTC), name="hb", schedule={"every": "1d"})
    key = (await get_job(sessionmaker, "hb")).ping_key
    # Started as serve starts it; the tick is left to this test (its interval is an hour).
    tick = DeadlineTick(sessionmaker)
    scheduler = ScanScheduler(
        ScanCoordinator(sessionmaker), 60, run_now=False, tick=tick, tick_seconds=3600
    )
    await scheduler.start()
    try:
        await store_failure_ping(sessionmaker, key)
        assert await tick.run() == ["hb"]  # the first tick
    finally:
        await scheduler.stop(30)
    job = await get_job(sessionmaker, "hb")
    assert job.status == "critical" and job.reasons[0]["code"] == "run_failed"


async def test_a_backup_being_written_is_judged_by_the_tick_once_settled(
    sessionmaker, clock, tmp_path
):
    """A dump that stops at 10 KiB: told when it has settled (its mtime + settle), not at the
    next full scan."""
    from service.scanner.scanner import BackupScanner

    folder = tmp_path / "db"
    for day in range(1, 4):
        make_file(folder / f"db-{day}.sql.gz", 100 * 1024, clock.now - timedelta(days=day))
    make_file(folder / "db-0.sql.gz", 10 * 1024, clock.now - timedelta(seconds=20))
    await add_job(
        sessionmaker, clock.now - timedelta(days=10), name="db", rules={"min_size": "80KiB"},
        source={"type": "local", "path": str(folder), "settle": "1m"},
    )  # fmt: skip
    async with sessionmaker() as session:
        await BackupScanner(session, clock=clock).scan_all_jobs()
    assert (await get_job(sessionmaker, "db")).status == "ok"  # being written

    tick = DeadlineTick(sessionmaker, ScanOptions(clock=clock))
    clock.advance(seconds=39)
    assert await tick.run() == []
    clock.advance(seconds=1)  # 60 s after its last write
    assert await tick.run() == ["db"]
    job = await get_job(sessionmaker, "db")
    assert (job.status, [r["code"] for r in job.reasons]) == ("critical", ["too_small"])
