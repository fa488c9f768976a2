"""Shared fixtures: a fresh, migrated database per test (PostgreSQL and SQLite), a clock, the
service's application on that database (`make_app(**settings)`, and `app`/`client` made with it).

PostgreSQL databases are cloned from a template migrated once per session
(`CREATE DATABASE ... TEMPLATE`); SQLite ones are copies of a migrated file. With CI=true an
unreachable PostgreSQL fails the run instead of skipping.

Fixtures only: the helpers tests import (missing, TEST_DATABASE_URL, Clock, add_job, ...) are in
tests/support.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.db import migrate
from service.db.engine import create_engine, create_sessionmaker
from service.notify.config import ChannelSet
from service.runtime.app import create_app
from service.settings import load_settings

from tests.support import (
    OWNED_SETTINGS,
    REPO,
    TEST_DATABASE_URL,
    Clock,
    in_thread,
    missing,
    pg_admin,
)

# The remote sources' real peers (S3, sshd, restic, borg fixtures), registered as a plugin.
pytest_plugins = ["tests.peers"]


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


@pytest.fixture
def make_app(database_url: str) -> Callable[..., web.Application]:
    """A factory of the service's application on this test's database (so each test using it
    runs on PostgreSQL and on SQLite): `make_app(**settings)` is
    `create_app(load_settings(database_url=..., **settings), scheduler=False)`; `scheduler`,
    `open_access` and `channels` are create_app's options, every other keyword a setting."""

    def make(
        *,
        scheduler: bool = False,
        open_access: bool = True,
        channels: ChannelSet | None = None,
        **settings: Any,
    ) -> web.Application:
        return create_app(
            load_settings(database_url=database_url, **settings),
            scheduler=scheduler,
            open_access=open_access,
            channels=channels,
        )

    return make


@pytest.fixture
async def app(make_app: Callable[..., web.Application]) -> web.Application:
    """The application with default settings and no scheduler; a module that needs other
    settings or channels overrides this fixture with its own `make_app(...)` call."""
    return make_app()


@pytest.fixture
async def client(aiohttp_client: Any, app: web.Application) -> Any:
    """A test client of `app` over a real server on a real port."""
    return await aiohttp_client(app)
