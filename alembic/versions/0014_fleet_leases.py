"""Replicas that split the work: who is alive (replicas), and each job's listing lease.

A replica's row is its membership, leased until `lease_until` and renewed by its heartbeat; a
job's listing is leased to one replica at a time (`listing_holder`, `listing_lease_until`), and
`listed_at` says when it was last listed by a periodic scan (a job listed in the current cycle is
not listed again). Each scan run names the replica that ran it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("listing_holder", sa.String(128), nullable=True))
        batch.add_column(
            sa.Column("listing_lease_until", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("listed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("scan_runs") as batch:
        batch.add_column(sa.Column("replica", sa.String(128), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        # Room in each page for a job's next version: a lease taken or given back changes no
        # indexed column, so it is a HOT update (no index entry written) when its page has room
        # (bench/fleet.py: the WAL of a cycle). Pages written from now on; VACUUM FULL for all.
        op.execute("ALTER TABLE jobs SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE jobs RESET (fillfactor)")
    with op.batch_alter_table("scan_runs") as batch:
        batch.drop_column("replica")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("listed_at")
        batch.drop_column("listing_lease_until")
        batch.drop_column("listing_holder")
    op.drop_table("replicas")
