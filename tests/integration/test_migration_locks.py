"""Migrations on a live PostgreSQL database: one that cannot get its table's lock gives up after
alembic/env.py's lock_timeout instead of queueing (with every reader of the table queued behind
it), and the migrations before it stay committed."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from service.db import migrate

from tests.support import asyncpg_dsn, in_thread


@pytest.mark.postgres
async def test_a_migration_gives_up_on_a_lock_held_by_a_long_transaction(pg_url):
    in_thread(lambda: migrate.downgrade(pg_url, "0006"))
    reader = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        transaction = reader.transaction()
        await transaction.start()
        # A reader's transaction left open holds ACCESS SHARE on artifacts, which 0009 alters
        # (0007 and 0008 do not touch it).
        await reader.fetch("SELECT id FROM artifacts LIMIT 1")
        started = time.monotonic()
        upgrade = asyncio.get_running_loop().run_in_executor(None, migrate.upgrade, pg_url)
        # Without a lock_timeout the upgrade waits for as long as the reader: 30 s here.
        await asyncio.wait({upgrade}, timeout=30)
        waited = time.monotonic() - started
        await transaction.rollback()
        with pytest.raises(Exception, match="lock timeout"):
            await upgrade
        assert 4 < waited < 20
        # Each migration commits on its own: 0007 and 0008 stay, 0009 was rolled back.
        assert await reader.fetchval("SELECT version_num FROM alembic_version") == "0008"
    finally:
        await reader.close()
    in_thread(lambda: migrate.upgrade(pg_url))
