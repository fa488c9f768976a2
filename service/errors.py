"""Turning exceptions into one line a person can read (no SQL, no driver boilerplate)."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

_NOISE_MARKERS = ("[SQL:", "(Background on this error")


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


def database_unavailable(exc: BaseException) -> bool:
    """True when the error says the database cannot be reached (not that a statement failed)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # A refused or timed-out connection reaches us as the driver's raw OSError; any other
    # OSError (a file, a time zone) is no outage of the database.
    return isinstance(exc, OSError) and _raised_by_driver(exc)


_DRIVER_PACKAGES = frozenset({"asyncpg", "aiosqlite", "sqlalchemy"})


def _raised_by_driver(exc: BaseException) -> bool:
    trace = exc.__traceback__
    while trace is not None:
        module = trace.tb_frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.partition(".")[0] in _DRIVER_PACKAGES:
            return True
        trace = trace.tb_next
    return False
