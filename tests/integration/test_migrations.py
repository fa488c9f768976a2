"""Migrations: the stairway (up, down, up for every revision) and models == migrations."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Boolean, Integer, String, column, insert, inspect, select, table, text

from service.db import migrate
from service.db.engine import Base, JSONType, UTCDateTime, create_engine
from service.db.models import ScanRun, include_object
from service.store.scans import DURATION_BUCKETS, bucket_name

from tests.support import asyncpg_dsn, in_thread


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


@pytest.fixture
def empty_database_url(request, tmp_path):
    """An empty database: a fresh PostgreSQL one (from the suite's template, then downgraded
    to nothing) or a new SQLite file."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'stairway.db'}"
    url = request.getfixturevalue("pg_url")
    in_thread(lambda: migrate.downgrade(url, "base"))
    return url


@pytest.mark.parametrize("empty_database_url", ["postgresql", "sqlite"], indirect=True)
@pytest.mark.parametrize("revision", revisions())
def test_stairway(empty_database_url, revision):
    """Every revision can go up, down and up again (catches downgrades that forget things)."""
    previous = (
        revisions()[revisions().index(revision) - 1] if revisions()[0] != revision else "base"
    )
    in_thread(lambda: migrate.upgrade(empty_database_url, previous))
    in_thread(lambda: migrate.upgrade(empty_database_url, revision))
    in_thread(lambda: migrate.downgrade(empty_database_url, previous))
    in_thread(lambda: migrate.upgrade(empty_database_url, revision))


async def test_models_match_migrations(database_url):
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:

            def diff(sync_connection):
                # What env.py compares: the optional search indexes aside (tested below).
                context = MigrationContext.configure(
                    sync_connection, opts={"include_object": include_object}
                )
                return compare_metadata(context, Base.metadata)

            assert await connection.run_sync(diff) == []
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert {"jobs", "artifacts", "scan_runs", "job_checks"} <= tables
    finally:
        await engine.dispose()


@pytest.mark.parametrize("empty_database_url", ["postgresql", "sqlite"], indirect=True)
async def test_0006_counts_jobs_at_their_told_status_as_told_of_their_reasons(
    empty_database_url,
):
    """The upgrade sends nothing by itself: a job standing at the status it was told of is
    told of its reasons; one told, then paused, keeps "not known" (NULL)."""
    in_thread(lambda: migrate.upgrade(empty_database_url, "0005"))
    late = [{"code": "late", "severity": "critical", "message": "newest backup is 2 d old"}]
    now = datetime(2026, 11, 29, tzinfo=UTC)
    jobs = table(
        "jobs", column("name", String()), column("ping_key", String()),
        column("description", String()), column("tags", JSONType), column("schedule", JSONType),
        column("grace", Integer()), column("rules", JSONType), column("notify", JSONType),
        column("paused", Boolean()), column("created_at", UTCDateTime()),
        column("updated_at", UTCDateTime()), column("status", String()),
        column("reasons", JSONType), column("artifact_count", Integer()),
        column("notified_status", String()), column("notified_reasons", JSONType),
    )  # fmt: skip
    base = {
        "description": "", "tags": [], "schedule": {"every": 86400}, "grace": 0, "rules": {},
        "notify": {}, "created_at": now, "updated_at": now, "artifact_count": 0,
    }  # fmt: skip
    rows = [
        {"name": "told", "ping_key": "k1", "paused": False, "status": "critical",
         "reasons": late, "notified_status": "critical"},
        {"name": "paused", "ping_key": "k2", "paused": True, "status": "paused",
         "reasons": [], "notified_status": "critical"},
        {"name": "new", "ping_key": "k3", "paused": False, "status": "pending",
         "reasons": [], "notified_status": None},
    ]  # fmt: skip
    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            # Only the columns named in the rows are written (0005 has no notified_reasons).
            await connection.execute(insert(jobs), [{**base, **row} for row in rows])
        await engine.dispose()
        in_thread(lambda: migrate.upgrade(empty_database_url, "0006"))
        async with engine.connect() as connection:
            found = dict(
                (await connection.execute(select(jobs.c.name, jobs.c.notified_reasons))).all()
            )
    finally:
        await engine.dispose()
    assert found == {"told": late, "paused": None, "new": None}


