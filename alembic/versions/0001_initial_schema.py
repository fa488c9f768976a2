"""Initial schema: jobs, artifacts, scan_runs, job_checks.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types: a migration must not change when the models do.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NOT_GONE = sa.text("gone_since IS NULL")


def when(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("source", JSON, nullable=True),
        sa.Column("schedule", JSON, nullable=False),
        sa.Column("grace", sa.Integer(), nullable=False),
        sa.Column("rules", JSON, nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        when("created_at"),
        when("updated_at"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reasons", JSON, nullable=False),
        sa.Column("latest_artifact", JSON, nullable=True),
        sa.Column("artifact_count", sa.Integer(), nullable=False),
        when("checked_at", nullable=True),
        when("status_changed_at", nullable=True),
        when("next_check_at", nullable=True),
        sa.Column("listing_digest", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint("name", name="uq_jobs_name"),
    )
    op.create_index("ix_jobs_next_check_at", "jobs", ["next_check_at"])

    op.create_table(
        "scan_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        when("started_at"),
        when("finished_at", nullable=True),
        sa.Column("jobs_scanned", sa.Integer(), nullable=False),
        sa.Column("artifacts_new", sa.Integer(), nullable=False),
        sa.Column("artifacts_changed", sa.Integer(), nullable=False),
        sa.Column("artifacts_gone", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("error_details", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scan_runs"),
    )
    op.create_index("ix_scan_runs_started_at", "scan_runs", ["started_at"])

    op.create_table(
        "artifacts",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        when("mtime"),
        when("first_seen"),
        when("last_seen"),
        when("gone_since", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_artifacts"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_artifacts_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_artifacts_job_id_mtime", "artifacts", ["job_id", "mtime", "id"])
    op.create_index(
        "uq_artifacts_job_id_path_present",
        "artifacts",
        ["job_id", "path"],
        unique=True,
        postgresql_where=NOT_GONE,
        sqlite_where=NOT_GONE,
    )

    op.create_table(
        "job_checks",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("job_id", sa.Integer(), nullable=False),
        when("checked_at"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("previous_status", sa.String(16), nullable=True),
        sa.Column("reasons", JSON, nullable=False),
        sa.Column("latest_artifact", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_job_checks"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_checks_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_job_checks_job_id_checked_at", "job_checks", ["job_id", "checked_at"])


def downgrade() -> None:
    op.drop_table("job_checks")
    op.drop_table("artifacts")
    op.drop_table("scan_runs")
    op.drop_table("jobs")
