"""The scanner against real directories and a real database (PostgreSQL and SQLite)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from service.core.jobspec import parse_job
from service.core.scan_options import ScanOptions
from service.db.models import Artifact, JobCheck, NotificationEvent, ScanRun
from service.scanner.scanner import BackupScanner, run_scanner
from service.scanner.sources import Listing
from service.settings import get_settings

from tests.support import add_job, get_job, make_file

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def local(path: Path, **extra: object) -> dict[str, object]:
    return {"type": "local", "path": str(path), **extra}


async def scan(sessionmaker, clock, **options):
    async with sessionmaker() as session:
        return await BackupScanner(session, clock=clock, trigger="test", **options).scan_all_jobs()


async def artifacts(sessionmaker, include_gone: bool = False) -> list[Artifact]:
    async with sessionmaker() as session:
        query = select(Artifact).order_by(Artifact.path, Artifact.id)
        if not include_gone:
            query = query.where(Artifact.gone_since.is_(None))
        return list((await session.scalars(query)).all())


async def test_incremental_scan_records_new_changed_and_gone(sessionmaker, clock, tmp_path):
    backups = tmp_path / "db"
    for day in range(1, 4):
        make_file(backups / f"dump-{day}.sql.gz", 1000 + day, clock.now - day * DAY)
    await add_job(
        sessionmaker, clock.now - 10 * DAY, name="db", source=local(backups, pattern="*.sql.gz")
    )

    first = await scan(sessionmaker, clock)
    assert [(j.name, j.status, j.new) for j in first.jobs] == [("db", "ok", 3)]
    before = {a.path: (a.id, a.size, a.mtime, a.first_seen) for a in await artifacts(sessionmaker)}
    assert sorted(before) == ["dump-1.sql.gz", "dump-2.sql.gz", "dump-3.sql.gz"]

    clock.advance(hours=1)
    second = await scan(sessionmaker, clock)
    assert (second.jobs[0].new, second.jobs[0].changed, second.jobs[0].gone) == (0, 0, 0)
    after = {a.path: (a.id, a.size, a.mtime, a.first_seen) for a in await artifacts(sessionmaker)}
    assert after == before  # nothing rewritten

    clock.advance(hours=1)
    make_file(backups / "dump-1.sql.gz", 5000, clock.now - timedelta(minutes=1))  # changed
    (backups / "dump-3.sql.gz").unlink()  # gone
    make_file(backups / "dump-0.sql.gz", 1200, clock.now)  # new
    third = await scan(sessionmaker, clock)
    assert (third.jobs[0].new, third.jobs[0].changed, third.jobs[0].gone) == (1, 1, 1)

    rows = {a.path: a for a in await artifacts(sessionmaker, include_gone=True)}
    assert rows["dump-1.sql.gz"].size == 5000
    # first_seen survives a change of size: it is when the artifact was first listed.
    assert rows["dump-1.sql.gz"].first_seen == before["dump-1.sql.gz"][3] == clock.now - 2 * HOUR
    assert rows["dump-1.sql.gz"].last_seen == clock.now
    assert rows["dump-3.sql.gz"].last_seen == clock.now - HOUR  # the last scan that saw it
    assert rows["dump-3.sql.gz"].gone_since == clock.now
    assert rows["dump-0.sql.gz"].first_seen == clock.now

    # A file re-created under a vanished name is a new artifact; the old one keeps its history.
    make_file(backups / "dump-3.sql.gz", 10, clock.now)
    clock.advance(minutes=1)
    await scan(sessionmaker, clock)
    dump3 = [
        a for a in await artifacts(sessionmaker, include_gone=True) if a.path == "dump-3.sql.gz"
    ]
    assert len(dump3) == 2
    assert sorted(a.gone_since is None for a in dump3) == [False, True]

    async with sessionmaker() as session:
        runs = (await session.scalars(select(ScanRun).order_by(ScanRun.id))).all()
    assert [(r.artifacts_new, r.artifacts_changed, r.artifacts_gone) for r in runs] == [
        (3, 0, 0), (0, 0, 0), (1, 1, 1), (1, 0, 0),
    ]  # fmt: skip
    assert all(r.status == "finished" and r.finished_at is not None for r in runs)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_rescan_of_unchanged_tree_rewrites_no_artifact_row(sessionmaker, clock, tmp_path):
    """PostgreSQL's xmin changes whenever a row is rewritten: it must not."""
    for job in range(3):
        for day in range(5):
            make_file(tmp_path / f"j{job}" / f"f{day}", 100 + day, clock.now - day * DAY)
        await add_job(sessionmaker, clock.now, name=f"j{job}", source=local(tmp_path / f"j{job}"))
    await scan(sessionmaker, clock)
    query = text("SELECT id, xmin::text FROM artifacts ORDER BY id")
    async with sessionmaker() as session:
        before = (await session.execute(query)).all()
    clock.advance(minutes=15)
    await scan(sessionmaker, clock)
    async with sessionmaker() as session:
        after = (await session.execute(query)).all()
    assert len(before) == 15
    assert after == before


