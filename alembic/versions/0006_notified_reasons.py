"""Notices: the reasons people were last told, so a problem that appears across a pause is told.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("notified_reasons", JSON, nullable=True))
    # Jobs standing at the status they were told of count as told of their reasons now (the
    # same column type on both sides: a plain copy): an upgrade sends no notice by itself.
    # Others (told, then paused) stay NULL: what they were told is not known.
    op.execute(
        "UPDATE jobs SET notified_reasons = reasons "
        "WHERE notified_status IS NOT NULL AND notified_status = status"
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("notified_reasons")
