"""The dialect checks and the rowcount claims of service.db.engine, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, insert, update

from service.db.engine import claimed, dialect_of, is_postgresql, is_sqlite, rows_changed
from service.db.models import ApiToken

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


async def test_the_dialect_of_a_session_an_engine_and_a_connection(
    database_url, engine, sessionmaker
):
    postgresql = database_url.startswith("postgresql")
    async with sessionmaker() as session, engine.connect() as connection:
        binds = [session, engine, connection, engine.sync_engine, engine.dialect]
        binds.append(await connection.run_sync(lambda sync: sync))
        for bind in binds:
            assert is_postgresql(bind) is postgresql, bind
            assert is_sqlite(bind) is not postgresql, bind
            assert dialect_of(bind).name == ("postgresql" if postgresql else "sqlite")


async def _token(session, name):
    values = {"name": name, "token_hash": name.ljust(64, "0"), "created_at": NOW}
    await session.execute(insert(ApiToken).values(**values))


async def test_a_claim_is_won_once(sessionmaker):
    async with sessionmaker() as session:
        await _token(session, "a")
        await session.commit()
    claim = update(ApiToken).where(ApiToken.name == "a", ApiToken.read_only.is_(False))
    async with sessionmaker() as first:
        assert await claimed(first, claim.values(read_only=True)) is True
        await first.commit()
    async with sessionmaker() as second:
        assert await claimed(second, claim.values(read_only=True)) is False
        assert await claimed(second, delete(ApiToken).where(ApiToken.name == "nobody")) is False
        assert await claimed(second, delete(ApiToken).where(ApiToken.name == "a")) is True


async def test_rows_changed_counts_every_row(sessionmaker):
    async with sessionmaker() as session:
        for name in ("a", "b", "c"):
            await _token(session, name)
        changed = await rows_changed(
            session, update(ApiToken).where(ApiToken.name != "b").values(read_only=True)
        )
        assert changed == 2
        assert await rows_changed(session, delete(ApiToken).where(ApiToken.name == "d")) == 0
        assert await rows_changed(session, delete(ApiToken)) == 3
