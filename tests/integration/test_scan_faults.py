"""Faults that once stopped every scan (issue 10): files whose modification time no date can
hold, a job that breaks the judging, scans that fail or whose process is killed. Real files,
real databases (PostgreSQL and SQLite), real processes."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from service.db.models import Artifact, JobCheck, ScanRun
from service.runtime.app import create_app
from service.runtime.keys import sessionmaker_key
from service.scanner.scanner import BackupScanner
from service.settings import load_settings
from service.store.scans import (
    FAILING_AFTER,
    LEASE,
    abandoned_error,
    close_abandoned,
    keep_alive,
)

from tests.support import add_job, cli, get_job, make_file, missing

# Seconds since 1970: year 318 857, and as far before year 1. tmpfs, btrfs and XFS with bigtime
# keep such times (`touch -d @9999999999999 f`); ext4 clamps them to 2446 and 1901.
FAR_FUTURE = 9_999_999_999_999
FAR_PAST = -9_999_999_999_999
HOUR = timedelta(hours=1)


def set_mtime(path: Path, seconds: int) -> None:
    os.utime(path, ns=(seconds * 10**9, seconds * 10**9))


def keeps_extreme_mtimes(directory: Path) -> bool:
    probe = directory / ".probe"
    probe.touch()
    try:
        for seconds in (FAR_FUTURE, FAR_PAST):
            set_mtime(probe, seconds)
            if probe.stat().st_mtime_ns != seconds * 10**9:
                return False
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


@pytest.fixture
def odd_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a filesystem that keeps modification times beyond years 1-9999: the
    test's own if it does, else one on /dev/shm (tmpfs)."""
    for base in (tmp_path, Path("/dev/shm")):
        if not base.is_dir():
            continue
        directory = Path(tempfile.mkdtemp(prefix="bm-mtime-", dir=base))
        if keeps_extreme_mtimes(directory):
            yield directory
            shutil.rmtree(directory)
            return
        shutil.rmtree(directory)
    missing("no filesystem here keeps modification times beyond year 9999 (try tmpfs)")


def local(path: Path) -> dict[str, object]:
    return {"type": "local", "path": str(path)}


async def scan(sessionmaker, clock, **options):
    async with sessionmaker() as session:
        return await BackupScanner(session, clock=clock, trigger="test", **options).scan_all_jobs()


async def present(sessionmaker, job_id: int) -> dict[str, Artifact]:
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(Artifact).where(Artifact.job_id == job_id, Artifact.gone_since.is_(None))
        )
        return {row.path: row for row in rows}


# --- item 1: a file dated beyond what a date can hold ------------------------------------------


