"""Run the alembic migrations from code (the CLI, `serve` at startup, the tests)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from alembic import command

_PACKAGE_DIR = Path(__file__).resolve().parent


def script_location() -> Path:
    """The migrations: inside the installed wheel, or the repository's alembic/ folder."""
    for candidate in (_PACKAGE_DIR / "_migrations", _PACKAGE_DIR.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("alembic migrations not found next to the service package")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    # '%' is alembic's interpolation character; a password may contain one.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate to `revision`. Blocking; call it from a thread inside an event loop."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
