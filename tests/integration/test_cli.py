"""The real `backup-monitor` command, run as a subprocess (`python -m service ...`).

Each process costs one or two seconds of start-up, so the assertions are grouped, and cases that
cannot interfere (they write nothing) run side by side.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import delete, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.config.jobsfile import apply_jobs, parse_jobs_document
from service.db import migrate
from service.db.engine import create_engine, create_sessionmaker
from service.db.models import Artifact, Job, JobCheck, ScanRun
from service.runtime.startup import safe_url
from service.scanner.scanner import run_scanner

from tests.support import (
    TEST_DATABASE_URL,
    Result,
    add_job,
    cli,
    free_port,
    make_file,
    missing,
    pg_admin,
    read,
)


def jobs_yaml(*jobs: str) -> str:
    return "jobs:\n" + "".join(jobs)


async def test_help_lists_every_command(base_env, tmp_path):
    result = await cli("--help", env=base_env, database_url=None, cwd=tmp_path)
    assert result.code == 0, result
    for command in ("serve", "scan", "db", "jobs", "tokens", "demo"):
        assert f"    {command} " in result.out, result


# --- scan ---------------------------------------------------------------------------------------


async def test_scan_exit_codes_and_json(database_url, sessionmaker, base_env, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    long_ago = now - timedelta(days=30)
    backups = tmp_path / "backups"
    newest = now - timedelta(hours=1)
    make_file(backups / "good" / "good-1.tar", 2048, newest)
    make_file(backups / "thin" / "thin-1.tar", 2048, newest)
    make_file(backups / "broken" / "broken-1.tar", 10, newest)

    def local(name: str) -> dict[str, str]:
        return {"type": "local", "path": str(backups / name)}

    await add_job(sessionmaker, long_ago, name="good", source=local("good"))
    await add_job(sessionmaker, long_ago, name="thin", source=local("thin"), rules={"min_count": 3})
    await add_job(
        sessionmaker, long_ago, name="broken", source=local("broken"), rules={"min_size": "1KiB"}
    )
    await add_job(sessionmaker, long_ago, name="gone", source=local("no-such-dir"))

    async def scan(*args: str) -> Result:
        return await cli("scan", *args, env=base_env, database_url=database_url, cwd=tmp_path)

    result = await scan("--format", "json")
    # Scans of different jobs write different rows: these may run side by side. (Two scans of
    # the same job at once may not: both insert its new artifacts and one fails.)
    good, gone, nope = await asyncio.gather(
        scan("--job", "good"),
        scan("--job", "gone", "--format", "json"),
        scan("--job", "nope"),
    )

    # All jobs: critical wins over warning and unknown. The JSON shape of DESIGN.md, exactly.
    assert result.code == 2, result
    document = json.loads(result.out)  # stdout is the document alone; the log is on stderr
    assert set(document) == {"status", "jobs"}
    assert document["status"] == "critical"
    jobs = {job["name"]: job for job in document["jobs"]}
    assert [job["name"] for job in document["jobs"]] == ["broken", "gone", "good", "thin"]
    for job in document["jobs"]:
        assert set(job) == {"name", "status", "reasons", "latest_artifact", "artifact_count"}
        for reason in job["reasons"]:
            assert set(reason) == {"code", "severity", "message"}
            assert reason["message"]
    assert {name: job["status"] for name, job in jobs.items()} == {
        "broken": "critical", "gone": "unknown", "good": "ok", "thin": "warning",
    }  # fmt: skip
    assert [r["code"] for r in jobs["broken"]["reasons"]] == ["too_small"]
    assert [r["severity"] for r in jobs["broken"]["reasons"]] == ["critical"]
    assert [r["code"] for r in jobs["thin"]["reasons"]] == ["too_few"]
    assert [r["code"] for r in jobs["gone"]["reasons"]] == ["source_error"]
    assert "no-such-dir" in jobs["gone"]["reasons"][0]["message"]
    assert jobs["good"]["reasons"] == []
    latest = jobs["good"]["latest_artifact"]
    assert set(latest) == {"path", "size", "mtime"}
    assert latest["path"] == "good-1.tar"
    assert latest["size"] == 2048
    assert datetime.fromisoformat(latest["mtime"]) == newest
    assert jobs["good"]["artifact_count"] == 1
    assert jobs["gone"]["latest_artifact"] is None
    assert jobs["gone"]["artifact_count"] == 0

    assert good.code == 0, good
    header, row = good.out.splitlines()[:2]
    assert header.split() == ["STATUS", "JOB", "NEWEST", "SIZE", "COUNT"]
    assert row.split() == ["OK", "good", "good-1.tar", "2.0", "KiB", "1"]

    assert gone.code == 3, gone
    assert json.loads(gone.out)["status"] == "unknown"

    assert nope.code == 3, nope
    assert nope.out == ""
    assert (
        "backup-monitor: no job named 'nope' (jobs: broken, gone, good, thin)"
        in nope.err.splitlines()
    ), nope

    # Without the critical job, warning wins over unknown.
    async with sessionmaker() as session:
        await session.execute(delete(Job).where(Job.name == "broken"))
        await session.commit()
    result = await scan()
    assert result.code == 1, result
    assert [line.split()[:2] for line in result.out.splitlines() if not line.startswith(" ")] == [
        ["STATUS", "JOB"], ["UNKNOWN", "gone"], ["OK", "good"], ["WARNING", "thin"],
    ]  # fmt: skip
    assert "    - only 1 backup present; at least 3 expected" in result.out


# --- jobs apply ---------------------------------------------------------------------------------


async def job_rows(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, dict[str, Any]]:
    async with sessionmaker() as session:
        jobs = (await session.scalars(select(Job))).all()
        return {
            job.name: {column.key: getattr(job, column.key) for column in Job.__table__.columns}
            for job in jobs
        }


async def test_jobs_apply_declares_silences_idempotently_and_prune_ends_them(
    database_url, sessionmaker, base_env, tmp_path
):
    web = "  - name: web\n    schedule: {every: 1d}\n"
    nightly = (
        "  - {name: nightly-maintenance, tags: [db], cron: '0 2 * * 0',"
        " timezone: Europe/Paris, duration: 2h, comment: Sunday patching}\n"
    )
    full, smaller, bad = tmp_path / "full.yml", tmp_path / "smaller.yml", tmp_path / "bad.yml"
    full.write_text(jobs_yaml(web) + "silences:\n" + nightly)
    smaller.write_text(jobs_yaml(web))
    bad.write_text(jobs_yaml(web) + "silences:\n" + nightly.replace("2h", "8d"))

    async def apply(*args: str, code: int = 0) -> str:
        result = await cli(
            "jobs", "apply", *args, env=base_env, database_url=database_url, cwd=tmp_path
        )
        assert result.code == code, result
        return (result.out + result.err).strip()

    assert await apply(str(full)) == (
        "1 created, 0 updated, 0 unchanged, 0 deleted; "
        "silences: 1 created, 0 updated, 0 unchanged, 0 removed"
    )
    assert await apply(str(full)) == (
        "0 created, 0 updated, 1 unchanged, 0 deleted; "
        "silences: 0 created, 0 updated, 1 unchanged, 0 removed"
    )
    problem = await apply(str(bad), code=1)
    assert (
        "silences[0] (nightly-maintenance): duration: a recurring window lasts at most 7 d "
        "(got 8 d)" in problem
    )
    # Without --prune a silence left out of the file stays; with it, it is ended.
    assert await apply(str(smaller)) == "0 created, 0 updated, 1 unchanged, 0 deleted"
    assert await apply(str(smaller), "--prune") == (
        "0 created, 0 updated, 1 unchanged, 0 deleted; "
        "silences: 0 created, 0 updated, 0 unchanged, 1 removed"
    )
    async with sessionmaker() as session:
        rows = (await session.execute(text("SELECT name, ended_at FROM silences"))).all()
    assert [(name, ended is not None) for name, ended in rows] == [("nightly-maintenance", True)]


async def test_jobs_apply_is_idempotent_and_prune_deletes(
    database_url, sessionmaker, base_env, tmp_path
):
    backups = tmp_path / "backups"
    make_file(backups / "old.tar", 4096, datetime.now(UTC) - timedelta(hours=2))
    make_file(backups / "new.tar", 4096, datetime.now(UTC) - timedelta(hours=1))
    db = (
        "  - name: db-nightly\n"
        "    tags: [db, prod]\n"
        f"    source: {{type: local, path: {json.dumps(str(backups))}, pattern: '*.tar'}}\n"
        "    schedule: {cron: '0 2 * * *', timezone: Europe/Paris}\n"
        "    grace: 1h\n"
        "    rules: {min_size: 1KiB, min_count: 2, max_size_drop: 50%}\n"
    )
    web = "  - name: web\n    schedule: {every: 1d}\n    grace: 30m\n"
    web_changed = "  - name: web\n    schedule: {every: 1d}\n    grace: 45m\n"
    beat = "  - name: heartbeat\n    description: pushes only\n    schedule: {every: 15m}\n"
    full, smaller = tmp_path / "jobs.yml", tmp_path / "smaller.yml"
    full.write_text(jobs_yaml(db, web, beat))
    smaller.write_text(jobs_yaml(web_changed, beat))

    async def apply(*args: str) -> str:
        result = await cli(
            "jobs", "apply", *args, env=base_env, database_url=database_url, cwd=tmp_path
        )
        assert result.code == 0, result
        return result.out.strip()

    # A job declared by other means (the API): `apply` without --prune leaves it alone.
    await add_job(sessionmaker, datetime.now(UTC), name="manual")

    assert await apply(str(full)) == "3 created, 0 updated, 0 unchanged, 0 deleted"
    first = await job_rows(sessionmaker)
    assert set(first) == {"manual", "db-nightly", "web", "heartbeat"}
    assert first["db-nightly"]["grace"] == 3600
    assert first["db-nightly"]["rules"] == {
        "min_size": 1024, "max_size": None, "min_count": 2, "max_size_drop": 50.0,
        "max_duration": None, "min_duration": None,
    }  # fmt: skip

    # The same file again changes nothing at all: not even updated_at.
    assert await apply(str(full)) == "0 created, 0 updated, 3 unchanged, 0 deleted"
    assert await job_rows(sessionmaker) == first

    async with sessionmaker() as session:
        report = await run_scanner(session, trigger="cli")
    assert {job.name: job.status for job in report.jobs}["db-nightly"] == "ok"
    doomed = first["db-nightly"]["id"]

    async def owned_by_doomed() -> tuple[int, int]:
        async with sessionmaker() as session:
            artifacts = await session.scalar(
                select(func.count()).select_from(Artifact).where(Artifact.job_id == doomed)
            )
            checks = await session.scalar(
                select(func.count()).select_from(JobCheck).where(JobCheck.job_id == doomed)
            )
            return int(artifacts or 0), int(checks or 0)

    assert await owned_by_doomed() == (2, 1)

    # --prune deletes the jobs missing from the file, and their artifacts and history.
    assert await apply(str(smaller), "--prune") == "0 created, 1 updated, 1 unchanged, 2 deleted"
    rows = await job_rows(sessionmaker)
    assert set(rows) == {"web", "heartbeat"}
    assert rows["web"]["grace"] == 45 * 60
    assert rows["web"]["updated_at"] > first["web"]["updated_at"]
    assert rows["heartbeat"]["updated_at"] == first["heartbeat"]["updated_at"]
    assert await owned_by_doomed() == (0, 0)


# "Billion laughs": nine levels of nine aliases, 1 KB of YAML that expands to 387 million values.
LAUGHS = "x-lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"x-lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10)
)
# The same through merge keys, which PyYAML copies into each mapping.
MERGES = (
    "x-m0: &m0 {"
    + ", ".join(f"k{i}: 1" for i in range(10))
    + "}\n"
    + "".join(f"x-m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 10)}]}}\n" for i in range(1, 10))
)
# Each bad file also changes a job that exists and adds a valid one: nothing of it may land.
KEEP = "  - name: keep\n    description: changed\n    schedule: {every: 1d}\n"
FRESH = "  - name: fresh\n    schedule: {every: 1d}\n"
BAD_FILES: dict[str, tuple[str | None, list[str]]] = {
    "unknown-field": (
        jobs_yaml(KEEP, "  - name: fresh\n    schedule: {every: 1d}\n    colour: blue\n"),
        ["jobs[1] (fresh): colour: unknown field"],
    ),
    "bad-duration": (
        jobs_yaml(KEEP, "  - name: fresh\n    schedule: {every: 1d}\n    grace: 2 fortnights\n"),
        ["jobs[1] (fresh): grace: ", "'2 fortnights' is not a duration"],
    ),
    "bad-cron": (
        jobs_yaml(KEEP, "  - name: fresh\n    schedule: {cron: '61 2 * * *'}\n"),
        ["jobs[1] (fresh): schedule: ", "bad cron expression '61 2 * * *'"],
    ),
    "unknown-zone": (
        jobs_yaml(
            KEEP, "  - name: fresh\n    schedule: {cron: '0 2 * * *', timezone: Mars/Olympus}\n"
        ),
        ["jobs[1] (fresh): schedule.timezone: ", "unknown time zone 'Mars/Olympus'"],
    ),
    "zone-directory": (  # ZoneInfo raised IsADirectoryError: a traceback (issue 10 #13)
        jobs_yaml(KEEP, "  - name: fresh\n    schedule: {cron: '0 2 * * *', timezone: Europe}\n"),
        ["jobs[1] (fresh): schedule.timezone: ", "unknown time zone 'Europe'"],
    ),
    "pattern-too-long": (  # a 300 KB glob stalled the service at every scan (issue 10 #10)
        jobs_yaml(KEEP, FRESH, "    source: {path: /b, pattern: '" + "*a" * 150_000 + "'}\n"),
        ["jobs[1] (fresh): source.pattern: ", "at most 1024 characters"],
    ),
    "duplicate-name": (
        jobs_yaml(KEEP, FRESH, "  - name: keep\n    schedule: {every: 2d}\n"),
        ["jobs[2] (keep): duplicate name 'keep' (also jobs[0])"],
    ),
    "not-a-slug": (
        jobs_yaml(KEEP, "  - name: Fresh Backup\n    schedule: {every: 1d}\n"),
        ["jobs[1] (Fresh Backup): name: ", "is not a valid job name: use lowercase letters"],
    ),
    "min-above-max": (
        jobs_yaml(KEEP, FRESH, "    rules: {min_size: 2MiB, max_size: 1MiB}\n"),
        [
            "jobs[1] (fresh): rules: ",
            "min_size (2097152 bytes) is larger than max_size (1048576 bytes)",
        ],
    ),
    "invalid-yaml": (
        jobs_yaml(KEEP, "  - name: fresh\n    schedule: {every: 1d\n"),
        ["not valid YAML at line 7, column 1: ", "expected ',' or '}'"],
    ),
    "missing-file": (None, ["cannot read the file: ", "No such file or directory"]),
    # Hostile files (issue 10 #12): each one line, quickly, never a traceback or a MemoryError.
    "alias-bomb": (LAUGHS + jobs_yaml(KEEP, FRESH), ["refused at line ", "alias bomb"]),
    "merge-key-bomb": (MERGES + jobs_yaml(KEEP, FRESH), ["refused at line ", "alias bomb"]),
    "alias-cycle": (
        jobs_yaml(KEEP, "  - &fresh {name: fresh, schedule: {every: 1d}, tags: [*fresh]}\n"),
        ["refused at line 5, column ", "an alias inside the node it names (a cycle)"],
    ),
    "deep-nesting": (
        jobs_yaml(KEEP, FRESH, "    description: " + "[" * 5000 + "]" * 5000 + "\n"),
        ["refused at line 7, column 115: ", "nested more than 100 levels deep"],
    ),
    "huge-integer": (
        jobs_yaml(KEEP, FRESH, "    grace: " + "9" * 5000 + "\n"),
        ["not valid YAML at line 7, column 12: ", "an integer of more than 4300 digits"],
    ),
    "over-a-mebibyte": (
        jobs_yaml(KEEP, FRESH) + "# " + "x" * 1024 * 1024 + "\n",
        ["the file is larger than 1 MiB (1048576 bytes): refused"],
    ),
    "long-value-quoted-short": (
        jobs_yaml(KEEP, FRESH, "    source: {type: " + "s" * 300_000 + ", path: /b}\n"),
        ["jobs[1] (fresh): source.type: ", f"(got '{'s' * 60}…' (300000 characters))"],
    ),
}


async def test_bad_jobs_files_are_explained_and_write_nothing(sqlite_url, base_env, tmp_path):
    engine = create_engine(sqlite_url)
    sessionmaker = create_sessionmaker(engine)
    try:
        document = {
            "jobs": [{"name": "keep", "description": "original", "schedule": {"every": 60}}]
        }
        async with sessionmaker() as session:
            await apply_jobs(session, parse_jobs_document(document, "setup"))
        before = await job_rows(sessionmaker)

        async def attempt(case: str, text: str | None) -> tuple[str, Path, Result]:
            path = tmp_path / f"{case}.yml"
            if text is not None:
                path.write_text(text)
            result = await cli(
                "jobs", "apply", str(path), env=base_env, database_url=sqlite_url, cwd=tmp_path
            )
            return case, path, result

        outcomes = await asyncio.gather(
            *(attempt(case, text) for case, (text, _) in BAD_FILES.items())
        )
        for case, path, result in outcomes:
            lines = result.err.strip().splitlines()
            assert result.code == 1, f"{case}: {result}"
            assert result.out == "", f"{case}: {result}"
            assert lines[0] == f"backup-monitor: {path}: 1 problem(s)", f"{case}: {result}"
            assert lines[-1] == "nothing was written", f"{case}: {result}"
            assert len(lines) == 3, f"{case}: {result}"
            assert len(result.err) < 1000, f"{case}: {result}"
            for expected in BAD_FILES[case][1]:
                assert expected in lines[1], f"{case}: {expected!r} not in\n{result}"

        assert await job_rows(sessionmaker) == before
    finally:
        await engine.dispose()


# --- database -----------------------------------------------------------------------------------


async def test_db_upgrade_creates_a_fresh_sqlite_database(base_env, tmp_path):
    path = tmp_path / "fresh.db"
    url = f"sqlite+aiosqlite:///{path}"
    result = await cli("db", "upgrade", env=base_env, database_url=url, cwd=tmp_path)
    assert result.code == 0, result
    assert result.out.strip() == f"database {url} is at the latest schema"

    head = ScriptDirectory.from_config(migrate.alembic_config(url)).get_current_head()
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        version = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    assert {"jobs", "artifacts", "scan_runs", "job_checks"} <= tables
    assert version == [(head,)]


@asynccontextmanager
async def empty_database(kind: str, directory: Path) -> AsyncIterator[str]:
    """The URL of a database with nothing in it: a new PostgreSQL database or SQLite file."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / 'fresh.db'}"
        return
    name = f"bm_fresh_{uuid.uuid4().hex[:12]}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrating_nothing(jobs_file: Path) -> list[tuple[tuple[str, ...], int, str, dict[str, str]]]:
    """The commands that migrate nothing: each with its exit code when it cannot read the
    database, what it then says it cannot do, and its settings."""
    return [
        (("check",), 3, "check", {}),
        (("jobs", "list"), 1, "list the jobs", {}),
        (("jobs", "export"), 1, "export the jobs", {}),
        (("jobs", "apply", "--dry-run", str(jobs_file)), 1, "apply the jobs", {}),
        (("scan",), 3, "scan", {"AUTO_MIGRATE": "false"}),
    ]


