"""Engine and session factory; the declarative Base with a naming convention."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, event, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, Connection, CursorResult, Dialect, Engine
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql import Executable
from sqlalchemy.types import TypeDecorator

SQLITE_BUSY_SECONDS = 30  # how long a SQLite statement waits for another connection's lock

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Whatever knows which database it talks to.
Bind = AsyncSession | AsyncEngine | AsyncConnection | Engine | Connection | Dialect


def dialect_of(bind: Bind) -> Dialect:
    """The SQL dialect a session, engine or connection speaks."""
    if isinstance(bind, Dialect):
        return bind
    if isinstance(bind, AsyncSession):
        return bind.get_bind().dialect
    return bind.dialect


def is_postgresql(bind: Bind) -> bool:
    """Whether `bind` talks to PostgreSQL (else SQLite: the only two databases supported)."""
    return dialect_of(bind).name == "postgresql"


def is_sqlite(bind: Bind) -> bool:
    """Whether `bind` talks to SQLite."""
    return dialect_of(bind).name == "sqlite"


async def rows_changed(session: AsyncSession, statement: Executable) -> int:
    """Execute an UPDATE or DELETE and return how many rows it changed (its rowcount)."""
    result = await session.execute(statement)
    return cast(CursorResult[Any], result).rowcount


async def claimed(session: AsyncSession, statement: Executable) -> bool:
    """Execute a conditional UPDATE (or DELETE) of one row, by its key, and say whether it
    changed that row: the claim's condition held. Of several sessions trying the same claim
    at once, exactly one wins (the others wait for its row lock, then find the condition
    false), so many replicas are safe without a lock of their own."""
    return await rows_changed(session, statement) == 1


# JSONB on PostgreSQL, JSON text elsewhere; Python None is SQL NULL, not JSON 'null'.
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on PostgreSQL and on SQLite (which forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if is_sqlite(dialect) else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An AsyncEngine; SQLite gets WAL, foreign keys and a busy timeout."""
    # An error's text must not carry its statement's parameters into the log: they include
    # secrets (ping keys are looked up by value).
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            _wal_mode(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    return create_async_engine(url, **kwargs)


def _wal_mode(cursor: Any, within: float = SQLITE_BUSY_SECONDS) -> None:
    """Put the database in WAL mode. Processes opening a new database file together (replicas
    started at once) make this fail at once with "database is locked": switching the journal
    mode does not wait like other statements do (measured: 28 of 30 races of four processes).
    So it is tried again for as long as a statement would wait."""
    deadline = time.monotonic() + within
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # the driver's OperationalError, as its adapter raises it
            if "database is locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def engine_of(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncEngine | None:
    """The engine the sessions are bound to (None for a stand-in without one)."""
    bind = getattr(sessionmaker, "kw", {}).get("bind")
    return bind if isinstance(bind, AsyncEngine) else None


def database_url_of(sessionmaker: async_sessionmaker[AsyncSession]) -> URL | None:
    """The URL of the database the sessions are bound to (to describe its errors)."""
    engine = engine_of(sessionmaker)
    return engine.url if engine is not None else None


async def commit_without_waiting(session: AsyncSession) -> None:
    """On PostgreSQL, let this transaction's COMMIT return before its WAL reaches the disk
    (synchronous_commit off, for this transaction only): a few milliseconds less per commit.
    Only for what may be lost when the database server itself crashes (not this process) and
    is then redone: the transaction's effect is atomic still, and the last ~0.6 s of such
    commits are all that a server crash can undo."""
    if is_postgresql(session):
        await session.execute(text("SET LOCAL synchronous_commit TO OFF"))


async def lock_for_write(session: AsyncSession) -> None:
    """On SQLite, take the database write lock now, so that what this transaction reads stays
    true until it commits (PostgreSQL callers lock rows with FOR UPDATE instead)."""
    if is_sqlite(session):
        await session.execute(text("UPDATE jobs SET id = id WHERE 0"))


# PostgreSQL advisory lock keys, one per piece of start-up work that replicas started together
# must do one after the other (any fixed 64-bit numbers; "bm" and a counter).
MIGRATIONS_LOCK = 0x626D_0001
MIGRATIONS_LOCK_POLL = 0.1  # seconds between tries of a process waiting for the migrations
JOBS_FILE_LOCK = 0x626D_0002


@contextmanager
def migrations_lock(connection: Connection) -> Iterator[None]:
    """Hold the database for the migrations run inside: a second process waits, then finds the
    schema up to date (without it, two replicas create the same tables and one crashes).

    PostgreSQL: a session-level advisory lock, so that the migrations may commit as they like
    (and build indexes CONCURRENTLY).
    SQLite: the database write lock taken now (BEGIN IMMEDIATE; others wait up to the busy
    timeout) and held until the end, which runs every migration in one transaction.
    """
    if is_postgresql(connection):

        def release() -> None:
            if connection.in_transaction():  # a failed migration leaves its transaction open
                connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATIONS_LOCK})
            connection.commit()

        # Tried, not waited for inside a transaction: the holder's CREATE INDEX CONCURRENTLY
        # waits for every transaction open in the database, and one blocked on this lock
        # would never end (a deadlock). Between tries, no transaction is open here.
        while not connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": MIGRATIONS_LOCK}
        ).scalar():
            connection.commit()
            time.sleep(MIGRATIONS_LOCK_POLL)
        connection.commit()
        try:
            yield
        except BaseException:
            # The migration's error is the one to report; a connection dead with it took the
            # lock along.
            with suppress(Exception):
                release()
            raise
        release()
    elif is_sqlite(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            connection.rollback()
            raise
        connection.commit()
    else:
        yield


async def lock_jobs_file(session: AsyncSession) -> None:
    """Until this transaction ends, be the only one applying a jobs file: replicas started
    together apply the same file one after the other, the second finding nothing to do."""
    if is_postgresql(session):
        # Transaction-level: released by the commit or the rollback, never left on a pooled
        # connection.
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": JOBS_FILE_LOCK})
    else:
        await lock_for_write(session)


async def ping(engine: AsyncEngine, within: float) -> None:
    """`SELECT 1`, or the error (TimeoutError when the database does not answer in time)."""
    async with asyncio.timeout(within), engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
