"""Heartbeats: a ping key per job, and the pings received.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("ping_key", sa.String(64), nullable=True))
    if op.get_context().dialect.name == "postgresql":
        # One statement, so that offline SQL (`alembic upgrade --sql`, which cannot read rows)
        # has the step too: 18 bytes from PostgreSQL's strong random source (gen_random_uuid,
        # PostgreSQL 13+; hashed, so the UUIDs' fixed version bits do not show) in
        # token_urlsafe's alphabet, the same shape as service.db.models.new_ping_key.
        op.execute(
            "UPDATE jobs SET ping_key = translate(encode(substring(sha256("
            "uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid())) from 1 for 18), "
            "'base64'), '+/', '-_')"
        )
    else:
        # SQLite (online only): its randomblob() is not meant for secrets; Python's is.
        jobs = sa.table("jobs", sa.column("id", sa.Integer()), sa.column("ping_key", sa.String()))
        connection = op.get_bind()
        for (job_id,) in connection.execute(sa.select(jobs.c.id)).all():
            connection.execute(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(ping_key=secrets.token_urlsafe(18))
            )
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("ping_key", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_jobs_ping_key", ["ping_key"])
    op.create_table(
        "pings",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("exit_status", sa.Integer(), nullable=True),
        sa.Column("rid", sa.String(64), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_pings_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_pings"),
    )
    op.create_index("ix_pings_job_id_id", "pings", ["job_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_pings_job_id_id", table_name="pings")
    op.drop_table("pings")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("uq_jobs_ping_key", type_="unique")
        batch.drop_column("ping_key")