async def told_once(
    command: tuple[str, ...], code: int, settings: dict[str, str], env: Any, url: str, cwd: Path
) -> Any:
    """The command's result, checked to end with `code` and one line on stderr."""
    result = await cli(*command, env=env, database_url=url, cwd=cwd, **settings)
    assert result.code == code, result
    assert len(result.err.strip().splitlines()) == 1, result
    return result


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
async def test_read_only_commands_on_a_database_never_migrated_say_what_to_do(
    kind, base_env, tmp_path
):
    """`check`, `jobs list`, `jobs export`, `jobs apply --dry-run` and a `scan` with
    AUTO_MIGRATE=false migrate nothing: on a new database (a SQLite file not there yet, e.g. run
    from another directory) each says in one line that it was never made and how to make it,
    creates no file, and the Nagios checks are UNKNOWN. A `scan` that finds no job at all is
    UNKNOWN too, never OK."""
    jobs_file = tmp_path / "jobs.yml"
    jobs_file.write_text(jobs_yaml("  - name: nightly\n    schedule: {every: 1d}\n"))
    hint = (
        "(is DATABASE_URL the service's?); `backup-monitor db upgrade` makes it, and so does "
        "starting the service"
    )
    async with empty_database(kind, tmp_path) as url:
        never = (
            f"the database file {tmp_path / 'fresh.db'} does not exist"
            if kind == "sqlite"
            else f"the database {safe_url(url)} has no tables yet"
        )
        for command, code, what, settings in migrating_nothing(jobs_file):
            result = await told_once(command, code, settings, base_env, url, tmp_path)
            assert result.err == f"backup-monitor: cannot {what}: {never} {hint}\n", result
            if command == ("check",):
                assert result.out == f"UNKNOWN - cannot {what}: {never} {hint}\n"
            assert not (tmp_path / "fresh.db").exists()
        scanned = await cli("scan", env=base_env, database_url=url, cwd=tmp_path)
        assert scanned.code == 3, scanned  # migrated, then no job to judge
        assert "(no jobs declared: see `backup-monitor jobs apply`)" in scanned.out, scanned
        listed = await cli("jobs", "list", env=base_env, database_url=url, cwd=tmp_path)
        assert listed.code == 0, listed  # migrated by the scan: now an empty list


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
async def test_read_only_commands_on_an_older_schema_say_to_upgrade(kind, base_env, tmp_path):
    """A database migrated by an older version (a column this one reads is missing): the
    commands that migrate nothing name its revision and the way up, in one line, instead of
    the SQL error, and change nothing. (`check` and `jobs list` read only columns that old
    schemas have: they still answer.)"""
    jobs_file = tmp_path / "jobs.yml"
    jobs_file.write_text(jobs_yaml("  - name: nightly\n    schedule: {every: 1d}\n"))
    async with empty_database(kind, tmp_path) as url:
        await asyncio.to_thread(migrate.upgrade, url)
        await declare_nightly(url)
        await asyncio.to_thread(migrate.downgrade, url, "0012")  # before jobs.listing_holder
        head = migrate.head_revision()
        told = (
            f"the database {safe_url(url)} is at schema revision 0012, older than this "
            f"version's {head}: `backup-monitor db upgrade` brings it up to date, and so does "
            "starting the service"
        )
        for command, code, what, settings in migrating_nothing(jobs_file)[2:]:
            result = await told_once(command, code, settings, base_env, url, tmp_path)
            assert result.err == f"backup-monitor: cannot {what}: {told}\n", result
        for command in (("check",), ("jobs", "list")):
            result = await cli(*command, env=base_env, database_url=url, cwd=tmp_path)
            assert "nightly" in result.out and not result.err, result
        assert await asyncio.to_thread(migrate.at_head, url) is False  # nothing migrated
        upgraded = await cli("db", "upgrade", env=base_env, database_url=url, cwd=tmp_path)
        assert upgraded.code == 0, upgraded
        listed = await cli("jobs", "list", env=base_env, database_url=url, cwd=tmp_path)
        assert listed.code == 0 and "nightly" in listed.out, listed