async def test_status_changes_are_recorded_once(sessionmaker, clock, tmp_path):
    backups = tmp_path / "b"
    make_file(backups / "a.tar", 100, clock.now - timedelta(hours=1))
    await add_job(
        sessionmaker, clock.now - 10 * DAY, name="hourly", source=local(backups),
        schedule={"every": "1d"}, grace="1h",
    )  # fmt: skip
    await scan(sessionmaker, clock)
    clock.advance(hours=2)
    await scan(sessionmaker, clock)  # still ok: no new history row
    clock.advance(days=1)
    await scan(sessionmaker, clock)  # late
    clock.advance(hours=1)
    await scan(sessionmaker, clock)  # still late: no new history row

    async with sessionmaker() as session:
        checks = (await session.scalars(select(JobCheck).order_by(JobCheck.id))).all()
    assert [(c.previous_status, c.status) for c in checks] == [
        ("pending", "ok"),
        ("ok", "critical"),
    ]
    assert checks[1].reasons[0]["code"] == "late"
    assert checks[1].latest_artifact["path"] == "a.tar"
    job = await get_job(sessionmaker, "hourly")
    assert job.status == "critical"
    assert job.status_changed_at == clock.now - timedelta(hours=1)
    assert job.checked_at == clock.now


async def test_broken_source_is_unknown_and_other_jobs_unaffected(sessionmaker, clock, tmp_path):
    good = tmp_path / "good"
    make_file(good / "x.tar", 100, clock.now)
    not_a_dir = make_file(tmp_path / "file", 1, clock.now)
    await add_job(sessionmaker, clock.now, name="good", source=local(good))
    await add_job(sessionmaker, clock.now, name="missing", source=local(tmp_path / "nope"))
    await add_job(sessionmaker, clock.now, name="notdir", source=local(not_a_dir))

    report = await scan(sessionmaker, clock)
    by_name = {job.name: job for job in report.jobs}
    assert by_name["good"].status == "ok"
    assert by_name["missing"].status == "unknown"
    missing_reason = by_name["missing"].reasons[0]
    assert missing_reason["code"] == "source_error"
    assert "No such file or directory" in missing_reason["message"]
    assert str(tmp_path / "nope") in missing_reason["message"]
    assert by_name["notdir"].status == "unknown"
    assert "not a directory" in by_name["notdir"].reasons[0]["message"]

    async with sessionmaker() as session:
        run = await session.scalar(select(ScanRun))
    assert run is not None and run.errors == 2 and run.jobs_scanned == 3
    assert {d["job"] for d in run.error_details} == {"missing", "notdir"}

    # The directory comes back: the job recovers on the next scan, nothing was lost.
    make_file(tmp_path / "nope" / "y.tar", 100, clock.now)
    report = await scan(sessionmaker, clock)
    assert {job.name: job.status for job in report.jobs}["missing"] == "ok"


async def test_source_error_keeps_known_inventory(sessionmaker, clock, tmp_path):
    """A mount that disappears must not mark every artifact as gone."""
    backups = tmp_path / "mnt"
    make_file(backups / "a.tar", 100, clock.now)
    await add_job(sessionmaker, clock.now, name="nfs", source=local(backups))
    await scan(sessionmaker, clock)
    backups.rename(tmp_path / "unmounted")
    await scan(sessionmaker, clock)
    job = await get_job(sessionmaker, "nfs")
    assert job.status == "unknown"
    assert job.artifact_count == 1
    assert job.latest_artifact is not None and job.latest_artifact["path"] == "a.tar"
    assert [a.gone_since for a in await artifacts(sessionmaker)] == [None]


async def test_awkward_files(sessionmaker, clock, tmp_path):
    """0-byte file, a non-UTF-8 name, symlink loops, links out of the source, a directory loop."""
    backups = tmp_path / "awkward"
    outside = make_file(tmp_path / "outside" / "secret.tar", 999, clock.now)
    make_file(backups / "good.tar", 100, clock.now - timedelta(hours=2))
    make_file(backups / "empty.tar", 0, clock.now - timedelta(hours=1))
    raw_name = os.path.join(os.fsencode(backups), b"caf\xe9-\xff.tar")
    with open(raw_name, "wb") as handle:
        handle.write(b"12345")
    os.utime(raw_name, (clock.now.timestamp() - 7200,) * 2)
    os.symlink("loop-b.tar", backups / "loop-a.tar")
    os.symlink("loop-a.tar", backups / "loop-b.tar")
    os.symlink(outside, backups / "escape.tar")
    os.symlink("good.tar", backups / "inside-link.tar")
    os.symlink("/nonexistent/target", backups / "dangling.tar")
    (backups / "sub").mkdir()
    make_file(backups / "sub" / "deep.tar", 50, clock.now - timedelta(hours=3))
    os.symlink("..", backups / "sub" / "up")  # a directory loop for a recursive walk
    await add_job(
        sessionmaker, clock.now, name="awkward", source=local(backups, recursive=True),
        rules={"min_count": 1},
    )  # fmt: skip

    report = await scan(sessionmaker, clock)
    paths = sorted(a.path for a in await artifacts(sessionmaker))
    assert paths == [
        "caf\\xe9-\\xff.tar", "empty.tar", "good.tar", "inside-link.tar", "sub/deep.tar",
    ]  # fmt: skip
    job = report.jobs[0]
    assert job.status == "critical"
    assert [r["code"] for r in job.reasons] == ["too_small"]
    assert "empty.tar is empty" in job.reasons[0]["message"]

    # The undecodable name has a stable identity: a rescan finds nothing new.
    clock.advance(minutes=5)
    report = await scan(sessionmaker, clock)
    assert (report.jobs[0].new, report.jobs[0].changed, report.jobs[0].gone) == (0, 0, 0)


