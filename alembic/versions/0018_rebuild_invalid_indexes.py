"""Builds again, where a failed build left them INVALID, the indexes of 0016 and 0017. Their
CONCURRENTLY build fails past the migrations' lock_timeout (behind a transaction left open) and
leaves an invalid index; the upgrade run again (`serve` retries at its next start) then keeps it
(IF NOT EXISTS), records the migration as done and comes here. Such an index is never used by a
query, yet written by every insert. A later migration that builds an index CONCURRENTLY drops
its own the same way first when invalid (README, Migrations). PostgreSQL only, online upgrades only (the offline SQL
builds each index once, and its DBA sees a failure); where the indexes are valid, the usual case,
nothing is written.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name, table, columns, the partial index's condition: as 0016 and 0017 create them.
INDEXES = (
    ("ix_artifacts_gone_since", "artifacts", ["gone_since"], "gone_since IS NOT NULL"),
    ("ix_notification_deliveries_pending_by_event", "notification_deliveries",
     ["channel", "event_id"], "state = 'pending'"),
)  # fmt: skip


def upgrade() -> None:
    context = op.get_context()
    if context.dialect.name != "postgresql" or context.as_sql:
        return
    with context.autocommit_block():
        for name, table, columns, condition in INDEXES:
            if not _invalid(name):
                continue
            op.drop_index(name, postgresql_concurrently=True, if_exists=True)
            op.create_index(
                name, table, columns, postgresql_where=sa.text(condition),
                postgresql_concurrently=True, if_not_exists=True,
            )  # fmt: skip


def _invalid(name: str) -> bool:
    """Whether index `name` exists and is INVALID (a failed CONCURRENTLY build)."""
    found = (
        op.get_bind()
        .execute(
            sa.text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
            {"name": name},
        )
        .scalar()
    )
    return bool(found)


def downgrade() -> None:
    pass  # nothing to undo: the indexes are 0016's and 0017's
