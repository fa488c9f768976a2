"""Start-up: what a command does to a database and its files before it serves or scans.

`prepare_to_serve` is what `serve` (and `demo`, through it) does before it listens, in this
order: load CHANNELS_FILE (a wrong file stops here, nothing touched), migrate the database
(unless AUTO_MIGRATE=false: then only check that it answers), check the API's exposure (no open
API beyond loopback), apply JOBS_FILE. The other helpers are the steps, for the commands that
need only one (`db upgrade`, `jobs apply`, `tokens`).

Every failure a user can cause is a `StartupError`: one line for stderr, with an exit code. A
failing database step names the database (password hidden) and what went wrong.

Imports the database, the migrations, the jobs file, the channels and the tokens; never the
command line, the demo, the app or the server (they import this).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from service.config.jobsfile import apply_jobs, dry_run_jobs, load_declarations
from service.config.yamlfile import FileProblems
from service.core.hosts import is_loopback
from service.db import migrate
from service.db.engine import create_engine, create_sessionmaker, ping
from service.db.errors import describe_database_error
from service.notify.config import ChannelSet, load_channels
from service.settings import Settings
from service.store.tokens import TokenError, any_token

logger = logging.getLogger(__name__)

T = TypeVar("T")
# The exit code of a command asked for something it cannot do as asked (bad settings, a wrong
# directory), as argparse exits on a bad command line.
EXIT_USAGE = 2


class StartupError(Exception):
    """A failure to report as one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def safe_url(url: str) -> str:
    """The database URL to show a person: the password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def database_step(settings: Settings, what: str, step: Callable[[], T]) -> T:
    """Run `step`; any failure but the user's own (a StartupError, a file's problems, a token
    error) becomes a StartupError naming the database: `cannot WHAT on the database URL: ...`."""
    try:
        return step()
    except (KeyboardInterrupt, StartupError, FileProblems, TokenError):
        raise
    except Exception as exc:
        where = safe_url(settings.database_url)
        error = describe_database_error(exc, settings.database_url)
        raise StartupError(f"cannot {what} on the database {where}: {error}") from exc


def upgrade_database(settings: Settings) -> None:
    database_step(settings, "run the migrations", lambda: migrate.upgrade(settings.database_url))


def schema_checked(
    settings: Settings, what: str, work: Callable[[Any], Awaitable[T]]
) -> Callable[[Any], Awaitable[T]]:
    """`work(session)` for a command that migrates nothing, told in one line when the database
    was never migrated, not as a missing table: a SQLite file not there (not created, raised
    now), or no `jobs` table (a catalog lookup on the work's own connection, which needs no
    grant on any table: a monitoring role that may read `jobs` only can run it)."""
    url = settings.database_url
    hint = "(is DATABASE_URL the service's?); `backup-monitor db upgrade` makes it"
    if (path := migrate.missing_sqlite_file(url)) is not None:
        raise StartupError(
            f"cannot {what}: the database file {path} does not exist {hint}, and so does "
            "starting the service"
        )

    async def checked(session: Any) -> T:
        if not await session.run_sync(lambda sync: inspect(sync.connection()).has_table("jobs")):
            raise StartupError(
                f"cannot {what}: the database {safe_url(url)} has no tables yet {hint}, and so "
                "does starting the service"
            )
        try:
            return await work(session)
        except DBAPIError as exc:
            # A column or table this version reads and the database lacks: say why, if its
            # schema is another version's (asked only now: a read that works needs no grant
            # on the version table).
            if (why := await other_schema(session)) is not None:
                raise StartupError(f"cannot {what}: the database {safe_url(url)} {why}") from exc
            raise

    return checked


async def other_schema(session: Any) -> str | None:
    """Why the database's tables are not this version's (migrated to an older revision, or by a
    newer version), or None when they are, or when the version table cannot be read."""
    try:
        await session.rollback()
        read = text("SELECT version_num FROM alembic_version")
        stored = set(await session.scalars(read))
    except DBAPIError:
        return None
    head = migrate.head_revision()
    if stored == {head}:
        return None
    found = ", ".join(sorted(stored)) or "none"
    if all(revision < head for revision in stored):
        return (
            f"is at schema revision {found}, older than this version's {head}: "
            "`backup-monitor db upgrade` brings it up to date, and so does starting the service"
        )
    return (
        f"is at schema revision {found}, not this version's {head}: it was migrated by a "
        "newer backup-monitor, run that one"
    )


async def with_session(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """`work(session)` on an engine of its own, disposed after."""
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            return await work(session)
    finally:
        await engine.dispose()


def apply_file(settings: Settings, path: str, *, prune: bool, dry_run: bool = False) -> str:
    """Apply a jobs file in one transaction; return its summary. Everything is validated before
    any write, the channels the jobs name included (FileProblems, and nothing written).
    `dry_run`: only read, and return what applying would do to the jobs (JobsPlan.render)."""
    channels = load_channels(settings.channels_file).channels
    declared = load_declarations(path, settings.scan_roots, channels)

    async def work(session: Any) -> str:
        if dry_run:
            return (await dry_run_jobs(session, declared.jobs, prune=prune)).render()
        result = await apply_jobs(session, declared.jobs, silences=declared.silences, prune=prune)
        return result.summary()

    # Nothing is migrated by a dry run.
    run = schema_checked(settings, "apply the jobs", work) if dry_run else work
    return database_step(
        settings, "apply the jobs", lambda: asyncio.run(with_session(settings, run))
    )


async def check_database(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        await ping(engine, 15)
    finally:
        await engine.dispose()


def check_exposure(settings: Settings, host: str, insecure: bool) -> bool:
    """Whether the API may answer without a token; refuse to serve an open API beyond loopback.

    Returns the `open_access` flag for create_app.
    """
    if is_loopback(host):
        return True
    if insecure:
        logger.warning("serving without authentication", extra={"host": host})
        return True
    if settings.api_token is None and not asyncio.run(with_session(settings, any_token)):
        raise StartupError(
            f"refusing to serve the API without authentication on {host}: create a token with "
            "`backup-monitor tokens create NAME` (or set API_TOKEN), listen on 127.0.0.1, or "
            "pass --insecure-no-auth if something in front of this server checks access"
        )
    return False


@dataclass(frozen=True, slots=True)
class ReadyToServe:
    """What create_app needs from start-up."""

    channels: ChannelSet
    open_access: bool


def prepare_to_serve(settings: Settings, host: str, *, insecure: bool) -> ReadyToServe:
    """Everything `serve` does before it listens (see the module's docstring for the order)."""
    channels = load_channels(settings.channels_file)  # a wrong file stops here, nothing touched
    if settings.auto_migrate:
        upgrade_database(settings)
    else:  # fail now, with one line, rather than serve errors
        database_step(settings, "connect", lambda: asyncio.run(check_database(settings)))
    open_access = database_step(
        settings, "read the API tokens", lambda: check_exposure(settings, host, insecure)
    )
    if settings.jobs_file is not None:
        summary = apply_file(settings, str(settings.jobs_file), prune=False)
        logger.info("jobs file applied", extra={"file": str(settings.jobs_file), "result": summary})
    return ReadyToServe(channels=channels, open_access=open_access)
