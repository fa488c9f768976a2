"""PostgreSQL's CPU for each new artifact row, as a first scan inserts them: the scanner's own
statement (service.scanner.writer: _INSERT_ARTIFACTS from as_matrix's arrays), into the
`artifacts` table as migrated, then with its foreign key and its indexes dropped one after the
other, to show what each costs.

    .venv/bin/python bench/inserts.py [--rows 10000] [--statements 20] [--jobs 200]
                                      [--database-url URL]

Each step empties the table, then runs `--statements` INSERTs of `--rows` rows each (one
transaction each, the rows spread over `--jobs` jobs, 500 a job as a first scan sends them),
and reads the CPU of the one backend that ran them (/proc: PostgreSQL on this machine;
elsewhere only the wall time is shown). It checks that every row was stored. The figures are in
bench/README.md ("Issue 16: every target in one sitting"); they say why a first scan is bound
by PostgreSQL's inserts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from service.db.engine import create_engine, create_sessionmaker
from service.scanner.state import to_microseconds
from service.scanner.writer import _INSERT_ARTIFACTS, as_matrix

import harness
from probes import backends_of, process_cpu_seconds

URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/bm_bench_inserts"
FILES_A_JOB = 500
# The steps: (what the table is then, the DDL that makes it so from the step before).
STEPS = (
    ("as migrated", None),
    ("without the foreign key to jobs", "ALTER TABLE artifacts DROP CONSTRAINT {foreign_key}"),
    ("and without ix_artifacts_job_id_mtime", "DROP INDEX ix_artifacts_job_id_mtime"),
    ("and without uq_artifacts_job_id_path_present",
     "DROP INDEX uq_artifacts_job_id_path_present"),
)  # fmt: skip


async def declare(url: str, jobs: int) -> None:
    """The jobs the rows belong to, declared through the service's own code."""
    engine = create_engine(url)
    try:
        specs = harness.job_specs(Path("/nonexistent"), jobs)
        await harness.declare_jobs(create_sessionmaker(engine), specs, lambda: datetime.now(UTC))
    finally:
        await engine.dispose()


def columns(job_ids: list[int], statement: int, rows: int, now_us: int) -> tuple[list, ...]:
    """The six columns of one INSERT, as ScanWriter._insert_artifacts builds them."""
    index = range(statement * rows, (statement + 1) * rows)
    jobs = [job_ids[(i // FILES_A_JOB) % len(job_ids)] for i in index]
    paths = [f"backup-{i:08d}.tar.gz" for i in index]
    sizes = [1_000_000 + i for i in index]
    times = [now_us - i * 1_000_003 for i in index]
    return jobs, paths, sizes, times, [now_us] * rows, [None] * rows


async def measure(url: str, rows: int, statements: int) -> int:
    connection = await asyncpg.connect(harness.dsn(url))
    try:
        job_ids = [row[0] for row in await connection.fetch("SELECT id FROM jobs ORDER BY id")]
        foreign_key = await connection.fetchval(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'artifacts'::regclass "
            "AND contype = 'f'"
        )
        backend = await connection.fetchval("SELECT pg_backend_pid()")
        local = backend in backends_of(make_url(url).database or "")
        if not local:  # the rows are still inserted and counted
            print("PostgreSQL runs elsewhere: its CPU cannot be read here, only the wall time")
        now_us = to_microseconds(datetime.now(UTC))
        print(f"{statements} INSERTs of {rows} rows each, one backend; PostgreSQL CPU a row:")
        for label, ddl in STEPS:
            if ddl is not None:
                await connection.execute(ddl.format(foreign_key=foreign_key))
            await connection.execute("TRUNCATE artifacts CASCADE")
            await connection.execute("VACUUM artifacts")
            started, cpu = time.perf_counter(), process_cpu_seconds(backend) if local else 0.0
            for statement in range(statements):
                arrays = columns(job_ids, statement, rows, now_us)
                async with connection.transaction():
                    await connection.execute(_INSERT_ARTIFACTS, *map(as_matrix, arrays), rows)
            cpu = process_cpu_seconds(backend) - cpu if local else float("nan")
            seconds = time.perf_counter() - started
            stored = await connection.fetchval("SELECT count(*) FROM artifacts")
            count = rows * statements
            print(
                f"  {label:48} {cpu / count * 1e6:6.2f} µs  "
                f"(wall {seconds / count * 1e6:6.2f} µs; {stored} rows)"
            )
            if stored != count:
                print(f"error: {stored} rows stored, expected {count}", file=sys.stderr)
                return 1
        return 0
    finally:
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000, help="rows an INSERT (10 000)")
    parser.add_argument("--statements", type=int, default=20, help="INSERTs a step (20)")
    parser.add_argument("--jobs", type=int, default=200, help="jobs the rows belong to (200)")
    parser.add_argument(
        "--database-url", default=URL, help="a disposable PostgreSQL database (named *bench*)"
    )
    args = parser.parse_args()
    try:
        harness.check_disposable(args.database_url, postgresql_only="its backend's CPU is read")
        with harness.fresh_database(args.database_url):
            asyncio.run(declare(args.database_url, args.jobs))
            return asyncio.run(measure(args.database_url, args.rows, args.statements))
    except harness.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
