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

# PostgreSQL: a migration that cannot get its lock within 5 s fails (and `serve` retries at its
# next start) instead of queueing behind a long transaction while every reader of the table
# queues behind it; statement_timeout bounds how long one statement may hold its locks. Session
# settings, set before the first migration's transaction: they hold through every migration,
# an autocommit_block() (CREATE INDEX CONCURRENTLY) included, online and in the offline SQL. A
# step that needs longer sets its own just before it. Squawk requires both (README, Migrations).
TIMEOUTS = ("SET lock_timeout = '5s'", "SET statement_timeout = '5min'")


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from service.settings import get_settings

    return get_settings().database_url


def run_migrations_offline() -> None:
    # The SQL that DBAs review (`alembic upgrade head --sql`), PostgreSQL's: every migration
    # renders without reading rows (tests/integration/test_offline_sql.py). One transaction per
    # migration, as online.
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        transaction_per_migration=True,
        include_object=models.include_object,
    )
    if context.get_context().dialect.name == "postgresql":
        for statement in TIMEOUTS:
            context.execute(statement)
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    # Replicas started together all migrate: the lock makes them do it one after the other.
    with migrations_lock(connection):
        postgresql = connection.dialect.name == "postgresql"
        if postgresql:
            for statement in TIMEOUTS:
                connection.exec_driver_sql(statement)
            connection.commit()
        # Batch mode lets ALTER-style migrations run on SQLite too. PostgreSQL commits each
        # migration: a constraint added NOT VALID by one is validated by the next without
        # holding the first one's locks (SQLite runs them all in the lock's one transaction).
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            transaction_per_migration=postgresql,
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
