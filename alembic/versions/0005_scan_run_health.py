"""Scan runs: the error that stopped a scan, and a heartbeat so a dead scan can be closed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    with op.batch_alter_table("scan_runs") as batch:
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    # Every scan looks for running scans whose process died: few rows, found without a scan of
    # the whole history.
    op.create_index(
        "ix_scan_runs_running",
        "scan_runs",
        ["started_at"],
        postgresql_where=RUNNING,
        sqlite_where=RUNNING,
    )


def downgrade() -> None:
    op.drop_index("ix_scan_runs_running", table_name="scan_runs")
    with op.batch_alter_table("scan_runs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("error")