async def test_one_failing_job_does_not_roll_back_the_others(sessionmaker, clock, tmp_path):
    """A real database error in one job's transaction; the other jobs are committed."""
    for name in ("a-first", "b-poisoned", "c-last"):
        make_file(tmp_path / name / f"{name}.tar", 100, clock.now)
        await add_job(sessionmaker, clock.now, name=name, source=local(tmp_path / name))
    async with sessionmaker() as session:
        dialect = session.bind.dialect.name
        if dialect == "postgresql":
            await session.execute(text("""
                CREATE FUNCTION poison() RETURNS trigger AS $$
                BEGIN RAISE EXCEPTION 'poisoned artifact %', NEW.path; END $$ LANGUAGE plpgsql
            """))  # fmt: skip
            await session.execute(text("""
                CREATE TRIGGER poison BEFORE INSERT ON artifacts FOR EACH ROW
                WHEN (NEW.path = 'b-poisoned.tar') EXECUTE FUNCTION poison()
            """))  # fmt: skip
        else:
            await session.execute(text("""
                CREATE TRIGGER poison BEFORE INSERT ON artifacts
                WHEN NEW.path = 'b-poisoned.tar'
                BEGIN SELECT RAISE(ABORT, 'poisoned artifact'); END
            """))  # fmt: skip
        await session.commit()

    report = await scan(sessionmaker, clock)
    assert {job.name: job.status for job in report.jobs} == {
        "a-first": "ok", "b-poisoned": "unknown", "c-last": "ok",
    }  # fmt: skip
    assert "poisoned artifact" in report.jobs[1].reasons[0]["message"]
    assert sorted(a.path for a in await artifacts(sessionmaker)) == ["a-first.tar", "c-last.tar"]
    assert (await get_job(sessionmaker, "b-poisoned")).status == "pending"  # rolled back
    async with sessionmaker() as session:
        run = await session.scalar(select(ScanRun))
        await session.execute(
            text("DROP TRIGGER poison" + (" ON artifacts" if dialect == "postgresql" else ""))
        )
        await session.commit()
    assert run is not None and run.errors == 1 and run.status == "finished"

    report = await scan(sessionmaker, clock)
    assert {job.name: job.status for job in report.jobs}["b-poisoned"] == "ok"


async def test_stop_event_finishes_current_job_then_stops(sessionmaker, clock, tmp_path):
    for name in ("a", "b"):
        make_file(tmp_path / name / "f.tar", 1, clock.now)
        await add_job(sessionmaker, clock.now, name=name, source=local(tmp_path / name))
    stop = asyncio.Event()
    stop.set()
    report = await scan(sessionmaker, clock, stop=stop)
    assert report.status == "interrupted"
    assert report.jobs == []
    async with sessionmaker() as session:
        run = await session.scalar(select(ScanRun))
    assert run is not None and run.status == "interrupted" and run.finished_at is not None


