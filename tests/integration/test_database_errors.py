"""A database that is not available now (starting, stopping, stopped, full of clients, locked)
is a 503 `database_unavailable`, never a 500 with a traceback: against a PostgreSQL server of
the test's own, stopped and started, and a real SQLite file."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
import tempfile
import zoneinfo
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import migrate
from service.db.engine import create_engine, create_sessionmaker
from service.db.errors import database_unavailable
from service.notify.config import ChannelSet
from service.notify.dispatcher import Dispatcher, DispatchOptions, utcnow
from service.runtime.app import create_app
from service.runtime.keys import engine_key, sessionmaker_key
from service.runtime.tick import DeadlineTick
from service.scheduler import run_scanner_job
from service.settings import load_settings
from service.store.scans import keep_alive

from tests.support import PrivatePostgres, add_job, get_job, in_thread, missing

MAX_CONNECTIONS = 5


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    """A migrated PostgreSQL server of this module's own, running."""
    # Not under pytest's temporary directory: run as root, the server runs as `postgres`,
    # which may not enter it.
    directory = Path(tempfile.mkdtemp(prefix="bm-postgres-"))
    try:
        try:
            server = PrivatePostgres(directory, MAX_CONNECTIONS)
        except (FileNotFoundError, RuntimeError) as exc:
            missing(f"cannot make a private PostgreSQL server: {exc}")
        server.start()
        in_thread(lambda: migrate.upgrade(server.url))
        yield server
        if server.running():
            server.stop("immediate")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def running(postgres: PrivatePostgres) -> Iterator[PrivatePostgres]:
    """The server, running at the start and at the end of the test, whatever it did to it."""
    if not postgres.running():
        postgres.start()
    yield postgres
    if not postgres.running():
        postgres.start()


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"not true within {timeout} s")


async def error_of(work: Awaitable[object]) -> BaseException:
    try:
        await work
    except Exception as exc:
        return exc
    pytest.fail("no error")


async def select_one(engine: AsyncEngine, sql: str = "SELECT 1") -> None:
    async with engine.connect() as connection:
        await connection.execute(text(sql))


@pytest.fixture
async def admin(running: PrivatePostgres) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(running.dsn)
    yield connection
    if not connection.is_closed():
        await connection.close()


async def backends(admin: asyncpg.Connection, query: str) -> int:
    count: int = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND pid <> pg_backend_pid()", query
    )
    return count


async def test_every_way_postgresql_says_not_now_is_a_503(running, admin, aiohttp_client, caplog):
    app = create_app(load_settings(database_url=running.url), scheduler=False)
    client = await aiohttp_client(app)
    created = await client.post("/api/v1/jobs", json={"name": "a", "schedule": {"every": "1d"}})
    assert created.status == 201, await created.text()
    ping_url = f"/ping/{(await created.json())['ping_key']}"

    async def answers(state: str) -> None:
        # No pooled connection left: each request connects anew, as a replica starting up does.
        await app[engine_key].dispose()
        for path in ("/api/v1/jobs", ping_url, "/"):  # the API, a ping, the dashboard
            response = await client.get(path)
            body = await response.json()
            assert (response.status, body["error"]["code"]) == (503, "database_unavailable"), (
                state,
                path,
                body,
            )
            assert response.headers["Retry-After"] == "5", (state, path)

    # Every connection slot taken: "sorry, too many clients already" (TooManyConnectionsError).
    await app[engine_key].dispose()
    holders = [admin] + [await asyncpg.connect(running.dsn) for _ in range(MAX_CONNECTIONS - 1)]
    await answers("too many clients")
    for holder in holders[1:]:
        await holder.close()

    # Shutting down (smart: waits for the sessions open, refuses new ones): CannotConnectNowError.
    running.stop("smart", wait=False)

    async def refusing() -> bool:
        return "shutting down" in str(await error_of(asyncpg.connect(running.dsn)))

    await wait_for(refusing)
    await answers("shutting down")
    await admin.close()

    # Stopped: the connection is refused.
    await wait_for(lambda: asyncio.to_thread(lambda: not running.running()))
    await answers("stopped")

    running.start()
    assert (await client.get(ping_url)).status == 200
    assert (await client.get("/api/v1/jobs")).status == 200
    unhandled = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert unhandled == []


async def test_the_classifier_over_real_postgresql_errors(running, admin):
    engine = create_engine(running.url)
    try:
        # Terminated by the administrator in the middle of a statement (AdminShutdownError,
        # then ConnectionDoesNotExistError), through SQLAlchemy as the app sees it.
        sleeping = asyncio.create_task(error_of(select_one(engine, "SELECT pg_sleep(60)")))
        await wait_for(lambda: backends(admin, "SELECT pg_sleep(60)"))
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1",
            "SELECT pg_sleep(60)",
        )
        terminated = await sleeping
        assert database_unavailable(terminated), terminated

        # A raw asyncpg connection the server closed, used again: InterfaceError.
        raw = await asyncpg.connect(running.dsn)
        pid = await raw.fetchval("SELECT pg_backend_pid()")
        await admin.execute("SELECT pg_terminate_backend($1)", pid)

        async def noticed() -> bool:
            return bool(raw.is_closed())

        await wait_for(noticed)
        closed = await error_of(raw.fetchval("SELECT 1"))
        assert isinstance(closed, asyncpg.InterfaceError), closed
        assert database_unavailable(closed), closed

        # Statements that fail are not outages (a cancelled one neither: statement_timeout).
        for sql in ("SELECT * FROM no_such_table", "SELECT 1/0", "SELECT pg_sleep(1)"):
            async with engine.connect() as connection:
                await connection.execute(text("SET statement_timeout = '10ms'"))
                failed = await error_of(connection.execute(text(sql)))
            assert not database_unavailable(failed), failed
        insert = text(
            "INSERT INTO api_tokens (name, token_hash, read_only, created_at)"
            " VALUES ('t', 'h', false, now())"
        )
        async with engine.begin() as connection:
            await connection.execute(insert)
        async with engine.begin() as connection:
            duplicate = await error_of(connection.execute(insert))
        assert not database_unavailable(duplicate), duplicate
    finally:
        await engine.dispose()


