"""Running totals of the scans (count, errors, duration histogram, ...), so /metrics reads a few
rows instead of every scan_runs row (1 000 000 rows: 1.2 s a scrape), and retention can delete
old scans without moving a counter back. Filled here from the scans recorded so far.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As service.store.scans has them at this revision (a migration never imports the service).
DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


def upgrade() -> None:
    op.create_table(
        "scan_counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
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
    totals = [
        ("scans", "count(*)"),
        ("duration_seconds_sum", f"coalesce(sum({seconds}), 0)"),
        ("errors", "coalesce(sum(errors), 0)"),
        ("artifacts_new", "coalesce(sum(artifacts_new), 0)"),
        ("failed", "coalesce(sum(CASE WHEN status IN ('failed', 'abandoned') THEN 1 ELSE 0 END), 0)"),
        ("last_finished_timestamp", last),
        *(
            (f"duration_le_{le:g}", f"coalesce(sum(CASE WHEN {seconds} <= {le} THEN 1 ELSE 0 END), 0)")
            for le in DURATION_BUCKETS
        ),
    ]
    # One statement (no rows read here: the offline SQL a DBA reviews is the same): nothing
    # when no scan has finished, and no last_finished_timestamp when none finished well.
    selects = " UNION ALL ".join(
        f"SELECT '{name}' AS name, CAST({expression} AS FLOAT) AS value"
        " FROM scan_runs WHERE finished_at IS NOT NULL"
        for name, expression in totals
    )
    op.execute(
        "INSERT INTO scan_counters (name, value) SELECT name, value FROM ("
        f"{selects}) AS totals WHERE value IS NOT NULL"
        " AND EXISTS (SELECT 1 FROM scan_runs WHERE finished_at IS NOT NULL)"
    )


def downgrade() -> None:
    op.drop_table("scan_counters")