async def test_a_big_scan_walks_in_walker_processes(sessionmaker, clock, tmp_path, monkeypatch):
    """From MIN_SOURCES jobs on, the walks run in walker processes: the same artifacts, the
    same verdicts, a rescan that finds nothing new (the walkers send only a summary of each
    listing still the one synced), a changed file synced; a job's broken source is its own."""
    from service.scanner.sources import walk_process

    started: list[walk_process.Walker] = []
    start = walk_process.WalkerPool._start
    summarized: list[bool] = []  # each listing the walkers sent (in no set order): a summary?
    answer = walk_process.Walker.result

    async def counted(pool: walk_process.WalkerPool) -> walk_process.Walker:
        started.append(await start(pool))
        return started[-1]

    async def result(walker: walk_process.Walker, label: str, limit: float) -> object:
        listed = await answer(walker, label, limit)
        if isinstance(listed, Listing):
            summarized.append(listed.summarized)
        return listed

    monkeypatch.setattr(walk_process.WalkerPool, "_start", counted)
    monkeypatch.setattr(walk_process.Walker, "result", result)
    jobs = walk_process.MIN_SOURCES + 6
    for index in range(jobs):
        directory = tmp_path / f"job-{index:03d}"
        make_file(directory / "old.tar", 100, clock.now - 2 * DAY)
        make_file(directory / "new.tar", 100 + index, clock.now - HOUR)
        await add_job(sessionmaker, clock.now, name=f"job-{index:03d}", source=local(directory))
    older = 14  # job-003 keeps more files than a summary holds: its count and times count
    for day in range(older):
        make_file(tmp_path / "job-003" / f"older-{day:02d}.tar", 100, clock.now - (3 + day) * DAY)
    await add_job(sessionmaker, clock.now, name="zz-missing", source=local(tmp_path / "nowhere"))

    first = await scan(sessionmaker, clock)
    assert started  # the walks ran in walker processes
    assert [(j.name, j.status, j.new) for j in first.jobs[:2]] == [
        ("job-000", "ok", 2), ("job-001", "ok", 2),
    ]  # fmt: skip
    assert sum(j.new for j in first.jobs) == 2 * jobs + older
    assert [j.status for j in first.jobs].count("ok") == jobs
    assert first.jobs[-1].status == "unknown" and "nowhere" in (first.jobs[-1].error or "")
    latest = (await get_job(sessionmaker, "job-005")).latest_artifact
    assert latest is not None and latest["path"] == "new.tar" and latest["size"] == 105
    async with sessionmaker() as session:  # on PostgreSQL written on two lanes: each job once
        checks = (await session.execute(text("SELECT job_id FROM job_checks"))).scalars().all()
        stored = (await session.execute(text("SELECT count(*) FROM artifacts"))).scalar_one()
    assert len(checks) == len(set(checks)) == jobs + 1
    assert stored == 2 * jobs + older

    assert summarized == [False] * jobs

    summarized.clear()
    clock.advance(minutes=5)
    again = await scan(sessionmaker, clock)
    assert sum(j.new + j.changed + j.gone for j in again.jobs) == 0
    assert summarized == [True] * jobs
    assert [(j.name, j.status, j.artifact_count) for j in again.jobs] == [
        (j.name, j.status, j.artifact_count) for j in first.jobs
    ]
    assert (await get_job(sessionmaker, "job-003")).artifact_count == 2 + older
    assert (await get_job(sessionmaker, "job-005")).latest_artifact == latest
    assert all(walker.process.returncode is not None for walker in started)  # ended with the scan

    summarized.clear()
    make_file(tmp_path / "job-007" / "new.tar", 999, clock.now - HOUR)
    clock.advance(minutes=5)
    third = await scan(sessionmaker, clock)
    assert [(j.name, j.changed) for j in third.jobs if j.new + j.changed + j.gone] == [
        ("job-007", 1)
    ]
    assert sorted(summarized) == [False] + [True] * (jobs - 1)  # job-007's, whole
    latest = (await get_job(sessionmaker, "job-007")).latest_artifact
    assert latest is not None and latest["size"] == 999


async def test_modification_times_are_stored_to_the_microsecond_over_the_whole_range(
    sessionmaker, clock, tmp_path
):
    """Every mtime a date holds is stored exactly (no float on the way: a far-future time off by
    a microsecond would read as a changed file at every scan)."""
    backups = tmp_path / "times"
    wanted = {  # microseconds since the epoch
        "old.tar": -62_135_510_399_999_999,  # 0001-01-02, and a microsecond
        "before-1970.tar": -1_234_567,
        "now.tar": 1_700_000_000_123_457,
        "far.tar": 9_007_199_254_740_993,  # 2^53 + 1: a double cannot hold it
        "last.tar": 253_402_041_599_999_999,  # 9999-12-28 23:59:59.999999
    }
    kept = {}
    for name, microseconds in wanted.items():
        path = make_file(backups / name, 10, clock.now)
        os.utime(path, ns=(microseconds * 1000, microseconds * 1000))
        if path.stat().st_mtime_ns == microseconds * 1000:  # what this filesystem keeps
            kept[name] = microseconds
    assert {"before-1970.tar", "now.tar", "far.tar"} <= set(kept)
    await add_job(sessionmaker, clock.now, name="times", source=local(backups))

    first = await scan(sessionmaker, clock)
    assert first.jobs[0].new == len(wanted)
    epoch = datetime(1970, 1, 1, tzinfo=clock.now.tzinfo)
    stored = {
        a.path: (a.mtime - epoch) // timedelta(microseconds=1)
        for a in await artifacts(sessionmaker)
    }
    assert {name: stored[name] for name in kept} == kept
    clock.advance(minutes=5)
    again = await scan(sessionmaker, clock)
    assert (again.jobs[0].new, again.jobs[0].changed, again.jobs[0].gone) == (0, 0, 0)