def test_the_classifier_over_real_sqlite_and_other_errors(tmp_path: Path):
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path)
    holder.execute("CREATE TABLE t (x)")
    holder.commit()
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(path, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError) as locked:
            waiter.execute("BEGIN IMMEDIATE")
        assert database_unavailable(locked.value)
        with pytest.raises(sqlite3.OperationalError) as no_table:
            waiter.execute("SELECT * FROM no_such_table")
        assert not database_unavailable(no_table.value)
    finally:
        waiter.close()
        holder.close()
    with pytest.raises(sqlite3.OperationalError) as cannot_open:
        sqlite3.connect(tmp_path / "no" / "such" / "dir.db")
    assert database_unavailable(cannot_open.value)
    # A time zone that is a tzdata directory: an OSError, but no database outage.
    with pytest.raises(IsADirectoryError) as not_a_zone:
        zoneinfo.ZoneInfo("America/Argentina")
    assert not database_unavailable(not_a_zone.value)


async def test_background_work_logs_an_outage_as_one_line(running, caplog):
    """A scheduled scan or deadline tick while the database is stopped: one warning saying
    the database is unavailable (the next run tries again), not an error with a traceback."""
    engine = create_engine(running.url)
    sessions = create_sessionmaker(engine)
    try:
        running.stop("fast")
        with caplog.at_level(logging.INFO, logger="service.scheduler"):
            await run_scanner_job(sessions)
            await DeadlineTick(sessions).run()
    finally:
        await engine.dispose()
    records = [r for r in caplog.records if r.getMessage().startswith("Error while")]
    assert [r.levelno for r in records] == [logging.WARNING] * 2, caplog.text
    assert all(r.exc_info is None for r in records)
    assert all("database unavailable: ConnectionRefusedError" in r.getMessage() for r in records)


async def test_background_work_follows_one_logging_policy(tmp_path: Path, caplog, aiohttp_client):
    """The notification dispatcher, the scan heartbeat and the readiness check of the scanner
    log a database that is away as one warning saying so, and anything else (here a table
    missing, as a bug would) as an error with its traceback (log_failure)."""
    away = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    tableless = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")

    def logged(event: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith(event)]

    async def until_logged(event: str) -> logging.LogRecord:
        async def seen() -> bool:
            return bool(logged(event))

        await wait_for(seen)
        record = logged(event)[0]
        caplog.clear()
        return record

    def outage(record: logging.LogRecord) -> bool:
        return (
            record.levelno == logging.WARNING
            and record.exc_info is None
            and (
                "database unavailable: OperationalError: unable to open database file"
                in record.getMessage()
            )
        )

    def bug(record: logging.LogRecord) -> bool:
        return record.levelno == logging.ERROR and record.exc_info is not None

    caplog.set_level(logging.INFO)
    try:
        for engine, expected in ((away, outage), (tableless, bug)):
            stop = asyncio.Event()
            options = DispatchOptions(poll_seconds=0.05)
            dispatcher = Dispatcher(create_sessionmaker(engine), ChannelSet(), options)
            task = asyncio.create_task(dispatcher.run(stop))
            record = await until_logged("notification round failed")
            stop.set()
            await asyncio.wait_for(task, 10)
            assert expected(record), (record.levelname, record.getMessage())

            heartbeat = asyncio.create_task(keep_alive(engine, 1, utcnow, every=0.01))
            record = await until_logged("scan heartbeat failed")
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            assert expected(record), (record.levelname, record.getMessage())

        # Readiness: the database answers SELECT 1, but it has no scan history.
        settings = load_settings(database_url=str(tableless.url), auto_migrate=False)
        client = await aiohttp_client(create_app(settings, scheduler=False))
        response = await client.get("/health/ready")
        assert (await response.json())["checks"]["scanner"] == "unknown"
        record = await until_logged("readiness: scan history unreadable")
        assert bug(record), (record.levelname, record.getMessage())
    finally:
        await away.dispose()
        await tableless.dispose()


async def test_the_first_ping_after_a_database_restart_is_stored(running, aiohttp_client):
    """The ping writer keeps one connection open on PostgreSQL. A restart of the database while
    it is idle kills that connection: the next ping must still be stored and answered OK (on a
    new connection), not refused because the old one is dead."""
    app = create_app(load_settings(database_url=running.url), scheduler=False)
    client = await aiohttp_client(app)
    await add_job(
        app[sessionmaker_key], datetime.now(UTC), name="restarted", schedule={"every": "1d"}
    )
    ping_url = f"/ping/{(await get_job(app[sessionmaker_key], 'restarted')).ping_key}"
    assert (await client.post(ping_url)).status == 200
    await asyncio.to_thread(running.stop, "fast")
    await asyncio.to_thread(running.start)
    response = await client.post(ping_url)
    assert response.status == 200, await response.text()
    connection = await asyncpg.connect(running.dsn)
    try:
        stored = await connection.fetchval(
            "SELECT count(*) FROM pings JOIN jobs ON jobs.id = pings.job_id"
            " WHERE jobs.name = 'restarted'"
        )
    finally:
        await connection.close()
    assert stored == 2