async def test_out_of_range_mtimes_are_ignored_with_a_reason_on_their_job_only(
    sessionmaker, clock, odd_dir
):
    for name in ("a", "b", "z"):
        make_file(odd_dir / name / f"{name}-1.tar", 100, clock.now - HOUR)
    make_file(odd_dir / "b" / "future.tar", 100, clock.now - 2 * HOUR)
    make_file(odd_dir / "b" / "past.tar", 100, clock.now - 2 * HOUR)
    ids = {
        name: await add_job(sessionmaker, clock.now - 10 * HOUR, name=name,
                            source=local(odd_dir / name))
        for name in ("a", "b", "z")
    }  # fmt: skip
    first = await scan(sessionmaker, clock)
    assert first.status == "finished"
    assert sorted(await present(sessionmaker, ids["b"])) == ["b-1.tar", "future.tar", "past.tar"]

    # The files are known; now their times leave the range of a date, both ways.
    set_mtime(odd_dir / "b" / "future.tar", FAR_FUTURE)
    set_mtime(odd_dir / "b" / "past.tar", FAR_PAST)
    clock.advance(minutes=5)
    report = await scan(sessionmaker, clock)

    assert report.status == "finished"
    assert {job.name: job.status for job in report.jobs} == {"a": "ok", "b": "warning", "z": "ok"}
    b = await get_job(sessionmaker, "b")
    assert [reason["code"] for reason in b.reasons] == ["bad_mtime"]
    message = b.reasons[0]["message"]
    assert "future.tar" in message and "past.tar" in message, message
    assert f"@{FAR_FUTURE}" in message and f"@{FAR_PAST}" in message, message
    # Judged on the files that have a date: the newest of those is the latest backup.
    assert b.latest_artifact is not None and b.latest_artifact["path"] == "b-1.tar"
    assert b.artifact_count == 1
    # Not gone: the files are there, only their dates cannot be read as dates.
    assert sorted(await present(sessionmaker, ids["b"])) == ["b-1.tar", "future.tar", "past.tar"]
    for name in ("a", "z"):
        assert (await get_job(sessionmaker, name)).checked_at == clock.now
    async with sessionmaker() as session:
        run = await session.get(ScanRun, report.scan_id)
        assert run is not None
        assert (run.status, run.jobs_scanned, run.errors) == ("finished", 3, 0)

    # Scanned again, nothing changes: no new history row, the reason stays.
    clock.advance(minutes=5)
    again = await scan(sessionmaker, clock)
    assert {job.name: job.status for job in again.jobs} == {"a": "ok", "b": "warning", "z": "ok"}
    async with sessionmaker() as session:
        checks = (await session.scalars(select(JobCheck).where(JobCheck.job_id == ids["b"]))).all()
    assert [check.status for check in checks] == ["ok", "warning"]

    # Dated right again: the job is ok and the files are listed with their new times.
    set_mtime(odd_dir / "b" / "future.tar", int((clock.now - 3 * HOUR).timestamp()))
    set_mtime(odd_dir / "b" / "past.tar", int((clock.now - 3 * HOUR).timestamp()))
    clock.advance(minutes=5)
    fixed = await scan(sessionmaker, clock)
    assert {job.name: job.status for job in fixed.jobs} == {"a": "ok", "b": "ok", "z": "ok"}
    assert (await get_job(sessionmaker, "b")).artifact_count == 3


async def test_a_job_with_only_undatable_files_is_judged_as_empty(sessionmaker, clock, odd_dir):
    make_file(odd_dir / "only" / "x.tar", 100, clock.now)
    set_mtime(odd_dir / "only" / "x.tar", FAR_FUTURE)
    await add_job(sessionmaker, clock.now - 10 * 24 * HOUR, name="only",
                  source=local(odd_dir / "only"))  # fmt: skip
    report = await scan(sessionmaker, clock)
    assert report.status == "finished"
    job = await get_job(sessionmaker, "only")
    assert job.status == "critical"
    assert [reason["code"] for reason in job.reasons] == ["bad_mtime", "missing"]
    assert job.latest_artifact is None and job.artifact_count == 0


async def test_api_scan_and_pause_of_such_a_job_answer_and_ready_stays_ok(
    aiohttp_client, database_url, clock, odd_dir
):
    settings = load_settings(database_url=database_url, scan_roots=str(odd_dir))
    app = create_app(settings, scheduler=False)
    client = await aiohttp_client(app)
    make_file(odd_dir / "b" / "b-1.tar", 100, clock.now - HOUR)
    make_file(odd_dir / "b" / "odd.tar", 100, clock.now)
    set_mtime(odd_dir / "b" / "odd.tar", FAR_FUTURE)
    await add_job(app[sessionmaker_key], clock.now - HOUR, name="b", source=local(odd_dir / "b"))

    response = await client.post("/api/v1/jobs/b/scan")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["status"] == "warning"
    assert [reason["code"] for reason in body["reasons"]] == ["bad_mtime"]
    response = await client.post("/api/v1/jobs/b/pause")
    assert response.status == 200, await response.text()
    assert (await response.json())["status"] == "paused"
    response = await client.post("/api/v1/scans?wait=true")
    assert response.status == 200, await response.text()
    assert (await response.json())["status"] == "finished"
    ready = await client.get("/health/ready")
    assert ready.status == 200, await ready.text()


async def test_cli_scan_reports_the_file_and_does_not_blame_the_database(
    database_url, sessionmaker, base_env, odd_dir, tmp_path
):
    clock_now = datetime.now(UTC).replace(microsecond=0)
    make_file(odd_dir / "b" / "b-1.tar", 100, clock_now - HOUR)
    make_file(odd_dir / "b" / "odd.tar", 100, clock_now)
    set_mtime(odd_dir / "b" / "odd.tar", FAR_FUTURE)
    await add_job(sessionmaker, clock_now - HOUR, name="b", source=local(odd_dir / "b"))
    result = await cli("scan", env=base_env, database_url=database_url, cwd=tmp_path)
    assert result.code == 1, result  # warning, the Nagios way
    assert "odd.tar" in result.out, result
    assert "cannot scan on the database" not in result.err, result
    assert "Traceback" not in result.err, result


