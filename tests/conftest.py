"""Shared fixtures: a fresh, migrated database per test (PostgreSQL and SQLite), a clock.

PostgreSQL databases are cloned from a template migrated once per session
(`CREATE DATABASE ... TEMPLATE`); SQLite ones are copies of a migrated file. With CI=true an
unreachable PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.db import migrate
from service.db.engine import create_engine, create_sessionmaker
from service.settings import Settings

T = TypeVar("T")

# The remote sources' real peers (S3, sshd, restic, borg fixtures), registered as a plugin once
# this module has loaded (tests/peers.py imports `missing` from here). Named by package when the
# tests become packages.
pytest_plugins = [f"{__package__}.peers" if __package__ else "peers"]

TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parent.parent
# Settings the tests decide (every setting of the service); whatever the calling shell has for
# them is left out.
OWNED_SETTINGS = {name.upper() for name in Settings.model_fields}


def missing(message: str) -> NoReturn:
    """Skip a test for want of something this machine lacks; under CI=true, fail instead (CI
    machines have every tool `make test` installs, so a skip there would hide a gap)."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: this test must run)", pytrace=False)
    pytest.skip(message)


def in_thread(function: Callable[[], T]) -> T:
    """Run blocking set-up (alembic runs its own event loop) away from any running loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function).result()


def asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def pg_admin(statement: str, url: str = TEST_DATABASE_URL) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """The name of a migrated template database, or a skip (a failure under CI=true)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"bm_template_{worker}_{os.getpid()}"
    try:
        in_thread(lambda: asyncio.run(pg_admin("SELECT 1")))
    except Exception as exc:
        missing(f"PostgreSQL at {make_url(TEST_DATABASE_URL)!r} is unreachable: {exc}")
    in_thread(lambda: asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')))
    in_thread(lambda: asyncio.run(pg_admin(f'CREATE DATABASE "{name}"')))
    template_url = make_url(TEST_DATABASE_URL).set(database=name)
    in_thread(lambda: migrate.upgrade(template_url.render_as_string(hide_password=False)))
    yield name
    in_thread(lambda: asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    in_thread(lambda: migrate.upgrade(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test, cloned from the migrated template."""
    name = f"bm_test_{uuid.uuid4().hex[:12]}"
    in_thread(lambda: asyncio.run(pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')))
    yield make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    in_thread(lambda: asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')))


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "test.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs twice: on PostgreSQL and on SQLite."""
    fixture = "pg_url" if request.param == "postgresql" else "sqlite_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


class Clock:
    """A settable clock for code that takes `clock=`; time never moves by itself."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: Any) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture(scope="session")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The current environment for the child processes, the service's settings left out."""
    env = {key: value for key, value in os.environ.items() if key.upper() not in OWNED_SETTINGS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["LOG_LEVEL"] = "INFO"
    # Compiling aiohttp, SQLAlchemy and pydantic from source (PYTHONDONTWRITEBYTECODE) costs each
    # process more than a second: let them share bytecode in a directory of this test session.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.getbasetemp() / "pycache")
    return env
