"""Notifications: a job's notify settings, and the outbox (events, deliveries, attempts).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UNROUTED = sa.text("routed_at IS NULL")
PENDING = sa.text("state = 'pending'")
# What JobSpec stores for a job that says nothing about notifications.
DEFAULT_NOTIFY = '{"channels": null, "renotify_every": null}'


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("notify", JSON, nullable=False, server_default=sa.text(f"'{DEFAULT_NOTIFY}'"))
        )
        batch.add_column(sa.Column("renotify_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("notified_status", sa.String(16), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("notify", existing_type=JSON, server_default=None)
    op.create_index("ix_jobs_renotify_at", "jobs", ["renotify_at"])
    # Jobs already in a status count as told of it: an upgrade sends no notice by itself.
    jobs = sa.table("jobs", sa.column("status", sa.String()), sa.column("notified_status"))
    op.execute(
        jobs.update()
        .where(jobs.c.status.in_(("ok", "warning", "critical", "unknown")))
        .values(notified_status=jobs.c.status)
    )

    op.create_table(
        "notification_events",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("job_name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("channels", JSON, nullable=True),
        sa.Column("routed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_notification_events_job_id_jobs", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_notification_events"),
        sa.UniqueConstraint("event_id", name="uq_notification_events_event_id"),
    )
    op.create_index(
        "ix_notification_events_unrouted",
        "notification_events",
        ["id"],
        postgresql_where=UNROUTED,
        sqlite_where=UNROUTED,
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("event_id", BIG_ID, nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("job_name", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["notification_events.id"],
            name="fk_notification_deliveries_event_id_notification_events",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_notification_deliveries"),
    )
    op.create_index(
        "uq_notification_deliveries_event_channel",
        "notification_deliveries",
        ["event_id", "channel"],
        unique=True,
    )
    op.create_index(
        "ix_notification_deliveries_state_due",
        "notification_deliveries",
        ["state", "next_attempt_at"],
    )
    op.create_index(
        "ix_notification_deliveries_pending",
        "notification_deliveries",
        ["channel", "job_name", "event_id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_table(
        "notification_attempts",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("delivery_id", BIG_ID, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["notification_deliveries.id"],
            name="fk_notification_attempts_delivery_id_notification_deliveries",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_notification_attempts"),
    )
    op.create_index(
        "ix_notification_attempts_delivery_id", "notification_attempts", ["delivery_id"]
    )


def downgrade() -> None:
    op.drop_table("notification_attempts")
    op.drop_table("notification_deliveries")
    op.drop_index("ix_notification_events_unrouted", table_name="notification_events")
    op.drop_table("notification_events")
    op.drop_index("ix_jobs_renotify_at", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("notified_status")
        batch.drop_column("renotify_at")
        batch.drop_column("notify")