async def test_jobs_are_read_in_pieces_each_once_in_name_order(sessionmaker, clock, monkeypatch):
    from service.scanner import writer

    monkeypatch.setattr(writer, "JOBS_PIECE", 2)
    names = ["e", "a", "d", "b", "c"]
    for name in names:
        await add_job(sessionmaker, clock.now, name=name)
    async with sessionmaker() as session:
        pieces = [piece async for piece in writer.job_pieces(session)]
    assert [len(piece) for piece in pieces] == [2, 2, 1]
    jobs = [job for piece in pieces for job in piece]
    assert [job.name for job in jobs] == sorted(names)


async def test_a_job_read_for_a_scan_holds_its_declaration_exactly(sessionmaker, clock):
    """The declaration is read as JSON text (the key of its validated JobSpec): decoded, it is
    the declaration stored, every field (text that JSON must escape, integer, boolean, JSON,
    null)."""
    from service.scanner.pipeline import job_spec

    declared = parse_job({
        "name": "db-main", "description": 'a "quoted" line\nbreak \u00e9\u2603 \\',
        "tags": ["db", "prod"],
        "source": {"type": "local", "path": "/backups/db", "pattern": "*.sql.gz",
                   "exclude": ["*.tmp"], "settle": "5m"},
        "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Paris"}, "grace": "1h30m",
        "rules": {"min_size": "1MiB", "max_size_drop": "50%"}, "paused": True,
        "verify": {"archive": True},
    })  # fmt: skip
    await add_job(sessionmaker, clock.now, **{"name": declared.name, **declared.declaration()})
    async with sessionmaker() as session:
        [job] = await _all_jobs(session)
    assert job.declaration == {"name": declared.name, **declared.declaration()}
    assert job.declaration["retention"] is None and job.declaration["paused"] is True
    assert job_spec(job) == declared


async def test_a_first_scan_stores_every_file_once_across_array_rows_and_pieces(
    sessionmaker, clock, tmp_path, monkeypatch
):
    """New artifacts go to PostgreSQL as two-dimensional arrays padded with NULLs (as_matrix),
    INSERT_PIECE rows a statement: with pieces and array rows that do not fall evenly (3 jobs of
    257, 1 and 300 files; 100 rows a statement, arrays of rows of 7), each file is stored once,
    with its size and time, and no padding becomes a row."""
    from service.scanner import writer

    monkeypatch.setattr(writer, "INSERT_PIECE", 100)
    monkeypatch.setattr(writer, "MATRIX_WIDTH", 7)
    expected = {}
    for name, count in (("a", 257), ("b", 1), ("c", 300)):
        for index in range(count):
            moment = (clock.now - timedelta(minutes=index)).replace(microsecond=0)
            make_file(tmp_path / name / f"{index:04d}.tar", index + 1, moment)
            expected[(name, f"{index:04d}.tar")] = (index + 1, moment)
        await add_job(sessionmaker, clock.now, name=name, source=local(tmp_path / name))
    report = await scan(sessionmaker, clock)
    assert [(job.name, job.new) for job in report.jobs] == [("a", 257), ("b", 1), ("c", 300)]
    async with sessionmaker() as session:
        names = dict((await session.execute(text("SELECT id, name FROM jobs"))).all())
    stored = {(names[a.job_id], a.path): (a.size, a.mtime) for a in await artifacts(sessionmaker)}
    assert len(await artifacts(sessionmaker)) == len(expected) == 558
    assert stored == expected


async def test_heartbeat_job_without_source(sessionmaker, clock):
    await add_job(sessionmaker, clock.now - 3 * DAY, name="pushed", schedule={"every": "1d"})
    await add_job(sessionmaker, clock.now, name="fresh", schedule={"every": "1d"})
    report = await scan(sessionmaker, clock)
    statuses = {job.name: (job.status, [r["code"] for r in job.reasons]) for job in report.jobs}
    assert statuses == {"pushed": ("critical", ["missing"]), "fresh": ("pending", [])}


UNREADABLE_JOBS = """
jobs:
  - name: locked-root
    source: {type: local, path: %(root)s/locked}
    schedule: {every: 1d}
  - name: locked-sub
    source: {type: local, path: %(root)s/partial, recursive: true}
    schedule: {every: 1d}
  - name: fine
    source: {type: local, path: %(root)s/fine}
    schedule: {every: 1d}
"""


