"""Which OSErrors mean "the database is unavailable" (service/db/errors.py)."""

from __future__ import annotations

import asyncio
import errno
import socket
import sqlite3

import pytest
from sqlalchemy import text

from service.db.engine import create_engine
from service.db.errors import database_unavailable
from service.store.scans import DATABASE_UNAVAILABLE, run_error


def test_an_os_error_outside_the_driver_is_no_database_outage(tmp_path):
    """A time zone naming a tzdata directory raised IsADirectoryError, answered as a 503."""
    with pytest.raises(IsADirectoryError) as caught:
        tmp_path.read_text()
    assert not database_unavailable(caught.value)
    assert not database_unavailable(OSError("never raised"))


async def test_a_refused_connection_is_a_database_outage():
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/x")
    try:
        with pytest.raises(ConnectionRefusedError) as caught:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert database_unavailable(caught.value)


async def test_a_socket_error_outside_the_driver_is_no_database_outage():
    """A client gone while its answer is written, or an asyncio.timeout around other work: not
    the database (these were answered 503 and logged "database unavailable")."""

    async def write_to_a_gone_client() -> None:
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

    with pytest.raises(ConnectionResetError) as reset:
        await write_to_a_gone_client()
    assert not database_unavailable(reset.value)
    with pytest.raises(TimeoutError) as timed_out:
        async with asyncio.timeout(0.01):
            await asyncio.Event().wait()
    assert not database_unavailable(timed_out.value)

    # Wrapped by a handler in an error of its own: still not the database.
    async def answer() -> None:
        try:
            await write_to_a_gone_client()
        except OSError as exc:
            raise RuntimeError("cannot answer") from exc

    with pytest.raises(RuntimeError) as wrapped:
        await answer()
    assert not database_unavailable(wrapped.value)
    assert not database_unavailable(BrokenPipeError(errno.EPIPE, "Broken pipe"))


async def test_a_connect_timeout_of_the_driver_is_a_database_outage():
    """asyncpg's own timeout while connecting (a server that does not answer) is."""
    with socket.socket() as silent:  # listens, never accepts: the handshake gets no answer
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        port = silent.getsockname()[1]
        engine = create_engine(
            f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x", connect_args={"timeout": 0.2}
        )
        try:
            with pytest.raises(TimeoutError) as caught:
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        finally:
            await engine.dispose()
    assert database_unavailable(caught.value), repr(caught.value)


def test_a_scan_stopped_by_a_full_database_says_the_disk_is_full(tmp_path):
    """SQLite out of room (here its page limit: SQLITE_FULL): the scan run's error names it."""
    path = tmp_path / "full.db"
    connection = sqlite3.connect(path)
    try:
        connection.execute("CREATE TABLE t (x)")
        connection.execute("PRAGMA max_page_count = 3")
        with pytest.raises(sqlite3.OperationalError) as full:
            connection.execute("INSERT INTO t VALUES (zeroblob(100000))")
    finally:
        connection.close()
    error = run_error(full.value, f"sqlite+aiosqlite:///{path}")
    assert error.startswith(DATABASE_UNAVAILABLE), error
    assert f"the disk is full ({tmp_path}, " in error, error
