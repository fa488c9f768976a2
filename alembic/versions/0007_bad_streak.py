"""Notices held by notify.after / notify.for: each job's current run of bad judgements.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("bad_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("bad_count", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    # A job bad now has been so since its status changed, for one judgement at least (its
    # problem was told already, by the rules before this one: nothing is re-announced).
    op.execute(
        "UPDATE jobs SET bad_since = COALESCE(status_changed_at, checked_at, updated_at), "
        "bad_count = 1 WHERE status IN ('warning', 'critical', 'unknown')"
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("bad_count")
        batch.drop_column("bad_since")
