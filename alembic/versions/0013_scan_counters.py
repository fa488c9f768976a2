"""Running totals of the scans (count, errors, duration histogram, ...), so /metrics reads a few
rows instead of every scan_runs row (1 000 000 rows: 1.2 s a scrape), and retention can delete
old scans without moving a counter back. Filled here from the scans recorded so far. And an
index of the artifacts gone from their source, by when, for retention.

Revision ID: 0013
Revises: 0010
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0013"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As service.store.scans has them at this revision (a migration never imports the service).
DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


def upgrade() -> None:
    counters = op.create_table(
        "scan_counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
    )
    op.create_index(
        "ix_artifacts_gone_since",
        "artifacts",
        ["gone_since"],
        postgresql_where=sa.text("gone_since IS NOT NULL"),
        sqlite_where=sa.text("gone_since IS NOT NULL"),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        seconds = "extract(epoch FROM finished_at - started_at)"
        last = "extract(epoch FROM max(CASE WHEN status = 'finished' THEN finished_at END))"
    else:
        seconds = "(julianday(finished_at) - julianday(started_at)) * 86400"
        last = (
            "(julianday(max(CASE WHEN status = 'finished' THEN finished_at END))"
            " - 2440587.5) * 86400"
        )
    buckets = ", ".join(
        f"coalesce(sum(CASE WHEN {seconds} <= {le} THEN 1 ELSE 0 END), 0)"
        for le in DURATION_BUCKETS
    )
    row = bind.execute(
        sa.text(
            f"SELECT count(*), coalesce(sum({seconds}), 0), coalesce(sum(errors), 0),"
            " coalesce(sum(artifacts_new), 0),"
            " coalesce(sum(CASE WHEN status IN ('failed', 'abandoned') THEN 1 ELSE 0 END), 0),"
            f" {last}, {buckets} FROM scan_runs WHERE finished_at IS NOT NULL"
        )
    ).one()
    scans, duration, errors, new, failed, last_finished, *counts = row
    if not scans:
        return
    values = {
        "scans": scans, "duration_seconds_sum": duration, "errors": errors,
        "artifacts_new": new, "failed": failed,
        **{f"duration_le_{le:g}": n for le, n in zip(DURATION_BUCKETS, counts, strict=True)},
    }  # fmt: skip
    if last_finished is not None:
        values["last_finished_timestamp"] = last_finished
    op.bulk_insert(
        counters, [{"name": name, "value": float(value)} for name, value in values.items()]
    )


def downgrade() -> None:
    op.drop_index("ix_artifacts_gone_since", table_name="artifacts")
    op.drop_table("scan_counters")
