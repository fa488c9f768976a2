"""`jobs list`, `jobs export` and `jobs apply --dry-run`, run as the real command on PostgreSQL and
SQLite: an export applied back changes nothing (on the same database, and on a new one it
recreates the same declarations); a dry run prints the plan and writes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import yaml
from sqlalchemy import func, select

from service.db.engine import create_engine, create_sessionmaker
from service.db.models import Job, ScanRun
from service.store.jobs import stored_declaration

from tests.support import Result, cli

JOBS = """
jobs:
  - name: db-dump
    description: "nightly pg_dump"
    tags: [db, prod]
    source: {path: BACKUPS/db, pattern: "*.sql.gz"}
    schedule: {cron: "30 2 * * *", timezone: Europe/Paris}
    grace: 2h
    rules: {min_size: 1MiB, max_size_drop: 50%, min_count: 3}
    notify: {after: 2, for: 10m}
    retention: {daily: 7, monthly: 12, strict: true}
  - name: offsite
    source:
      type: s3
      bucket: my-backups
      prefix: "nightly/"
      endpoint_url: "http://127.0.0.1:9"
      access_key_id: AKIA
      secret_access_key: "${OFFSITE_SECRET}"
    schedule: {every: 1d}
  - name: heartbeat
    schedule: {every: 1h}
    grace: 5m
    paused: true
"""


async def declarations(url: str) -> dict[str, dict[str, Any]]:
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            jobs = (await session.scalars(select(Job))).all()
            return {job.name: stored_declaration(job) for job in jobs}
    finally:
        await engine.dispose()


async def rows(url: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """Scan runs and every column of every job: what any write would change."""
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            runs = await session.scalar(select(func.count()).select_from(ScanRun))
            jobs = (await session.scalars(select(Job))).all()
            columns = Job.__table__.columns
            return runs or 0, {j.name: {c.key: getattr(j, c.key) for c in columns} for j in jobs}
    finally:
        await engine.dispose()


async def test_export_round_trips_and_dry_run_writes_nothing(database_url, base_env, tmp_path):
    async def run(*args: str, url: str = database_url) -> Result:
        return await cli(*args, env=base_env, database_url=url, cwd=tmp_path)

    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text(JOBS.replace("BACKUPS", str(tmp_path / "backups")))
    applied = await run("jobs", "apply", str(jobs_file))
    assert applied.code == 0, applied
    assert applied.out.strip() == "3 created, 0 updated, 0 unchanged, 0 deleted", applied
    before = await rows(database_url)

    exported, listed = await asyncio.gather(
        run("jobs", "export", "-o", str(tmp_path / "export.yaml")), run("jobs", "list")
    )
    assert exported.code == 0, exported
    assert listed.code == 0, listed
    text = (tmp_path / "export.yaml").read_text()
    document = yaml.safe_load(text)
    assert [job["name"] for job in document["jobs"]] == ["db-dump", "heartbeat", "offsite"]
    # Only what differs from the defaults, the source's kind always said.
    assert document["jobs"][1] == {
        "name": "heartbeat", "schedule": {"every": 3600}, "grace": 300, "paused": True,
    }  # fmt: skip
    assert document["jobs"][0]["source"]["type"] == "local"
    assert document["jobs"][0]["notify"] == {"after": 2, "for": 600}
    assert document["jobs"][0]["retention"] == {"daily": 7, "monthly": 12, "strict": True}
    assert document["jobs"][2]["source"]["secret_access_key"] == "${OFFSITE_SECRET}"

    lines = listed.out.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "SOURCE", "SCHEDULE"], listed
    assert lines[1].split() == [
        "db-dump", "pending", "local", str(tmp_path / "backups" / "db"), "cron", "30", "2", "*",
        "*", "*", "(Europe/Paris)",
    ], listed  # fmt: skip
    assert lines[2].split() == [
        "heartbeat",
        "paused",
        "heartbeat",
        "(pings",
        "only)",
        "every",
        "60",
        "min",
    ]
    assert lines[3].split()[:3] == ["offsite", "pending", "s3"], listed
    assert "s3://my-backups/nightly/" in lines[3] and lines[3].endswith("every 24 h"), listed
    assert len(lines) == 4, listed

    # Applied back to the same database: nothing changes, not even a timestamp.
    again = await run("jobs", "apply", str(tmp_path / "export.yaml"), "--prune")
    assert again.code == 0, again
    assert again.out.strip() == "0 created, 0 updated, 3 unchanged, 0 deleted", again
    assert await rows(database_url) == before
    # Applied to a new database (SQLite, migrated by the command): the same declarations.
    other = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    fresh = await run("jobs", "apply", str(tmp_path / "export.yaml"), url=other)
    assert fresh.code == 0, fresh
    assert fresh.out.strip() == "3 created, 0 updated, 0 unchanged, 0 deleted", fresh
    assert await declarations(other) == await declarations(database_url)

    # A dry run: one job changed, one new, one gone (with --prune); nothing written.
    changed = JOBS.replace("BACKUPS", str(tmp_path / "backups")).replace("grace: 2h", "grace: 3h")
    changed = changed.replace("  - name: heartbeat\n", "  - name: beacon\n")
    changed_file = tmp_path / "changed.yaml"
    changed_file.write_text(changed)
    dry, dry_no_prune = await asyncio.gather(
        run("jobs", "apply", "--dry-run", "--prune", str(changed_file)),
        run("jobs", "apply", "--dry-run", str(changed_file)),
    )
    assert dry.code == 0, dry
    assert dry.out.splitlines() == [
        "+ beacon",
        "~ db-dump",
        "    grace: 7200 -> 10800",
        "- heartbeat",
        "would create 1, change 1, delete 1 (unchanged 1); nothing was written",
    ], dry
    assert dry_no_prune.out.splitlines()[-1] == (
        "would create 1, change 1, delete 0 (unchanged 1); nothing was written"
    ), dry_no_prune
    assert "- heartbeat" not in dry_no_prune.out
    assert await rows(database_url) == before
