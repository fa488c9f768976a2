"""Alembic environment: async engine, works on PostgreSQL (asyncpg) and SQLite (aiosqlite)."""

import asyncio
import logging.config

from sqlalchemy.engine import Connection

from alembic import context
from service.db import models  # registers the tables on Base.metadata
from service.db.engine import Base, create_engine, migrations_lock

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from service.settings import get_settings

    return get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        include_object=models.include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    # Replicas started together all migrate: the lock makes them do it one after the other.
    with migrations_lock(connection):
        # Batch mode lets ALTER-style migrations run on SQLite too.
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            include_object=models.include_object,
        )
        with context.begin_transaction():
            context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_engine(database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