class StumblingClock:
    """A clock that once answers a naive time (a bug's stand-in): to the judgement number
    `stumble` (the scanner's other reads of the clock are not counted, so that adding one
    elsewhere does not move the stumble to another job)."""

    def __init__(self, clock, stumble: int) -> None:
        self.clock, self.stumble, self.calls = clock, stumble, 0

    def __call__(self) -> datetime:
        now = self.clock()
        if sys._getframe(1).f_code.co_name != "_judge":
            return now
        self.calls += 1
        return now.replace(tzinfo=None) if self.calls == self.stumble else now


async def test_a_job_that_cannot_be_judged_fails_alone(sessionmaker, clock, tmp_path):
    for name in ("a", "b", "c"):
        make_file(tmp_path / name / "x.tar", 100, clock.now - HOUR)
        await add_job(sessionmaker, clock.now - HOUR, name=name, source=local(tmp_path / name))
    # Jobs are judged in name order (a, b, c): the second judgement is b's.
    report = await scan(sessionmaker, StumblingClock(clock, stumble=2))
    assert report.status == "finished"
    assert {job.name: job.status for job in report.jobs} == {"a": "ok", "b": "unknown", "c": "ok"}
    b = await get_job(sessionmaker, "b")
    assert b.status == "unknown"
    assert [reason["code"] for reason in b.reasons] == ["scan_error"]
    assert "internal error while judging" in b.reasons[0]["message"]
    async with sessionmaker() as session:
        run = await session.get(ScanRun, report.scan_id)
        assert run is not None and (run.status, run.errors, run.error) == ("finished", 1, None)
        assert [detail["job"] for detail in run.error_details] == ["b"]
    # The next scan judges it again.
    clock.advance(minutes=1)
    again = await scan(sessionmaker, clock)
    assert {job.name: job.status for job in again.jobs} == {"a": "ok", "b": "ok", "c": "ok"}


async def cancelled_scan(sessionmaker, clock) -> None:
    """A real scan cancelled as soon as it is recorded (as a stop past its grace does)."""
    task = asyncio.current_task()
    assert task is not None
    async with sessionmaker() as session:
        scanner = BackupScanner(session, clock=clock, on_start=lambda _id: task.cancel())
        with pytest.raises(asyncio.CancelledError):
            await scanner.scan_all_jobs()
        # Python 3.11: undo our own cancel() so that this test goes on.
        task.uncancel()


async def failed_scan(sessionmaker, clock) -> None:
    """A real scan that fails as a whole, for a reason of its own (not the database's
    absence): a table it reads is missing, as after a botched migration."""
    async with sessionmaker() as session:
        await session.execute(text("ALTER TABLE pings RENAME TO pings_away"))
        await session.commit()
    try:
        with pytest.raises(Exception, match="pings"):
            await scan(sessionmaker, clock)
    finally:
        async with sessionmaker() as session:
            await session.execute(text("ALTER TABLE pings_away RENAME TO pings"))
            await session.commit()


async def test_a_failed_scan_stores_why(sessionmaker, clock, tmp_path):
    make_file(tmp_path / "a" / "x.tar", 100, clock.now)
    await add_job(sessionmaker, clock.now, name="a", source=local(tmp_path / "a"))
    await failed_scan(sessionmaker, clock)
    async with sessionmaker() as session:
        run = (await session.scalars(select(ScanRun))).one()
    assert run.status == "failed" and run.finished_at is not None
    assert run.error.startswith("internal error: ") and "pings" in run.error