def test_unreadable_directories_without_root_privileges(tmp_path):
    """Root reads everything; `setpriv` drops the capabilities that bypass file permissions,
    so the real CLI meets real EACCES on directories owned by nobody."""
    import json
    import pwd
    import shutil
    import sqlite3
    import subprocess
    import sys

    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv (util-linux) to drop the DAC capabilities")
    nobody = pwd.getpwnam("nobody").pw_uid
    root = tmp_path
    for name in ("locked/a.tar", "partial/ok.tar", "partial/sub/b.tar", "fine/c.tar"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"data")
    (root / "jobs.yml").write_text(UNREADABLE_JOBS % {"root": root})
    database = root / "bm.db"
    env = dict(os.environ, DATABASE_URL=f"sqlite+aiosqlite:///{database}")

    def cli(*args: str, unprivileged: bool = True) -> subprocess.CompletedProcess[str]:
        command = [sys.executable]
        if unprivileged:
            command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
        return subprocess.run(
            [*command, "-m", "service", *args], env=env, cwd=root,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    applied = cli("jobs", "apply", str(root / "jobs.yml"))
    assert applied.returncode == 0, applied.stderr
    # First, everything readable: every file is known.
    first = cli("scan", "--format", "json", unprivileged=False)
    assert first.returncode == 0, first.stdout + first.stderr
    for locked in (root / "locked", root / "partial" / "sub"):
        os.chown(locked, nobody, -1)
        locked.chmod(0o700)
    result = cli("scan", "--format", "json")
    assert result.returncode == 3, result.stderr  # unknown, nothing worse
    jobs = {job["name"]: job for job in json.loads(result.stdout)["jobs"]}
    assert jobs["fine"]["status"] == "ok"
    assert jobs["locked-root"]["status"] == "unknown"
    assert "Permission denied" in jobs["locked-root"]["reasons"][0]["message"]
    assert jobs["locked-sub"]["status"] == "unknown"
    assert "Permission denied" in jobs["locked-sub"]["reasons"][0]["message"]
    assert jobs["locked-sub"]["artifact_count"] == 1  # what could be read was read
    # Nothing the listing could not see was marked gone.
    with sqlite3.connect(database) as connection:
        gone = connection.execute("SELECT count(*) FROM artifacts WHERE gone_since IS NOT NULL")
        assert gone.fetchone()[0] == 0
        present = connection.execute("SELECT count(*) FROM artifacts").fetchone()[0]
    assert present == 4


async def test_concurrent_scans_of_the_same_jobs(sessionmaker, clock, tmp_path):
    """Two scanners at once (a CLI scan during a scheduled one, or two replicas): no error,
    every artifact recorded exactly once."""
    for job in range(4):
        for index in range(50):
            make_file(tmp_path / f"j{job}" / f"f{index:03d}", 100 + index, clock.now)
        await add_job(sessionmaker, clock.now, name=f"j{job}", source=local(tmp_path / f"j{job}"))

    first, second = await asyncio.gather(scan(sessionmaker, clock), scan(sessionmaker, clock))
    for report in (first, second):
        assert report.status == "finished"
        assert all(job.error is None for job in report.jobs), [j.error for j in report.jobs]
    present = await artifacts(sessionmaker)
    assert len(present) == 200
    assert len({(a.job_id, a.path) for a in present}) == 200
    final = await scan(sessionmaker, clock)
    assert {job.status for job in final.jobs} == {"ok"}
    assert sum(job.new + job.changed + job.gone for job in final.jobs) == 0


async def test_source_moved_outside_scan_roots_after_declaration(sessionmaker, clock, tmp_path):
    """SCAN_ROOTS are enforced at every scan, with symlinks resolved at that moment."""
    root = tmp_path / "roots"
    make_file(root / "db" / "a.tar", 10, clock.now)
    make_file(tmp_path / "elsewhere" / "b.tar", 10, clock.now)
    await add_job(sessionmaker, clock.now, name="db", source=local(root / "db"))
    report = await scan(sessionmaker, clock, scan_roots=[root])
    assert report.jobs[0].status == "ok"

    (root / "db" / "a.tar").unlink()
    (root / "db").rmdir()
    os.symlink(tmp_path / "elsewhere", root / "db")
    report = await scan(sessionmaker, clock, scan_roots=[root])
    job = report.jobs[0]
    assert job.status == "unknown"
    assert "outside SCAN_ROOTS" in job.reasons[0]["message"]
    assert [a.path for a in await artifacts(sessionmaker)] == ["a.tar"]  # nothing marked gone


async def _many_jobs(sessionmaker, clock, tmp_path, count):
    for index in range(count):
        make_file(tmp_path / f"m{index}" / "a.tar", 10, clock.now)
        await add_job(
            sessionmaker, clock.now, name=f"m{index:04d}", source=local(tmp_path / f"m{index}")
        )


async def test_stop_in_the_middle_of_a_scan_returns_promptly(sessionmaker, clock, tmp_path):
    """Stopping while listings wait in the queue: the scan ends (no deadlock) and says so."""
    await _many_jobs(sessionmaker, clock, tmp_path, 300)
    stop = asyncio.Event()

    async def stop_once_some_jobs_are_written():
        while True:
            async with sessionmaker() as session:
                written = await session.scalar(text("SELECT count(*) FROM job_checks"))
            if written:
                stop.set()
                return
            await asyncio.sleep(0.005)

    stopper = asyncio.create_task(stop_once_some_jobs_are_written())
    report = await asyncio.wait_for(scan(sessionmaker, clock, stop=stop), timeout=30)
    await stopper
    assert report.status in ("interrupted", "finished")
    async with sessionmaker() as session:
        run = await session.scalar(select(ScanRun))
    assert run is not None
    assert run.status == report.status
    assert run.jobs_scanned == len(report.jobs)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_database_lost_mid_scan_ends_the_scan(database_url, clock, tmp_path):
    """The connection dies mid-scan: the scan raises promptly instead of hanging."""
    from sqlalchemy.engine import make_url

    from service.db.engine import create_engine, create_sessionmaker

    from tests.support import TcpProxy

    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    engine = create_engine(proxied)
    sessionmaker = create_sessionmaker(engine)
    try:
        await _many_jobs(sessionmaker, clock, tmp_path, 300)

        async def cut_once_some_jobs_are_written():
            while True:
                async with sessionmaker() as session:
                    written = await session.scalar(text("SELECT count(*) FROM job_checks"))
                if written:
                    await proxy.cut()
                    return
                await asyncio.sleep(0.005)

        cutter = asyncio.create_task(cut_once_some_jobs_are_written())
        with pytest.raises(Exception):  # noqa: B017,PT011 - whatever the driver raises
            await asyncio.wait_for(scan(sessionmaker, clock), timeout=30)
        await cutter
    finally:
        await proxy.cut()
        await engine.dispose()


async def test_a_scan_never_writes_over_a_fresher_one(sessionmaker, clock, tmp_path):
    """Replica A reads the jobs, replica B scans and writes, then A would write its stale view:
    A skips those jobs, so the history holds each change once."""
    await _many_jobs(sessionmaker, clock, tmp_path, 3)
    async with sessionmaker() as session:
        stale = await _all_jobs(session)
    await scan(sessionmaker, clock)  # replica B
    clock.advance(seconds=5)
    async with sessionmaker() as session:
        late = BackupScanner(session, clock=clock, trigger="test")
        results = []
        await late._pipeline(_one_piece(stale), results)  # replica A, as read before B wrote
    async with sessionmaker() as session:
        changes = (await session.execute(text("SELECT job_id, status FROM job_checks"))).all()
        checked = set((await session.execute(text("SELECT checked_at FROM jobs"))).scalars())
    assert len(changes) == 3  # one pending -> ok per job, not two
    assert len(checked) == 1  # B's time: A did not overwrite


async def _one_piece(jobs: list[Any]) -> AsyncGenerator[list[Any], None]:
    yield jobs


async def _all_jobs(session: Any) -> list[Any]:
    """Every job as a scan reads it (its pieces together)."""
    from service.scanner.writer import job_pieces

    return [job async for piece in job_pieces(session) for job in piece]


async def test_names_that_escape_alike_do_not_break_the_job(sessionmaker, clock, tmp_path):
    """A file named a<0xFF>.bak shows as a\\xff.bak, like a file really named so: one is kept."""
    backups = tmp_path / "esc"
    make_file(backups / "a\\xff.bak", 10, clock.now - timedelta(minutes=5))
    raw = os.path.join(os.fsencode(backups), b"a\xff.bak")
    with open(raw, "wb") as handle:
        handle.write(b"12345")
    await add_job(sessionmaker, clock.now, name="esc", source=local(backups))
    for _ in range(2):
        report = await scan(sessionmaker, clock)
        assert report.jobs[0].status == "ok", report.jobs[0].reasons
        assert report.jobs[0].error is None
    assert [a.path for a in await artifacts(sessionmaker)] == ["a\\xff.bak"]


def _write_in_place(path: Path, data: bytes, mtime: datetime) -> None:
    """Append to the file as a dump does (same inode, growing), then set its time."""
    with open(path, "ab") as handle:
        handle.write(data)
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))


