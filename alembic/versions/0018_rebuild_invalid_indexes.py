"""Builds again, where an earlier build left them INVALID, the indexes of 0016 and 0017: their
CONCURRENTLY build failed (past the migrations' lock_timeout, behind a transaction left open),
and the migration run again kept the invalid index (IF NOT EXISTS) and was recorded as done. Such
an index is never used by a query, yet written by every insert. (0016 and 0017 now drop it
themselves; this is for a database that ran them before they did.) PostgreSQL only, online
upgrades only; where the indexes are valid, the usual case, nothing is written.

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