async def test_a_cancelled_scan_is_interrupted_not_failed(
    aiohttp_client, database_url, clock, tmp_path
):
    """A scan cancelled at shutdown (past the stop's grace) is `interrupted` with the reason:
    stopping the service is no failure of the scanner, however often it happens."""
    app = create_app(load_settings(database_url=database_url), scheduler=False)
    client = await aiohttp_client(app)
    sessionmaker = app[sessionmaker_key]
    make_file(tmp_path / "a" / "x.tar", 100, clock.now)
    await add_job(sessionmaker, clock.now, name="a", source=local(tmp_path / "a"))
    for _ in range(FAILING_AFTER):
        await cancelled_scan(sessionmaker, clock)
    async with sessionmaker() as session:
        runs = list(await session.scalars(select(ScanRun)))
    assert [(run.status, run.error) for run in runs] == FAILING_AFTER * [
        ("interrupted", "cancelled before the end (the service was stopping)")
    ]
    assert all(run.finished_at is not None for run in runs)
    response = await client.get("/health/ready")
    assert response.status == 200
    assert (await response.json())["checks"]["scanner"] == "ok"
    text_ = await (await client.get("/metrics")).text()
    assert metric(text_, "backup_scanner_consecutive_failures") == 0
    assert metric(text_, "backup_scans_failed_total") == 0


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def test_a_scanner_that_keeps_failing_is_not_ready_and_shows_in_metrics(
    aiohttp_client, database_url, clock, tmp_path
):
    app = create_app(load_settings(database_url=database_url), scheduler=False)
    client = await aiohttp_client(app)
    sessionmaker = app[sessionmaker_key]
    make_file(tmp_path / "a" / "x.tar", 100, clock.now)
    await add_job(sessionmaker, clock.now, name="a", source=local(tmp_path / "a"))

    async def ready() -> tuple[int, dict]:
        response = await client.get("/health/ready")
        return response.status, (await response.json())["checks"]

    async def metrics() -> str:
        response = await client.get("/metrics")
        assert response.status == 200
        return await response.text()

    assert await ready() == (200, {"database": "ok", "scheduler": "disabled", "scanner": "ok"})
    await scan(sessionmaker, clock)
    for _ in range(2):
        await failed_scan(sessionmaker, clock)
    assert (await ready())[0] == 200  # two failures may be bad luck
    text = await metrics()
    assert metric(text, "backup_scanner_consecutive_failures") == 2
    assert metric(text, "backup_scans_failed_total") == 2
    assert metric(text, "backup_last_scan_timestamp_seconds") == clock.now.timestamp()

    clock.advance(minutes=1)
    await failed_scan(sessionmaker, clock)
    status, checks = await ready()
    assert status == 503
    assert checks == {
        "database": "ok", "scheduler": "disabled",
        "scanner": "failing: the last 3 scans failed (see GET /api/v1/scans)",
    }  # fmt: skip
    text = await metrics()
    assert metric(text, "backup_scanner_consecutive_failures") == 3
    # The last scan that worked is a minute old: failed ones do not make the scanner look alive.
    assert (
        metric(text, "backup_last_scan_timestamp_seconds")
        == (clock.now - timedelta(minutes=1)).timestamp()
    )

    await scan(sessionmaker, clock)
    assert await ready() == (200, {"database": "ok", "scheduler": "disabled", "scanner": "ok"})
    assert metric(await metrics(), "backup_scanner_consecutive_failures") == 0


# --- item 5: a scan whose process died -----------------------------------------------------------


async def add_run(sessionmaker, started, heartbeat=None, status="running") -> int:
    async with sessionmaker() as session:
        run = ScanRun(
            trigger="test", status=status, started_at=started, heartbeat_at=heartbeat,
            finished_at=None if status == "running" else started, error_details=[],
        )  # fmt: skip
        session.add(run)
        await session.commit()
        return run.id