async def test_a_backup_being_written_is_judged_once_it_settles(sessionmaker, clock, tmp_path):
    """pg_dump | gzip > db.sql.gz: a scan in the middle of the dump must tell nothing."""
    backups = tmp_path / "db"
    for day in range(1, 4):
        make_file(backups / f"db-{day}.sql.gz", 100 * 1024, clock.now - day * DAY)
    await add_job(
        sessionmaker, clock.now - 10 * DAY, name="db", source=local(backups),
        rules={"min_size": "80KiB", "max_size_drop": 40},
    )  # fmt: skip
    assert [j.status for j in (await scan(sessionmaker, clock)).jobs] == ["ok"]

    tonight = backups / "db-0.sql.gz"
    _write_in_place(tonight, b"x" * 50 * 1024, clock.now - timedelta(seconds=5))
    first = (await scan(sessionmaker, clock)).jobs[0]
    assert (first.status, first.reasons) == ("ok", [])  # no too_small, no size_drop
    job = await get_job(sessionmaker, "db")
    assert job.latest_artifact == {
        "path": "db-0.sql.gz", "size": 50 * 1024,
        "mtime": (clock.now - timedelta(seconds=5)).isoformat(), "being_written": True,
    }  # fmt: skip
    # Judged again once it may have settled, by the deadline tick.
    assert job.next_check_at == clock.now - timedelta(seconds=5) + timedelta(minutes=2)

    # Done, but with a time an hour old (the writer's clock is behind): it changed since the
    # previous listing, so it may still be written.
    finished = clock.advance(minutes=1) - HOUR
    _write_in_place(tonight, b"x" * 50 * 1024, finished)
    second = (await scan(sessionmaker, clock)).jobs[0]
    assert (second.status, second.reasons) == ("ok", [])
    assert (await get_job(sessionmaker, "db")).latest_artifact["being_written"] is True

    clock.advance(minutes=3)  # settled: unchanged since the previous listing, and old enough
    third = (await scan(sessionmaker, clock)).jobs[0]
    assert (third.status, third.reasons) == ("ok", [])
    assert (await get_job(sessionmaker, "db")).latest_artifact == {
        "path": "db-0.sql.gz", "size": 100 * 1024, "mtime": finished.isoformat(),
    }  # fmt: skip
    async with sessionmaker() as session:
        checks = (await session.scalars(select(JobCheck.status))).all()
        notices = (await session.scalars(select(NotificationEvent.kind))).all()
    assert "critical" not in checks and "warning" not in checks
    assert notices == []  # no false alarm, and so no recovery either


