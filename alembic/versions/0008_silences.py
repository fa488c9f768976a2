"""Silences: maintenance windows that hold a job's notices (one-off or recurring).

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
LIVE_NAMED = sa.text("ended_at IS NULL AND name IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "silences",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=True),
        sa.Column("origin", sa.String(8), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("jobs", JSON, nullable=False),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cron", sa.String(500), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("duration", sa.Integer(), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_silences"),
        sa.CheckConstraint(
            "(cron IS NULL AND timezone IS NULL AND duration IS NULL"
            " AND starts_at IS NOT NULL AND ends_at IS NOT NULL)"
            " OR (cron IS NOT NULL AND timezone IS NOT NULL AND duration IS NOT NULL"
            " AND starts_at IS NULL AND ends_at IS NULL)",
            name="ck_silences_one_off_or_recurring",
        ),
    )
    op.create_index(
        "uq_silences_name_live",
        "silences",
        ["name"],
        unique=True,
        postgresql_where=LIVE_NAMED,
        sqlite_where=LIVE_NAMED,
    )
    op.create_index("ix_silences_ends_at", "silences", ["ends_at"])


def downgrade() -> None:
    op.drop_index("ix_silences_ends_at", table_name="silences")
    op.drop_index("uq_silences_name_live", table_name="silences")
    op.drop_table("silences")
