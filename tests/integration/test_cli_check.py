"""`backup-monitor check`: the Nagios/Icinga plugin, run as the real command (a subprocess) on
PostgreSQL and SQLite. By default it reads the stored statuses and writes nothing; `--scan`
scans first. `scan --job NAME` of a name no job has records no scan run either."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from service.core.scan_options import ScanOptions
from service.db.models import Job, ScanRun
from service.scanner.scanner import run_scanner

from tests.support import Result, add_job, cli, make_file


async def table_state(sessionmaker: Any) -> tuple[int, dict[str, dict[str, Any]]]:
    """How many scan runs there are, and every job row's columns: what a write would change."""
    async with sessionmaker() as session:
        runs = await session.scalar(select(func.count()).select_from(ScanRun))
        jobs = (await session.scalars(select(Job))).all()
        rows = {
            job.name: {c.key: getattr(job, c.key) for c in Job.__table__.columns} for job in jobs
        }
        return runs, rows


def perf(out: str) -> dict[str, str]:
    """The performance data: the last line, after `| `."""
    last = out.splitlines()[-1]
    assert last.startswith("| "), out
    items = last[2:].split(" ")
    parsed = dict(re.fullmatch(r"'([^']+)'=(\S+)", item).groups() for item in items)  # type: ignore[union-attr]
    assert len(parsed) == len(items), out
    return parsed


async def test_check_reads_statuses_writes_nothing_and_filters(
    database_url, sessionmaker, base_env, tmp_path
):
    now = datetime.now(UTC).replace(microsecond=0)
    long_ago = now - timedelta(days=30)
    backups = tmp_path / "backups"
    newest = now - timedelta(hours=1)
    make_file(backups / "good" / "good-1.tar", 2048, newest)
    make_file(backups / "thin" / "thin-1.tar", 4096, newest)
    make_file(backups / "broken" / "broken-1.tar", 10, newest)

    def local(name: str) -> dict[str, str]:
        return {"type": "local", "path": str(backups / name)}

    await add_job(sessionmaker, long_ago, name="good", source=local("good"), tags=["db"])
    await add_job(sessionmaker, long_ago, name="thin", source=local("thin"), rules={"min_count": 3})
    await add_job(
        sessionmaker, long_ago, name="broken", source=local("broken"), tags=["db"],
        rules={"min_size": "1KiB"},
    )  # fmt: skip
    await add_job(sessionmaker, long_ago, name="gone", source=local("no-such-dir"))
    await add_job(sessionmaker, now, name="beat")  # a heartbeat job, new: no ping due yet
    async with sessionmaker() as session:
        await run_scanner(session, ScanOptions(), trigger="test")
    before = await table_state(sessionmaker)

    async def check(*args: str) -> Result:
        return await cli("check", *args, env=base_env, database_url=database_url, cwd=tmp_path)

    every, good, db, nope, none, recent, zero = await asyncio.gather(
        check(), check("--job", "good"), check("--tag", "db"), check("--job", "nope"),
        check("--tag", "nothing"), check("--max-age", "60"), check("--max-age", "0"),
    )  # fmt: skip

    assert every.code == 2, every
    lines = every.out.splitlines()
    assert lines[0] == "CRITICAL - 1 critical, 1 warning, 1 unknown of 5 jobs", every
    assert lines[1].startswith("CRITICAL: broken: "), every
    assert lines[2].startswith("UNKNOWN: gone: ") and "no-such-dir" in lines[2], every
    assert lines[3] == "WARNING: thin: only 1 backup present; at least 3 expected", every
    assert len(lines) == 5, every
    data = perf(every.out)
    assert sorted(data) == sorted(
        f"{kind}_{name}"
        for kind in ("age", "size")
        for name in ("beat", "broken", "gone", "good", "thin")
    )
    assert data["size_good"] == "2048B;;;0"
    assert data["size_thin"] == "4096B;;;0"
    assert data["size_broken"] == "10B;;;0"
    assert data["age_beat"] == data["size_beat"] == "U;;;0"
    assert data["age_gone"] == "U;;;0"
    age = int(re.fullmatch(r"(\d+)s;;;0", data["age_good"]).group(1))  # type: ignore[union-attr]
    assert 3600 <= age < 3600 + 120, data

    assert good.code == 0, good
    assert len(good.out.splitlines()) == 2, good
    assert good.out.splitlines()[0] == "OK - 1 job, none in trouble", good
    assert list(perf(good.out)) == ["age_good", "size_good"], good
    assert perf(good.out)["size_good"] == "2048B;;;0", good

    assert db.code == 2, db
    assert db.out.splitlines()[0] == "CRITICAL - 1 critical of 2 jobs", db
    assert list(perf(db.out)) == ["age_broken", "size_broken", "age_good", "size_good"], db

    assert nope.code == 3, nope
    assert nope.out.splitlines() == [
        "UNKNOWN - no job named 'nope' (jobs: beat, broken, gone, good, thin)"
    ], nope
    assert none.code == 3, none
    assert none.out.splitlines() == ["UNKNOWN - no job has the tag 'nothing'"], none

    # Every job was judged moments ago: --max-age 60 changes nothing.
    assert (recent.code, recent.out.splitlines()[:-1]) == (every.code, lines[:-1]), recent
    assert zero.code == 3, zero
    assert zero.out.splitlines() == ["UNKNOWN - --max-age: a number of minutes above 0"], zero

    # Read-only: not a scan run more, not a job's column changed (checked_at included).
    assert await table_state(sessionmaker) == before

    # `scan --job nope` names the jobs there are and records no scan run.
    scan_nope = await cli(
        "scan", "--job", "nope", env=base_env, database_url=database_url, cwd=tmp_path
    )
    assert scan_nope.code == 3, scan_nope
    assert scan_nope.out == ""
    assert (
        "backup-monitor: no job named 'nope' (jobs: beat, broken, gone, good, thin)"
        in scan_nope.err.splitlines()
    ), scan_nope
    assert (await table_state(sessionmaker))[0] == before[0]

    # --scan judges first: the thin job gets its 3 backups, a scan run is recorded for it.
    for index in (2, 3):
        make_file(backups / "thin" / f"thin-{index}.tar", 4096, newest)
    scanned = await check("--scan", "--job", "thin")
    assert scanned.code == 0, scanned
    assert scanned.out.splitlines()[0] == "OK - 1 job, none in trouble", scanned
    runs, rows = await table_state(sessionmaker)
    assert runs == before[0] + 1
    assert rows["thin"]["status"] == "ok"
    assert rows["good"] == before[1]["good"]  # only the selected job was scanned


async def test_check_with_no_jobs_or_no_database_is_unknown(sqlite_url, base_env, tmp_path):
    empty = await cli("check", env=base_env, database_url=sqlite_url, cwd=tmp_path)
    assert empty.code == 3, empty
    assert empty.out.splitlines() == ["UNKNOWN - no jobs declared"], empty
    down = await cli(
        "check", env=base_env, cwd=tmp_path,
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/nowhere",
    )  # fmt: skip
    assert down.code == 3, down
    assert down.out.startswith("UNKNOWN - cannot check on the database "), down
    assert len(down.out.splitlines()) == 1, down
