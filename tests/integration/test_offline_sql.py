"""Offline migrations: `alembic upgrade head --sql`, the SQL a DBA reviews and runs, renders every
revision for PostgreSQL without a database, and that SQL, run with psql on an empty database,
gives the schema the online migrations give."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.db import migrate

from tests.support import REPO, asyncpg_dsn, in_thread, missing, pg_admin

# Offline mode never connects: the URL only chooses the dialect.
OFFLINE_URL = "postgresql+asyncpg://offline@localhost/offline"


def offline_sql(revisions: str) -> str:
    """What `alembic upgrade <revisions> --sql` prints, run as a DBA would, from the repository."""
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", revisions, "--sql"],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": OFFLINE_URL},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def head_sql() -> str:
    return offline_sql("head")


def test_every_revision_renders_offline(head_sql):
    """Every revision is in the SQL (it stopped at 0003, whose data step read rows), after the
    timeouts alembic/env.py sets, and the SQL ends at the head revision."""
    ran = re.findall(r"^-- Running upgrade \w* -> (\w+)$", head_sql, re.MULTILINE)
    assert ran[0] == "0001"
    assert ran[-1] == migrate.head_revision()
    assert len(ran) == len(list((REPO / "alembic" / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")))
    assert head_sql.index("SET lock_timeout") < head_sql.index("CREATE TABLE")
    assert head_sql.index("SET statement_timeout") < head_sql.index("CREATE TABLE")
    assert f"SET version_num='{migrate.head_revision()}'" in head_sql
    # 0003's data step is SQL now, not a loop over rows read at render time.
    assert "UPDATE jobs SET ping_key" in head_sql


def psql(dsn: str, *args: str, sql: str | None = None) -> str:
    result = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, *args],
        input=sql,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def schema(dsn: str) -> list[str]:
    """pg_dump's schema, without its comments, blank lines and per-dump \\restrict keys."""
    result = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", "-d", dsn],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [
        line
        for line in result.stdout.splitlines()
        if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    ]


@pytest.fixture
def empty_dsn(pg_url) -> Iterator[str]:
    """A libpq URL of a new, empty PostgreSQL database (psql and pg_dump needed)."""
    for tool in ("psql", "pg_dump"):
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed (Debian: postgresql-client)")
    name = f"bm_offline_{uuid.uuid4().hex[:12]}"
    in_thread(lambda: asyncio.run(pg_admin(f'CREATE DATABASE "{name}"')))
    yield asyncpg_dsn(pg_url, database=name)
    in_thread(lambda: asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')))


@pytest.mark.postgres
def test_offline_sql_gives_the_online_schema(head_sql, empty_dsn, pg_url, tmp_path: Path):
    """The SQL run with psql on an empty database gives what `serve` migrating online gives
    (pg_url: a database migrated online): same pg_dump --schema-only, same version."""
    sql_file = tmp_path / "upgrade.sql"
    sql_file.write_text(head_sql, encoding="utf-8")
    psql(empty_dsn, "-f", str(sql_file))
    online_dsn = asyncpg_dsn(pg_url)
    offline_schema = schema(empty_dsn)
    assert any(line.startswith("CREATE TABLE public.jobs") for line in offline_schema)
    assert offline_schema == schema(online_dsn)
    version = "SELECT version_num FROM alembic_version"
    assert psql(empty_dsn, "-Atc", version) == psql(online_dsn, "-Atc", version)


@pytest.mark.postgres
def test_offline_0003_gives_each_existing_job_its_own_ping_key(empty_dsn):
    """The data step of 0003 runs in the offline SQL: jobs already there get a ping key each,
    in the shape the service makes (secrets.token_urlsafe(18): 24 URL-safe characters)."""
    psql(empty_dsn, sql=offline_sql("0002"))
    psql(
        empty_dsn,
        sql="INSERT INTO jobs (name, description, tags, schedule, grace, rules, paused, "
        "created_at, updated_at, status, reasons, artifact_count) "
        "SELECT 'job-' || n, '', '[]', '{\"every\": 86400}', 0, '{}', false, now(), now(), "
        "'pending', '[]', 0 FROM generate_series(1, 3) AS n",
    )
    psql(empty_dsn, sql=offline_sql("0002:0003"))
    keys = psql(empty_dsn, "-Atc", "SELECT ping_key FROM jobs").split()
    assert len(keys) == 3
    assert len(set(keys)) == 3
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{24}", key) for key in keys), keys
