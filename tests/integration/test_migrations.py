"""Migrations: the stairway (up, down, up for every revision) and models == migrations."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from service import migrate
from service.db import Base, create_engine

from conftest import in_thread


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
                context = MigrationContext.configure(sync_connection)
                return compare_metadata(context, Base.metadata)

            assert await connection.run_sync(diff) == []
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert {"jobs", "artifacts", "scan_runs", "job_checks"} <= tables
    finally:
        await engine.dispose()
