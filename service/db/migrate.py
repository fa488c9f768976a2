"""Run the alembic migrations from code (the CLI, `serve` at startup, the tests).

Start-up speed: alembic takes about half a second to import, and a command usually finds the
database already migrated. So `upgrade(url)` first asks the database for its version (one query)
and compares it with the head revision read from the migrations' file names (`0008_...py`: the
newest file's number is the head; tests/integration/test_cli_startup.py checks that this is
alembic's own head). Only a database that is not at head (new, older, or unknown to this code)
imports alembic and runs it, which takes its lock and checks again.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from service.db.engine import create_engine

if TYPE_CHECKING:
    from alembic.config import Config

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # service/
# A migration's file name starts with its revision id: 0001_initial_schema.py is "0001".
_REVISION_FILE = re.compile(r"^(\d{4})_\w+\.py$")
VERSION_TABLE = "alembic_version"


def script_location() -> Path:
    """The migrations: inside the installed wheel, or the repository's alembic/ folder."""
    for candidate in (_PACKAGE_DIR / "_migrations", _PACKAGE_DIR.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("alembic migrations not found next to the service package")


def head_revision() -> str:
    """The newest migration's revision, from the file names alone (no alembic import)."""
    revisions = [
        found[1]
        for path in (script_location() / "versions").iterdir()
        if (found := _REVISION_FILE.match(path.name))
    ]
    if not revisions:
        raise FileNotFoundError(f"no migration in {script_location() / 'versions'}")
    return max(revisions)


async def _stored_revisions(database_url: str) -> set[str]:
    """The revisions recorded in the database's version table (none when it has no table)."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            exists = await connection.run_sync(
                lambda sync: sync.dialect.has_table(sync, VERSION_TABLE)
            )
            if not exists:
                return set()
            rows = await connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            return {row[0] for row in rows}
    finally:
        await engine.dispose()


def missing_sqlite_file(database_url: str) -> str | None:
    """The path of a SQLite database file that is not there yet (connecting would create it,
    empty), absolute; None for any other database, a file that exists, or a `file:` URI (its
    query says what a connection may do: ask the database)."""
    if not database_url.startswith("sqlite"):
        return None
    database = make_url(database_url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database)
    return None if path.is_file() else str(path.absolute())


def at_head(database_url: str) -> bool:
    """Whether the database is migrated to this code's head revision (one query; blocking).
    A SQLite file that does not exist yet is not, and is not created here."""
    if database_url.startswith("sqlite") and (
        ":memory:" in database_url or missing_sqlite_file(database_url) is not None
    ):
        return False
    return asyncio.run(_stored_revisions(database_url)) == {head_revision()}


def alembic_config(database_url: str) -> Config:
    # lazy: alembic is imported only when migrations run (start-up speed, see the docstring)
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    # '%' is alembic's interpolation character; a password may contain one.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate to `revision`. Blocking; call it from a thread inside an event loop. Up to head,
    a database already there is left alone without importing alembic."""
    if revision == "head" and at_head(database_url):
        return
    # lazy: alembic is imported only when migrations run (start-up speed, see the docstring)
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    # lazy: alembic is imported only when migrations run (start-up speed, see the docstring)
    from alembic import command

    command.downgrade(alembic_config(database_url), revision)