async def declare_nightly(url: str) -> None:
    engine = create_engine(url)
    try:
        await add_job(create_sessionmaker(engine), datetime.now(UTC), name="nightly",
                      schedule={"every": "1d"})  # fmt: skip
    finally:
        await engine.dispose()


async def test_check_reads_a_sqlite_uri_read_only(sqlite_url, base_env, tmp_path):
    """A `file:` URI (here `mode=ro`, as a monitoring host would open it) is asked, not taken
    for a file name that does not exist."""
    await declare_nightly(sqlite_url)
    path = make_url(sqlite_url).database
    uri = f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true"
    for command in (("check",), ("jobs", "list")):
        result = await cli(*command, env=base_env, database_url=uri, cwd=tmp_path)
        assert "nightly" in result.out, result
        assert "no tables" not in result.err and "does not exist" not in result.err, result


async def test_check_runs_as_a_role_that_may_read_the_jobs_only(pg_url, base_env, tmp_path):
    """A least-privilege monitoring role (SELECT on `jobs`, nothing else) can run `check`: the
    probe for a never-migrated database is a catalog lookup, no table read."""
    await declare_nightly(pg_url)
    role = f"bm_watch_{uuid.uuid4().hex[:8]}"
    await pg_admin(f'CREATE ROLE "{role}" LOGIN')
    try:
        await pg_admin(f'GRANT SELECT ON jobs TO "{role}"', url=pg_url)
        watcher = make_url(pg_url).set(username=role, password=None)
        owner = await cli("check", env=base_env, database_url=pg_url, cwd=tmp_path)
        result = await cli(
            "check", env=base_env, cwd=tmp_path,
            database_url=watcher.render_as_string(hide_password=False),
        )  # fmt: skip
        assert "nightly" in owner.out, owner
        assert (result.code, result.out) == (owner.code, owner.out), result
    finally:
        await pg_admin(f'REVOKE ALL ON jobs FROM "{role}"', url=pg_url)
        await pg_admin(f'DROP ROLE IF EXISTS "{role}"')