async def test_a_backup_still_small_when_settled_is_told(sessionmaker, clock, tmp_path):
    """Settling delays the verdict on a truncated dump; it does not hide it."""
    backups = tmp_path / "db"
    for day in range(1, 4):
        make_file(backups / f"db-{day}.sql.gz", 100 * 1024, clock.now - day * DAY)
    make_file(backups / "db-0.sql.gz", 10 * 1024, clock.now - timedelta(seconds=30))
    await add_job(
        sessionmaker, clock.now - 10 * DAY, name="db", source=local(backups),
        rules={"min_size": "80KiB"},
    )  # fmt: skip
    assert [j.status for j in (await scan(sessionmaker, clock)).jobs] == ["ok"]
    clock.advance(minutes=2)
    result = (await scan(sessionmaker, clock)).jobs[0]
    assert (result.status, [r["code"] for r in result.reasons]) == ("critical", ["too_small"])


@pytest.mark.parametrize(
    ("exclude", "listed"),
    [
        pytest.param(None, ["db-1.sql.gz"], id="default-skips-temporary-names"),
        pytest.param(
            [], [".db-2.sql.gz.Xa1b2", "db-1.sql.gz", "db-2.sql.gz.part", "notes.partial",
                 "x.tmp"], id="empty-list-excludes-nothing",
        ),
        pytest.param(["*.part"], [".db-2.sql.gz.Xa1b2", "db-1.sql.gz", "notes.partial", "x.tmp"],
                     id="given-list-replaces-default"),
    ],
)  # fmt: skip
async def test_temporary_and_dot_files_are_not_artifacts(
    sessionmaker, clock, tmp_path, exclude, listed
):
    backups = tmp_path / "db"
    old = clock.now - HOUR
    for name in ("db-1.sql.gz", "db-2.sql.gz.part", ".db-2.sql.gz.Xa1b2", "x.tmp", "notes.partial"):
        make_file(backups / name, 1000, old)
    source = local(backups) if exclude is None else local(backups, exclude=exclude)
    await add_job(sessionmaker, clock.now - 10 * DAY, name="db", source=source)
    result = (await scan(sessionmaker, clock)).jobs[0]
    assert sorted(a.path for a in await artifacts(sessionmaker)) == listed
    assert result.artifact_count == len(listed)


async def test_run_scanner_takes_scan_options_and_reads_what_they_leave_from_the_settings(
    sessionmaker, clock, tmp_path, monkeypatch
):
    """`run_scanner(session, options)`: a field given wins; one left None is the settings'."""
    make_file(tmp_path / "db" / "a.tar", 10, clock.now)
    await add_job(sessionmaker, clock.now, name="db", source=local(tmp_path / "db"))
    monkeypatch.setenv("SCAN_ROOTS", str(tmp_path / "elsewhere"))
    get_settings.cache_clear()
    try:
        async with sessionmaker() as session:
            report = await run_scanner(session, ScanOptions(clock=clock), trigger="test")
        assert report.jobs[0].status == "unknown"
        assert "outside SCAN_ROOTS" in report.jobs[0].reasons[0]["message"]
        # The options' clock, not the wall's.
        assert (await get_job(sessionmaker, "db")).checked_at == clock.now
        async with sessionmaker() as session:
            options = ScanOptions(scan_roots=(tmp_path,), clock=clock)
            report = await run_scanner(session, options, trigger="test", names=["db"])
        assert report.jobs[0].status == "ok"
    finally:
        get_settings.cache_clear()
