"""Turning exceptions into one line a person can read (no SQL, no driver boilerplate), and
telling "the database is not available now" apart from a statement that failed."""

from __future__ import annotations

import errno
import logging
import shutil
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]  # no stubs
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

_NOISE_MARKERS = ("[SQL:", "(Background on this error")

# PostgreSQL SQLSTATEs that mean "not now" rather than "not this statement": connection
# exceptions (08), insufficient resources (53: too many clients, disk full, out of memory),
# operator intervention 57P (shutting down, starting up, terminated by the administrator: not
# 57014, a cancelled statement), and a read-only transaction (a standby during a failover).
_PG_UNAVAILABLE_PREFIXES = ("08", "53", "57P")
_PG_UNAVAILABLE_STATES = frozenset({"25006"})
_PG_DISK_FULL = "53100"
# SQLite primary result codes that say the same: locked past the busy timeout, cannot open the
# file, an I/O error, the disk full, a read-only file, a WAL protocol race.
_SQLITE_UNAVAILABLE = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PROTOCOL,
})  # fmt: skip
# Socket errors on the way to a database server (a refused or reset connection, no route).
_NETWORK_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.ENETDOWN, errno.ETIMEDOUT, errno.EADDRNOTAVAIL, errno.EPIPE,
})  # fmt: skip
# Where the database's own errors come from: a socket error raised in these is the database's.
_DRIVER_MODULES = frozenset({"asyncpg", "aiosqlite", "sqlalchemy"})
_DRIVER_ERRORS = (DBAPIError, asyncpg.PostgresError, asyncpg.InterfaceError, sqlite3.Error)
# SQLite reports some writes to a full disk as a mere "disk I/O error": below this much free
# space in the database's directory, that is taken to be the cause.
_NEARLY_FULL_BYTES = 1024 * 1024


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then what it wraps (the driver's error, its cause), once each. Not the
    context: an error raised while handling another is not that other one."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen or len(seen) > 20:
            continue
        seen.add(id(current))
        yield current
        orig = current.orig if isinstance(current, DBAPIError) else None
        pending += [orig if isinstance(orig, BaseException) else None]
        pending.append(current.__cause__)


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` of the most telling exception in the chain, on one line."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        # SQLAlchemy wraps the driver's error, which may itself wrap asyncpg's.
        exc = exc.orig.__cause__ or exc.orig
    while not str(exc) and exc.__cause__ is not None:
        exc = exc.__cause__
    text = " ".join(str(exc).split())
    for marker in _NOISE_MARKERS:
        text = text.split(marker)[0].strip()
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:limit]


def _sqlite_code(error: BaseException) -> int | None:
    code = getattr(error, "sqlite_errorcode", None) if isinstance(error, sqlite3.Error) else None
    return code & 0xFF if isinstance(code, int) else None  # the primary code


def _sqlstate(error: BaseException) -> str | None:
    state = getattr(error, "sqlstate", None)
    return state if isinstance(state, str) else None


def _raised_by_driver(error: BaseException) -> bool:
    """Whether the error was raised inside the database driver or SQLAlchemy (a connect, the
    pool's checkout, a statement), as its traceback shows."""
    frame = error.__traceback__
    while frame is not None:
        module = frame.tb_frame.f_globals.get("__name__")
        if isinstance(module, str) and module.partition(".")[0] in _DRIVER_MODULES:
            return True
        frame = frame.tb_next
    return False


def _socket_trouble(error: BaseException) -> bool:
    if isinstance(error, ConnectionError | TimeoutError | socket.gaierror):
        return True
    # Not any OSError (a file or a time zone that cannot be read is no database outage): a
    # socket's, or asyncio's "Multiple exceptions: ... Connect call failed" with no errno.
    return isinstance(error, OSError) and (
        error.errno in _NETWORK_ERRNOS or "Connect call failed" in str(error)
    )


def _unavailable_here(error: BaseException, wrapped: bool) -> bool:
    """`wrapped`: an error of SQLAlchemy or the driver wraps this one."""
    if _socket_trouble(error):
        # Only the database's connection: a client gone while its answer is written, or an
        # asyncio.timeout around other work, is no database outage.
        return wrapped or _raised_by_driver(error)
    if isinstance(error, PoolTimeoutError):  # every pooled connection busy past the timeout
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    state = _sqlstate(error)
    if state is not None:
        return state.startswith(_PG_UNAVAILABLE_PREFIXES) or state in _PG_UNAVAILABLE_STATES
    if isinstance(error, asyncpg.InterfaceError):
        # A connection the server closed, used again; not the driver refusing a misuse.
        return "closed" in str(error)
    return _sqlite_code(error) in _SQLITE_UNAVAILABLE


def database_unavailable(exc: BaseException) -> bool:
    """True when the error says the database cannot serve now (down, starting up, shutting down,
    unreachable, full, locked), so that trying again later may work; False for a statement
    that failed (a constraint, a bug). The one classifier: API, pings, dashboard, CLI, scans."""
    wrapped = False
    for error in causes(exc):
        if _unavailable_here(error, wrapped):
            return True
        wrapped = wrapped or isinstance(error, _DRIVER_ERRORS)
    return False


def _sqlite_directory(database_url: str | URL | None) -> Path | None:
    if database_url is None:
        return None
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        return None
    try:
        return Path(url.database).resolve().parent
    except (OSError, RuntimeError):  # a symlink loop: describing an error must not raise
        return Path(url.database).absolute().parent


def full_disk(exc: BaseException, database_url: str | URL | None = None) -> str | None:
    """Where the disk is full when that is why the error happened (a path, or "the database
    server"); None otherwise. SQLite may call it a "disk I/O error": then the free space of the
    database's directory decides."""
    directory = _sqlite_directory(database_url)
    for error in causes(exc):
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return error.filename or (str(directory) if directory else "the disk")
        if _sqlstate(error) == _PG_DISK_FULL:
            return "the database server's disk"
        code = _sqlite_code(error)
        if code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR) and directory is not None:
            try:
                free = shutil.disk_usage(directory).free
            except OSError:
                continue
            if code == sqlite3.SQLITE_FULL or free < _NEARLY_FULL_BYTES:
                return f"{directory}, {free // 1024} KiB free"
    return None


def describe_database_error(exc: BaseException, database_url: str | URL | None = None) -> str:
    """describe_error, led by "the disk is full" when that is the cause."""
    text = describe_error(exc)
    where = full_disk(exc, database_url)
    return f"the disk is full ({where}): {text}" if where is not None else text


def log_failure(
    log: logging.Logger,
    event: str,
    exc: BaseException,
    database_url: str | URL | None = None,
    **extra: object,
) -> None:
    """Log a failed piece of background work: a database that is away (or a full disk) is
    one warning line saying so, again at each attempt; anything else is a bug, logged as an
    error with its traceback."""
    if database_unavailable(exc):
        text = describe_database_error(exc, database_url)
        log.warning("%s: database unavailable: %s", event, text, extra=extra)
    else:
        log.error("%s: %s", event, describe_error(exc), exc_info=exc, extra=extra)
