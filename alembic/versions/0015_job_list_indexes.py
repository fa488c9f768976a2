"""Indexes for the job list at 10 000 jobs: by status (then name), and on PostgreSQL trigram
indexes for the `q` text search in name and description.

`?status=critical` counted and paged by a scan of the whole jobs table (~1 000 pages at
10 000 jobs: the rows are wide); (status, name, id) makes the count an index-only scan, the
page an index scan in order, and the dashboard's worst-first order of every job a sort of
that index alone (the page's rows are then read by id). `?q=` (ILIKE '%text%' on name or
description) evaluated both columns of every row, twice (count and page); pg_trgm's GIN
indexes find the candidates. pg_trgm is in PostgreSQL's contrib (Debian's postgresql package, the official image, managed
services) and is a trusted extension (PostgreSQL 13+: the database owner may create it);
where it cannot be created the search indexes are left out and `q` still works, by a scan.
SQLite gets the status index only (its LIKE has no index for a substring).

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import context, op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger("alembic.runtime.migration")
# Optional (PostgreSQL with pg_trgm only): service.db.models.OPTIONAL_INDEXES names them too.
SEARCH_INDEXES = {"ix_jobs_name_trgm": "name", "ix_jobs_description_trgm": "description"}


def _trigram_extension(bind: sa.Connection) -> bool:
    """pg_trgm is there, or could be created now (a failure rolls back to a savepoint only)."""
    if bind.scalar(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")):
        return True
    if not bind.scalar(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")):
        logger.warning("pg_trgm is not installed (PostgreSQL contrib): no index for ?q=")
        return False
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        logger.warning("cannot create pg_trgm (%s): no index for ?q=", exc.orig)
        return False
    return True


def upgrade() -> None:
    op.create_index("ix_jobs_status_name", "jobs", ["status", "name", "id"])
    if op.get_context().dialect.name != "postgresql":
        return
    if context.is_offline_mode():
        # The SQL a DBA reviews asks for the extension; where it may not be created, leave out
        # the extension and the two trigram indexes: the search works without them.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    elif not _trigram_extension(op.get_bind()):
        return
    for name, column in SEARCH_INDEXES.items():
        op.create_index(
            name, "jobs", [column], postgresql_using="gin",
            postgresql_ops={column: "gin_trgm_ops"},
        )  # fmt: skip


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for name in SEARCH_INDEXES:
            op.drop_index(name, table_name="jobs", if_exists=True)
    op.drop_index("ix_jobs_status_name", table_name="jobs")