@pytest.mark.parametrize("empty_database_url", ["postgresql", "sqlite"], indirect=True)
def test_the_migration_fills_the_counters_from_the_scans_recorded(empty_database_url, clock):
    """Upgrading keeps /metrics' counters where they were: 0013 sums the existing scans."""
    in_thread(lambda: migrate.upgrade(empty_database_url, "0010"))
    now = clock.now
    durations = [0.05, 3.0, 45.0, 1000.0]
    statuses = ("finished", "failed", "abandoned", "finished")
    rows = [
        {"trigger": "interval", "status": status, "started_at": now,
         "finished_at": now + timedelta(seconds=seconds), "jobs_scanned": 1,
         "artifacts_new": 2, "artifacts_changed": 0, "artifacts_gone": 0, "errors": 1,
         "error_details": []}
        for status, seconds in zip(statuses, durations, strict=True)
    ]  # fmt: skip
    rows.append({**rows[0], "status": "running", "finished_at": None})

    async def fill() -> dict[str, float]:
        engine = create_engine(empty_database_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(insert(ScanRun), rows)
            in_thread(lambda: migrate.upgrade(empty_database_url, "0013"))
            async with engine.connect() as connection:
                result = await connection.execute(text("SELECT name, value FROM scan_counters"))
                return {name: value for name, value in result.all()}
        finally:
            await engine.dispose()

    counters = in_thread(lambda: asyncio.run(fill()))
    assert counters["scans"] == 4
    assert counters["failed"] == 2
    assert counters["errors"] == 4 and counters["artifacts_new"] == 8
    assert counters["duration_seconds_sum"] == pytest.approx(sum(durations), abs=1e-3)
    assert [counters[bucket_name(le)] for le in DURATION_BUCKETS] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert counters["last_finished_timestamp"] == pytest.approx(
        (now + timedelta(seconds=1000)).timestamp(), abs=1e-3
    )


@pytest.mark.parametrize(
    ("revision", "index"),
    [("0016", "ix_artifacts_gone_since"), ("0017", "ix_notification_deliveries_pending_by_event")],
)
async def test_an_index_build_that_timed_out_is_built_again(pg_url, revision, index):
    """CREATE INDEX CONCURRENTLY waits for the transactions older than its build; past the
    migrations' lock_timeout (5 s) it fails, and PostgreSQL leaves an INVALID index. The next
    upgrade to the head (`serve` tries again at its next start) builds it again (0018), where
    IF NOT EXISTS alone would keep the invalid one for good."""
    previous = revisions()[revisions().index(revision) - 1]
    await asyncio.to_thread(migrate.downgrade, pg_url, previous)
    reader = await asyncpg.connect(asyncpg_dsn(pg_url))
    query = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)"
    try:
        # An idle transaction that holds a snapshot (a report left open): older than the build.
        await reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM jobs")
        with pytest.raises(Exception, match="lock timeout"):
            await asyncio.to_thread(migrate.upgrade, pg_url, revision)
        await reader.execute("ROLLBACK")
        assert await reader.fetchval(query, index) is False  # left INVALID by the failure
        await asyncio.to_thread(migrate.upgrade, pg_url)
        assert await reader.fetchval(query, index) is True
    finally:
        await reader.close()


async def test_indexes_left_invalid_by_an_earlier_upgrade_are_built_again(pg_url):
    """A database whose 0016 or 0017 kept an INVALID index, recorded as done: 0018 builds it
    again, valid, and leaves a valid one be."""
    names = ("ix_artifacts_gone_since", "ix_notification_deliveries_pending_by_event")
    await asyncio.to_thread(migrate.downgrade, pg_url, "0017")
    connection = await asyncpg.connect(asyncpg_dsn(pg_url))
    query = "SELECT indisvalid, indexrelid FROM pg_index WHERE indexrelid = to_regclass($1)"
    try:
        # What a failed CONCURRENTLY build leaves (PostgreSQL's own flag; the test's role may).
        await connection.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass($1)", names[0]
        )
        valid_before = await connection.fetchrow(query, names[1])
        await asyncio.to_thread(migrate.upgrade, pg_url, "0018")
        assert (await connection.fetchrow(query, names[0]))["indisvalid"] is True
        # The valid one is the very same index, not built again.
        assert await connection.fetchrow(query, names[1]) == valid_before
    finally:
        await connection.close()