async def test_running_scans_without_a_sign_of_life_for_the_lease_are_closed(sessionmaker, clock):
    now = clock.now
    live = await add_run(sessionmaker, now - 2 * HOUR, heartbeat=now - timedelta(minutes=1))
    just_live = await add_run(sessionmaker, now - 2 * HOUR, heartbeat=now - LEASE)
    dead = await add_run(sessionmaker, now - 2 * HOUR, heartbeat=now - LEASE - timedelta(seconds=1))
    young = await add_run(sessionmaker, now - timedelta(minutes=1))  # no beat yet
    old = await add_run(sessionmaker, now - HOUR)  # never beat: written before 0005, or killed
    done = await add_run(sessionmaker, now - 3 * HOUR, status="finished")
    async with sessionmaker() as session:
        closed = await close_abandoned(session, now)
        await session.commit()
    assert sorted(closed) == sorted([dead, old])
    async with sessionmaker() as session:
        runs = {run.id: run for run in await session.scalars(select(ScanRun))}
    assert {run_id: runs[run_id].status for run_id in runs} == {
        live: "running", just_live: "running", dead: "abandoned", young: "running",
        old: "abandoned", done: "finished",
    }  # fmt: skip
    # Closed at its last sign of life, saying why.
    assert runs[dead].finished_at == now - LEASE - timedelta(seconds=1)
    assert runs[old].finished_at == now - HOUR
    assert runs[dead].error == abandoned_error()
    assert "no sign of life" in runs[dead].error and "5 min" in runs[dead].error
    # Nothing left to close.
    async with sessionmaker() as session:
        assert await close_abandoned(session, now) == []


async def test_a_running_scan_keeps_its_heartbeat_moving(engine, sessionmaker, clock):
    run_id = await add_run(sessionmaker, clock.now)
    beating = asyncio.create_task(keep_alive(engine, run_id, clock, every=0.01))

    async def heartbeat() -> datetime | None:
        async with sessionmaker() as session:
            return await session.scalar(select(ScanRun.heartbeat_at).where(ScanRun.id == run_id))

    try:
        for _ in range(2):
            clock.advance(minutes=10)
            async with asyncio.timeout(10):
                for _attempt in itertools.count():  # polled: the beat is another connection's
                    if await heartbeat() == clock.now:
                        break
                    await asyncio.sleep(0.01)
            # However long the scan has run, it is alive: no later scan closes it.
            async with sessionmaker() as session:
                assert await close_abandoned(session, clock.now) == []
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)


# A `scan` that stops itself (SIGSTOP) once its run is committed, as the CLI's scan would run:
# killed there, it is deterministically a scan that died mid-way, whatever the machine's load.
STOPPED_SCAN = """
import asyncio, os, signal
from service.db.engine import create_engine, create_sessionmaker
from service.scanner.scanner import run_scanner

def stop_here(run_id: int) -> None:
    print(run_id, flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)

async def main() -> None:
    engine = create_engine(os.environ["DATABASE_URL"])
    async with create_sessionmaker(engine)() as session:
        await run_scanner(session, trigger="cli", on_start=stop_here)

asyncio.run(main())
"""


async def test_a_scan_killed_with_sigkill_is_closed_by_a_later_scan_only_after_its_lease(
    database_url, sessionmaker, base_env, clock, tmp_path
):
    backups = tmp_path / "many"
    backups.mkdir()
    for index in range(10):
        (backups / f"f{index:05}").touch()
    await add_job(sessionmaker, clock.now - HOUR, name="many", source=local(backups))
    env = dict(base_env, DATABASE_URL=database_url, AUTO_MIGRATE="false")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STOPPED_SCAN, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            line = await process.stdout.readline()
        # Printed right before it stops itself: it gets no further than its committed run.
        assert line.strip().isdigit(), line
        process.send_signal(signal.SIGKILL)
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == -signal.SIGKILL
    async with sessionmaker() as session:
        killed = (await session.scalars(select(ScanRun))).one()
    assert killed.status == "running"  # it had not got past the lock: it died mid-scan

    # A scan right now leaves it alone: it could be another replica's, alive.
    first = await scan(sessionmaker, clock)
    async with sessionmaker() as session:
        assert (await session.get(ScanRun, killed.id)).status == "running"
    # Once its lease has run out without a heartbeat, the next scan closes it.
    clock.advance(seconds=LEASE.total_seconds() + 60)
    second = await scan(sessionmaker, clock)
    async with sessionmaker() as session:
        runs = {run.id: run for run in await session.scalars(select(ScanRun))}
    assert runs[killed.id].status == "abandoned"
    assert runs[killed.id].error == abandoned_error()
    assert runs[killed.id].finished_at == runs[killed.id].started_at  # it never beat
    assert (runs[first.scan_id].status, runs[second.scan_id].status) == ("finished", "finished")
