""".ci/squawk_migrations.py (make lint, make test, the pre-commit hook): a new migration that
follows README's "Migrations" passes, one that locks a live table the unsafe way fails and is
named, and an acceptance squawk no longer finds fails too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from service.db import migrate

from tests.support import REPO

HEADER = '''"""{doc}

Revision ID: {revision}
"""

import sqlalchemy as sa

from alembic import op

revision = "{revision}"
down_revision = "{previous}"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def downgrade() -> None:
    pass


def upgrade() -> None:
'''

# Bigint keys (a column referencing jobs.id too), an index on a new table, a column with a
# constant default, a constraint on a live table added NOT VALID.
FOLLOWS_THE_RULES = """\
    op.create_table(
        "leases",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("job_id", BIG_ID, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
    )
    op.create_index("ix_leases_job_id", "leases", ["job_id"])
    op.add_column(
        "jobs", sa.Column("lease_gen", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.create_check_constraint("lease_gen", "jobs", "lease_gen >= 0", postgresql_not_valid=True)
"""

# An INTEGER counter, an index built while artifacts' writes wait, a unique constraint that
# blocks reads and writes of scan_runs while it is built.
BREAKS_THEM = """\
    op.add_column("artifacts", sa.Column("retries", sa.Integer(), nullable=True))
    op.create_index("ix_artifacts_retries", "artifacts", ["retries"])
    op.create_unique_constraint("uq_scan_runs_started_at", "scan_runs", ["started_at"])
"""


def test_squawk_names_what_a_new_migration_must_fix(tmp_path: Path):
    alembic = tmp_path / "alembic"
    shutil.copytree(REPO / "alembic", alembic, ignore=shutil.ignore_patterns("__pycache__"))
    head = migrate.head_revision()
    for revision, body in (("0098", FOLLOWS_THE_RULES), ("0099", BREAKS_THEM)):
        text = HEADER.format(doc=f"test {revision}", revision=revision, previous=head) + body
        (alembic / "versions" / f"{revision}_test.py").write_text(text, encoding="utf-8")
    accepted = tmp_path / "accepted.toml"
    accepted.write_text(
        (REPO / ".ci" / "squawk_accepted.toml").read_text(encoding="utf-8")
        + '\n[0098]\nban-drop-column = "accepted, but 0098 drops no column"\n',
        encoding="utf-8",
    )

    result = subprocess.run(
        [sys.executable, ".ci/squawk_migrations.py", "--script-location", str(alembic),
         "--accepted", str(accepted), "--keep", str(tmp_path / "sql")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 1, result.stdout + result.stderr
    findings = [line for line in result.stdout.splitlines() if "(0099):" in line]
    assert {line.split(": ")[1] for line in findings} == {
        "prefer-bigint-over-int",
        "require-concurrent-index-creation",
        "constraint-missing-not-valid",
        "disallowed-unique-constraint",
    }, result.stdout
    assert "(0098):" not in result.stdout
    assert "[0098] ban-drop-column is accepted but squawk no longer finds it" in result.stdout
    # The SQL squawk read is the DBA's: the timeouts alembic/env.py sets come first.
    sql = (tmp_path / "sql" / "0098_test.sql").read_text(encoding="utf-8")
    assert sql.index("SET lock_timeout") < sql.index("CREATE TABLE leases")
