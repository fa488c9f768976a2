"""Retention compliance: a job's retention policy, its restore-points digest and when the
next digest is due.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("retention", JSON, nullable=True))
        batch.add_column(sa.Column("report", JSON, nullable=True))
        batch.add_column(sa.Column("report_due_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_jobs_report_due_at", ["report_due_at"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_report_due_at")
        batch.drop_column("report_due_at")
        batch.drop_column("report")
        batch.drop_column("retention")
