"""An index of the artifacts gone from their source, by when: retention deletes those gone for
longer than RETENTION_DAYS without reading the artifacts still present. Built CONCURRENTLY on
PostgreSQL (a table that scans write to all the time), in a migration of its own.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GONE = sa.text("gone_since IS NOT NULL")


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        op.create_index("ix_artifacts_gone_since", "artifacts", ["gone_since"], sqlite_where=GONE)
        return
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_artifacts_gone_since", "artifacts", ["gone_since"], postgresql_where=GONE,
            postgresql_concurrently=True, if_not_exists=True,
        )  # fmt: skip


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        op.drop_index("ix_artifacts_gone_since", table_name="artifacts")
        return
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_artifacts_gone_since", table_name="artifacts", postgresql_concurrently=True,
            if_exists=True,
        )  # fmt: skip