# Each replica imports everything, says so, then waits for one byte on stdin: the test releases
# them all with one write each, so their work starts in the same instant (start-up takes seconds).
_AT_THE_SAME_INSTANT = (
    "import sys; from service.cli import main as cli; print('ready', flush=True); "
    "sys.stdin.read(1); sys.exit(cli.main(sys.argv[1:]))"
)


async def release_together(
    commands: list[list[str]], env: dict[str, str], cwd: Path
) -> list[asyncio.subprocess.Process]:
    """Start the commands, wait until every one is ready, then release them all at once. The
    stderr of the i-th is in cwd/replica-i.err."""
    processes = []
    try:
        for index, command in enumerate(commands):
            with (cwd / f"replica-{index}.err").open("wb") as stderr:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", _AT_THE_SAME_INSTANT, *command, cwd=cwd, env=env,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
                )  # fmt: skip
            processes.append(process)
        for index, process in enumerate(processes):
            assert process.stdout is not None
            ready = await asyncio.wait_for(process.stdout.readline(), 60)
            assert ready == b"ready\n", read(cwd / f"replica-{index}.err")
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(b"x")
    except BaseException:
        await stop_all(processes)
        raise
    return processes


async def stop_all(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def together(commands: list[list[str]], env: dict[str, str], cwd: Path) -> list[Result]:
    """Run the commands as processes released at the same instant; their results in order."""
    processes = await release_together(commands, env, cwd)
    started = time.monotonic()
    try:
        outputs = await asyncio.wait_for(
            asyncio.gather(*(process.communicate() for process in processes)), 120
        )
    finally:
        await stop_all(processes)
    seconds = time.monotonic() - started
    return [
        Result(process.returncode or 0, out.decode(), read(cwd / f"replica-{index}.err"), seconds)
        for index, (process, (out, _)) in enumerate(zip(processes, outputs, strict=True))
    ]


async def migrated_jobs(url: str) -> tuple[list[Any], list[str]]:
    """The alembic versions and the names of the jobs in the database."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            versions = await connection.execute(text("SELECT version_num FROM alembic_version"))
            names = await connection.execute(text("SELECT name FROM jobs ORDER BY name"))
            return list(versions.all()), list(names.scalars().all())
    finally:
        await engine.dispose()


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
async def test_replicas_started_together_migrate_and_apply_once(
    kind, pg_template, base_env, tmp_path
):
    """`docker compose --scale`: replicas migrate a fresh database and apply the same jobs file
    at the same instant; every one succeeds and the result is as if one had done it."""
    jobs_file = tmp_path / "jobs.yml"
    names = [f"job-{index}" for index in range(20)]
    jobs_file.write_text(
        jobs_yaml(*(f"  - name: {name}\n    schedule: {{every: 1d}}\n" for name in names))
    )
    upgrade, apply = ["db", "upgrade"], ["jobs", "apply", str(jobs_file)]
    head = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head()
    for round_ in range(5):
        directory = tmp_path / f"round-{round_}"
        directory.mkdir()
        async with empty_database(kind, directory) as url:
            env = dict(base_env, DATABASE_URL=url)
            results = await together([upgrade, apply, upgrade, apply], env, directory)
            for result in results:
                assert result.code == 0, f"round {round_}: {result}"
            summaries = sorted(result.out.strip() for result in results[1::2])
            assert summaries == [
                "0 created, 0 updated, 20 unchanged, 0 deleted",
                "20 created, 0 updated, 0 unchanged, 0 deleted",
            ], summaries
            assert await migrated_jobs(url) == ([(head,)], sorted(names))


def on_tiny_disk(directory: Path, size: str, *command: str) -> list[str]:
    """`command` in a mount namespace of its own where `directory` is a tmpfs of `size`: a
    real full disk, without root (a user namespace) and invisible to everything else."""
    mount = 'mount -t tmpfs -o "size=$1" tmpfs "$0" && shift && exec "$@"'
    return ["unshare", "--mount", "--map-root-user", "sh", "-c", mount, str(directory), size,
            *command]  # fmt: skip


@pytest.fixture
def tiny_disks(tmp_path: Path) -> None:
    probe = ["true"]
    if (
        shutil.which("unshare") is None
        or subprocess.run(
            on_tiny_disk(tmp_path, "64k", *probe), capture_output=True, timeout=30
        ).returncode
    ):
        missing("cannot mount a tmpfs in a user namespace here (unshare, util-linux)")


async def test_a_full_disk_is_named_as_such(tiny_disks, base_env, tmp_path):
    """SQLite says "disk I/O error" (or "database or disk is full"): the message says the
    disk is full, and where."""
    disk = tmp_path / "disk"
    disk.mkdir()
    url = f"sqlite+aiosqlite:///{disk / 'monitor.db'}"
    process = await asyncio.create_subprocess_exec(
        *on_tiny_disk(disk, "32k", sys.executable, "-m", "service", "db", "upgrade"),
        cwd=tmp_path, env=dict(base_env, DATABASE_URL=url),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    result = Result(process.returncode or 0, out.decode(), err.decode(), 0)
    assert result.code == 1, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result
    assert lines[0].startswith(
        f"backup-monitor: cannot run the migrations on the database {url}: "
        f"the disk is full ({disk}, "
    ), result


def fill_up(path: Path) -> None:
    """Write to `path` until its filesystem has no byte left."""
    with path.open("wb") as fill, suppress(OSError):
        while True:
            fill.write(b"\0" * 65536)
            fill.flush()


async def test_pings_on_a_full_disk_are_503_and_logged_as_such(
    tiny_disks, sqlite_template, base_env, tmp_path
):
    """The ping writer's commit fails on a full disk: 503 (the script retries), one log line
    saying the disk is full; once space is freed, pings are stored again."""
    disk = tmp_path / "disk"
    disk.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    database = disk / "monitor.db"
    serve = [sys.executable, "-m", "service", "serve", "--port", str(port)]
    setup = f'cp "{sqlite_template}" "{database}" && exec "$@"'
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *on_tiny_disk(disk, "2m", "sh", "-c", setup, "sh", *serve),
            cwd=tmp_path, env=dict(base_env, DATABASE_URL=f"sqlite+aiosqlite:///{database}"),
            stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    # The server's view of its files, tmpfs included (its mount namespace).
    filler = Path(f"/proc/{process.pid}/root{disk}/filler")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
            await wait_for_200(client, base + "/health/ready", process, log)
            created = await client.post(
                base + "/api/v1/jobs", json={"name": "a", "schedule": {"every": "1d"}}
            )
            assert created.status == 201, await created.text()
            ping = base + f"/ping/{(await created.json())['ping_key']}"
            async with client.post(ping, data=b"x") as response:
                assert response.status == 200

            await asyncio.to_thread(fill_up, filler)
            statuses = []
            for _ in range(200):  # the WAL has some room left in its last page: a few may pass
                async with client.post(ping, data=b"y" * 10_000) as response:
                    statuses.append(response.status)
                    if response.status != 200:
                        body = await response.json()
                        assert response.headers["Retry-After"] == "5"
                        break
            assert statuses[-1] == 503, (statuses, read(log))
            assert body["error"]["code"] == "database_unavailable"

            await asyncio.to_thread(filler.unlink)
            async with client.post(ping, data=b"z") as response:
                assert response.status == 200, read(log)
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)
    text = read(log)
    [line] = [line for line in text.splitlines() if "pings not stored" in line]
    assert f"the disk is full ({disk}, " in line, line
    assert "Traceback" not in text


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
async def test_replicas_serving_together_start(kind, pg_template, base_env, tmp_path):
    """Three `serve` replicas with JOBS_FILE, released at the same instant on a fresh database:
    all get ready, all stop cleanly, the schema and the jobs are there once."""
    jobs_file = tmp_path / "jobs.yml"
    names = [f"job-{index}" for index in range(10)]
    jobs_file.write_text(
        jobs_yaml(*(f"  - name: {name}\n    schedule: {{every: 1d}}\n" for name in names))
    )
    head = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head()
    ports = [free_port() for _ in range(3)]
    async with empty_database(kind, tmp_path) as url:
        env = dict(base_env, DATABASE_URL=url, JOBS_FILE=str(jobs_file))
        commands = [["serve", "--port", str(port)] for port in ports]
        processes = await release_together(commands, env, tmp_path)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
                for index, (process, port) in enumerate(zip(processes, ports, strict=True)):
                    log = tmp_path / f"replica-{index}.err"
                    ready = f"http://127.0.0.1:{port}/health/ready"
                    await wait_for_200(client, ready, process, log)
            for process in processes:
                process.send_signal(signal.SIGTERM)
            codes = [await asyncio.wait_for(process.wait(), 30) for process in processes]
        finally:
            await stop_all(processes)
        logs = [read(tmp_path / f"replica-{index}.err") for index in range(3)]
        assert codes == [0, 0, 0], logs
        for log in logs:
            assert "jobs file applied" in log and "Traceback" not in log, log
        assert await migrated_jobs(url) == ([(head,)], sorted(names))


async def test_unreachable_database_at_startup_is_one_line(base_env, tmp_path):
    url = "postgresql+asyncpg://postgres:s3cret@127.0.0.1:1/x"
    result = await cli(
        "serve",
        "--port",
        str(free_port()),
        env=base_env,
        database_url=url,
        cwd=tmp_path,
        timeout=30,
    )
    assert result.code != 0, result
    assert result.seconds < 15, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result
    assert lines[0].startswith("backup-monitor: cannot run the migrations on the database "), result
    assert "postgresql+asyncpg://postgres:***@127.0.0.1:1/x" in lines[0], result
    assert "s3cret" not in result.err + result.out
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("command", "settings", "code", "what"),
    [
        (("serve", "--port", "0"), {"AUTO_MIGRATE": "false"}, 1, "connect"),
        (("scan",), {}, 3, "run the migrations"),  # a Nagios check that cannot run: UNKNOWN
    ],
    ids=["serve-without-migrations", "scan"],
)
async def test_unreachable_database_other_commands(
    base_env, tmp_path, command, settings, code, what
):
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/x"
    result = await cli(
        *command, env=base_env, database_url=url, cwd=tmp_path, timeout=30, **settings
    )
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result
    assert lines[0].startswith(f"backup-monitor: cannot {what} on the database "), result


@pytest.mark.parametrize(
    "settings",
    [
        {"SCANNER_INTERVAL_MINUTES": "abc"},
        {"PORT": "70000"},
        {"LOG_FORMAT": "xml"},
    ],
    ids=lambda settings: next(iter(settings)),
)
async def test_bad_setting_is_one_line_naming_it(settings, base_env, tmp_path):
    [name] = settings
    url = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"
    result = await cli("scan", env=base_env, database_url=url, cwd=tmp_path, **settings)
    assert result.code == 3, result  # scan is a Nagios check: it could not run, UNKNOWN
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result
    assert lines[0].startswith(f"backup-monitor: invalid setting {name}: "), result
    assert result.out == ""
    assert not (tmp_path / "unused.db").exists()  # it stopped before touching anything


# --- serve --------------------------------------------------------------------------------------


@pytest.mark.parametrize("uvloop", ["true", "false"])
async def test_serve_answers_health_and_stops_on_sigterm(sqlite_url, base_env, tmp_path, uvloop):
    """On uvloop (the default) and on asyncio's own loop (UVLOOP=false)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    out = tmp_path / "serve.out"
    with log.open("wb") as stderr, out.open("wb") as stdout:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "serve", "--port", str(port),
            cwd=tmp_path, env=dict(base_env, DATABASE_URL=sqlite_url, UVLOOP=uvloop),
            stdout=stdout, stderr=stderr,
        )  # fmt: skip
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
            for path in ("/health/live", "/health/ready"):
                body = await wait_for_200(client, base + path, process, log)
                assert body["status"] == "ok"
        assert process.returncode is None
        # The URL to open, once it answers.
        assert out.read_text() == (
            f"backup-monitor: the dashboard is at {base}/ (API: {base}/api/docs)\n"
        )
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.wait_for(process.wait(), 15)
        assert time.monotonic() - started < 15
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = log.read_text()
    assert code == 0, text
    assert "APScheduler scheduler started." in text
    assert "APScheduler scheduler stopped." in text
    assert "Traceback" not in text
    assert f"loop={'uvloop' if uvloop == 'true' else 'asyncio'}" in text


