"""Verification: what each job declares (jobs.verify), the last verification of each artifact
with its lease (artifact_verifications), the last check of a job's repository
(repository_checks).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("verify", JSON, nullable=True))
    op.create_table(
        "artifact_verifications",
        sa.Column("artifact_id", BIG_ID, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("mtime", TIME, nullable=True),
        sa.Column("verified_at", TIME, nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("sidecar", sa.Text(), nullable=True),
        sa.Column("bytes_read", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("digest", sa.String(200), nullable=True),
        sa.Column("due_at", TIME, nullable=False),
        sa.Column("retry_at", TIME, nullable=True),
        sa.Column("lease_until", TIME, nullable=True),
        sa.PrimaryKeyConstraint("artifact_id", name="pk_artifact_verifications"),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["artifacts.id"],
            name="fk_artifact_verifications_artifact_id_artifacts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name="fk_artifact_verifications_job_id_jobs",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_artifact_verifications_job_id", "artifact_verifications", ["job_id"])
    op.create_index("ix_artifact_verifications_due_at", "artifact_verifications", ["due_at"])
    op.create_table(
        "repository_checks",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("checked_at", TIME, nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("damaged", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("due_at", TIME, nullable=False),
        sa.Column("lease_until", TIME, nullable=True),
        sa.PrimaryKeyConstraint("job_id", name="pk_repository_checks"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_repository_checks_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_repository_checks_due_at", "repository_checks", ["due_at"])


def downgrade() -> None:
    op.drop_index("ix_repository_checks_due_at", table_name="repository_checks")
    op.drop_table("repository_checks")
    op.drop_index("ix_artifact_verifications_due_at", table_name="artifact_verifications")
    op.drop_index("ix_artifact_verifications_job_id", table_name="artifact_verifications")
    op.drop_table("artifact_verifications")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("verify")