async def test_sigterm_lets_the_scan_under_way_end_its_job(sqlite_url, base_env, tmp_path):
    """A stop while the startup scan waits for the database: the scan is not cancelled in the
    middle (it used to be: every task was cancelled at the signal, the scheduler logged a
    traceback and the scan left no record); it ends its current job, recorded, then serve
    exits 0."""
    holder = sqlite3.connect(make_url(sqlite_url).database, timeout=1, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock: the scan's first write waits for it
    port = free_port()
    log = tmp_path / "serve.log"
    env = dict(base_env, DATABASE_URL=sqlite_url, AUTO_MIGRATE="false", TICK_SECONDS="3600")
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "serve", "--port", str(port),
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip

    async def logged(line: str) -> None:
        async with asyncio.timeout(30):
            while line not in read(log):
                assert process.returncode is None, read(log)
                await asyncio.sleep(0.05)

    try:
        await logged("Scheduled run of the backup scanner started.")
        process.send_signal(signal.SIGTERM)
        await logged("Waiting for the running scan to finish its current job.")
        holder.execute("ROLLBACK")
        code = await asyncio.wait_for(process.wait(), 30)
    finally:
        holder.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = read(log)
    assert code == 0, text
    assert "Traceback" not in text
    runs = sqlite3.connect(make_url(sqlite_url).database).execute(
        "SELECT trigger, status, error FROM scan_runs"
    )
    assert runs.fetchall() == [("schedule", "finished", None)]


# --- tokens and exposure -------------------------------------------------------------------------


async def test_sigterm_during_a_scan_lets_it_finish_its_current_job(sqlite_url, base_env, tmp_path):
    """SIGTERM while a scan runs: the app's cleanup drains it (the scan stops after the job in
    hand and records itself) while the loop still runs it; nothing is cancelled under it.

    The test holds the database's write lock from a moment the scan is seen running until the
    service says it waits for it: the scan cannot record its end in between, so the signal
    always comes during the scan (without the lock, a scan ending in the few milliseconds
    between the look and the signal made the test fail now and then)."""
    backups = tmp_path / "backups"
    make_file(backups / "a.tar", 10, datetime.now(UTC))
    source = f"{{type: local, path: '{backups}'}}"
    jobs_file = tmp_path / "jobs.yml"
    jobs_file.write_text(jobs_yaml(*(
        f"  - name: job-{index:04d}\n    schedule: {{every: 1d}}\n    source: {source}\n"
        for index in range(2000)
    )))  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = dict(base_env, DATABASE_URL=sqlite_url, JOBS_FILE=str(jobs_file))
    holder = sqlite3.connect(make_url(sqlite_url).database, timeout=30, isolation_level=None)
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "serve", "--port", str(port),
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
            await wait_for_200(client, base + "/health/live", process, log)
        scan = None
        for _ in range(1000):  # the first scan starts with the service
            holder.execute("BEGIN IMMEDIATE")  # a running scan now stays running
            scan = holder.execute(
                "SELECT id, status FROM scan_runs ORDER BY id DESC LIMIT 1"
            ).fetchone()
            if scan is not None:
                break
            holder.execute("ROLLBACK")  # not started yet: let it record its start
            await asyncio.sleep(0.01)
        assert scan is not None and scan[1] == "running", (scan, read(log))
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            while "Waiting for the running scan to finish its current job." not in read(log):
                assert process.returncode is None, read(log)
                await asyncio.sleep(0.05)
        holder.execute("ROLLBACK")
        code = await asyncio.wait_for(process.wait(), 60)
    finally:
        holder.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = read(log)
    assert code == 0, text
    assert "Traceback" not in text
    assert "CancelledError" not in text
    engine = create_engine(sqlite_url)
    try:
        async with create_sessionmaker(engine)() as session:
            status = await session.scalar(select(ScanRun.status).where(ScanRun.id == scan[0]))
    finally:
        await engine.dispose()
    assert status == "interrupted", text  # it stopped after its job: not "failed" (cancelled)


async def test_tokens_create_list_revoke(sqlite_url, base_env, tmp_path):
    run = partial(cli, env=base_env, database_url=sqlite_url, cwd=tmp_path)
    created = await run("tokens", "create", "ci")
    assert created.code == 0, created
    token = created.out.strip()
    assert token.startswith("bm_") and len(token) > 40 and "\n" not in token
    assert "shown only this once" in created.err
    reader = await run("tokens", "create", "grafana", "--read-only")
    assert reader.code == 0, reader

    duplicate, bad_name = await asyncio.gather(
        run("tokens", "create", "ci"), run("tokens", "create", "no spaces")
    )
    assert duplicate.code == 1 and "already exists" in duplicate.err, duplicate
    assert duplicate.err.count("\n") == 1 and duplicate.out == ""
    assert bad_name.code == 1 and "not a valid token name" in bad_name.err, bad_name

    listed = await run("tokens", "list")
    assert listed.code == 0, listed
    lines = listed.out.splitlines()
    assert [line.split()[:2] for line in lines] == [["ci", "read-write"], ["grafana", "read-only"]]
    assert token not in listed.out + listed.err

    revoked = await run("tokens", "revoke", "grafana")
    assert revoked.code == 0 and "revoked" in revoked.out, revoked
    unknown = await run("tokens", "revoke", "grafana")
    assert unknown.code == 1 and "no token named 'grafana'" in unknown.err, unknown
    assert [line.split()[0] for line in (await run("tokens", "list")).out.splitlines()] == ["ci"]


async def test_serve_refuses_an_open_api_beyond_loopback(sqlite_url, base_env, tmp_path):
    result = await cli(
        "serve", "--host", "0.0.0.0", "--port", str(free_port()),
        env=base_env, database_url=sqlite_url, cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 1, result
    assert "refusing to serve the API without authentication on 0.0.0.0" in result.err
    assert "--insecure-no-auth" in result.err and "tokens create" in result.err
    assert result.err.count("\n") == 1, result


@pytest.mark.parametrize("mode", ["token", "insecure"])
async def test_serve_beyond_loopback_with_a_token_or_when_told(
    mode, sqlite_url, base_env, tmp_path
):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["serve", "--host", "0.0.0.0", "--port", str(port)]
    env = dict(base_env, DATABASE_URL=sqlite_url)
    if mode == "token":
        env["API_TOKEN"] = "a-bootstrap-token-long-enough"
    else:
        args.append("--insecure-no-auth")
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", *args, cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
            await wait_for_200(client, base + "/health/live", process, log)
            async with client.get(base + "/api/v1/jobs") as response:
                assert response.status == (401 if mode == "token" else 200)
            headers = {"Authorization": "Bearer a-bootstrap-token-long-enough"}
            async with client.get(base + "/api/v1/jobs", headers=headers) as response:
                assert response.status == (200 if mode == "token" else 401)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15)
    if mode == "insecure":
        assert "serving without authentication" in log.read_text()


async def wait_for_200(
    client: aiohttp.ClientSession,
    url: str,
    process: asyncio.subprocess.Process,
    log: Path,
    timeout: float = 60,
) -> dict[str, Any]:
    """Poll `url` until it answers 200 (returning its JSON); fail early if the server died."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = "no answer"
    while loop.time() < deadline:
        if process.returncode is not None:
            pytest.fail(f"serve exited with {process.returncode}:\n{read(log)}")
        try:
            async with client.get(url) as response:
                if response.status == 200:
                    body: dict[str, Any] = await response.json()
                    return body
                last = f"{response.status} {await response.text()}"
        except aiohttp.ClientError as exc:
            last = repr(exc)
        await asyncio.sleep(0.1)
    pytest.fail(f"{url} not 200 within {timeout} s (last: {last}):\n{read(log)}")


async def test_scan_table_shows_control_characters_in_file_names_as_escapes(
    sqlite_url, base_env, tmp_path
):
    """A file name with a terminal escape or a line break is printed escaped: it can neither
    repaint the operator's terminal nor add a row to the table."""
    backups = tmp_path / "backups"
    name = "\x1b[2J\x1b[32mOK\x1b[0m\nOK      fake  x.tar"
    make_file(backups / name, 10, datetime.now(UTC) - timedelta(hours=1))
    engine = create_engine(sqlite_url)
    try:
        await add_job(
            create_sessionmaker(engine), datetime.now(UTC) - timedelta(days=3), name="db",
            source={"type": "local", "path": str(backups)}, rules={"min_size": "1KiB"},
        )  # fmt: skip
    finally:
        await engine.dispose()

    result = await cli("scan", env=base_env, database_url=sqlite_url, cwd=tmp_path)

    assert result.code == 2, result
    assert "\x1b" not in result.out
    _header, row, *reasons = result.out.splitlines()
    assert row.split()[:2] == ["CRITICAL", "db"]
    assert "\\x1b[2J\\x1b[32mOK\\x1b[0m\\nOK      fake  x.tar" in row
    assert reasons and all(line.startswith("    - ") for line in reasons)


async def test_files_that_are_not_regular_files_or_bombs_are_refused_at_once(
    sqlite_url, base_env, tmp_path
):
    """A FIFO waited for a writer for ever (as JOBS_FILE, or as a channel's ca_file), /dev/zero
    was read until memory ran out, and an alias bomb in CHANNELS_FILE kept `serve` from
    starting (issue 10 #12)."""
    fifo = tmp_path / "jobs.fifo"
    os.mkfifo(fifo)
    (tmp_path / "a-directory").mkdir()
    bomb = tmp_path / "channels.yml"
    bomb.write_text(LAUGHS + "channels: {}\n")
    # Not only the YAML files: every file a setting names (here a channel's ca_file, which
    # OpenSSL used to open and wait on) goes through the same guarded reader.
    ca_fifo = tmp_path / "ca.fifo"
    os.mkfifo(ca_fifo)
    ca_channels = tmp_path / "ca-channels.yml"
    ca_channels.write_text(
        "channels:\n  mail:\n    type: email\n    host: smtp.example.com\n"
        f"    from: a@example.com\n    to: [b@example.com]\n    ca_file: {ca_fifo}\n"
    )
    run = partial(cli, env=base_env, database_url=sqlite_url, cwd=tmp_path, timeout=60)
    port = str(free_port())
    cases = {
        "fifo": run("jobs", "apply", str(fifo)),
        "dev-zero": run("jobs", "apply", "/dev/zero"),
        "directory": run("jobs", "apply", str(tmp_path / "a-directory")),
        "serve-jobs-fifo": run("serve", "--port", port, JOBS_FILE=str(fifo)),
        "serve-channels-bomb": run("serve", "--port", port, CHANNELS_FILE=str(bomb)),
        "apply-channels-bomb": run("jobs", "apply", "/dev/null", CHANNELS_FILE=str(bomb)),
        "serve-ca-fifo": run("serve", "--port", port, CHANNELS_FILE=str(ca_channels)),
    }
    results = dict(zip(cases, await asyncio.gather(*cases.values()), strict=True))
    for case, result in results.items():
        lines = result.err.strip().splitlines()
        assert result.code == 1, f"{case}: {result}"
        assert len(lines) == 3 and lines[1].startswith("  - "), f"{case}: {result}"
        expected = "alias bomb" if "bomb" in case else "not a regular file"
        assert expected in lines[1], f"{case}: {result}"
        assert lines[2] == "nothing was written", f"{case}: {result}"
        assert result.seconds < 30, f"{case}: {result}"


async def test_scan_blames_the_database_only_when_it_is_unavailable(
    database_url, sessionmaker, base_env, tmp_path
):
    """A statement the database refuses (here a table missing: a bug, a schema changed by hand)
    is an internal error with its traceback, not "cannot scan on the database"; a database that
    cannot be reached is."""
    await add_job(sessionmaker, datetime.now(UTC), name="a", source={"type": "local", "path": "/"})
    async with sessionmaker() as session:
        await session.execute(text("ALTER TABLE scan_runs RENAME TO scan_runs_gone"))
        await session.commit()
    result = await cli("scan", env=base_env, database_url=database_url, cwd=tmp_path)
    assert result.code == 3, result
    assert "the scan failed: internal error" in result.err, result
    assert "cannot scan on the database" not in result.err, result
    assert "Traceback" in result.err, result

    unreachable = "postgresql+asyncpg://postgres@127.0.0.1:1/x"
    result = await cli(
        "scan", env=base_env, database_url=unreachable, cwd=tmp_path, AUTO_MIGRATE="false"
    )
    assert result.code == 3, result
    assert "cannot scan on the database" in result.err, result
    assert "ConnectionRefusedError" in result.err, result
    assert "Traceback" not in result.err, result


async def test_a_busy_port_fails_in_one_line_before_any_scan(sqlite_url, base_env, tmp_path):
    """The port is bound before the app starts: taken, serve says so and exits 1, and the
    start-up scan never ran (no scan recorded)."""
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        result = await cli(
            "serve", "--port", str(port), env=base_env, database_url=sqlite_url, cwd=tmp_path
        )
    finally:
        taken.close()
    assert result.code == 1, result
    said = [line for line in result.err.splitlines() if line.startswith("backup-monitor: ")]
    assert said == [
        f"backup-monitor: cannot serve on 127.0.0.1:{port}: OSError: [Errno 98] error while "
        f"attempting to bind on address ('127.0.0.1', {port}): address already in use"
    ], result
    assert "scan started" not in result.err, result
    database = sqlite3.connect(make_url(sqlite_url).database)
    try:
        assert database.execute("SELECT count(*) FROM scan_runs").fetchone() == (0,)
    finally:
        database.close()
