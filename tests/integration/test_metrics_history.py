"""/metrics costs the same after a year of scans as after a day: the scans' totals are kept in
scan_counters as scans close, never summed over scan_runs at scrape time (1 000 000 rows took
1.2 s a scrape on PostgreSQL before); and those counters stay exact when a scan is closed twice
or the history is pruned (tests/integration/test_retention.py); 0013 fills them from the scans
already recorded (tests/integration/test_migrations.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from service.db.engine import is_postgresql
from service.scanner.scanner import BackupScanner
from service.scanner.state import ScanReport
from service.store.scans import (
    DURATION_BUCKETS,
    bucket_name,
    close_abandoned,
    read_counters,
    record_finish,
    record_start,
)

from tests.support import add_job

# PostgreSQL: the size the issue names, inserted by generate_series in ~5 s. SQLite: 200 000
# rows (a recursive CTE, ~1 s): the old sum over scan_runs already took ~1 s a scrape there (on
# 2 busy cores), ten times the budget; a million would add seconds of insertion to every run
# and prove nothing more.
OLD_SCANS = {"postgresql": 1_000_000, "sqlite": 200_000}
BUDGET = 0.1  # seconds a scrape may take with that history


async def insert_old_scans(session, count: int) -> None:
    """`count` closed scans, 400 days old, one a second; every tenth failed."""
    if is_postgresql(session):
        await session.execute(
            text(
                "INSERT INTO scan_runs (trigger, status, started_at, finished_at, jobs_scanned,"
                " artifacts_new, artifacts_changed, artifacts_gone, errors, error_details)"
                " SELECT 'interval', CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'finished' END,"
                " now() - interval '400 days' + g * interval '1 second',"
                " now() - interval '400 days' + g * interval '1 second' + interval '2 seconds',"
                " 3, 1, 0, 0, 0, '[]' FROM generate_series(1, :count) g"
            ),
            {"count": count},
        )
    else:
        await session.execute(
            text(
                "INSERT INTO scan_runs (trigger, status, started_at, finished_at, jobs_scanned,"
                " artifacts_new, artifacts_changed, artifacts_gone, errors, error_details)"
                " WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :count)"
                " SELECT 'interval', CASE WHEN n % 10 = 0 THEN 'failed' ELSE 'finished' END,"
                " datetime('now', '-400 days', '+' || n || ' seconds'),"
                " datetime('now', '-400 days', '+' || (n + 2) || ' seconds'),"
                " 3, 1, 0, 0, 0, '[]' FROM g"
            ),
            {"count": count},
        )
    await session.commit()


def scalar_samples(body: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if not sample.labels
    }


async def test_metrics_stay_fast_with_a_long_scan_history(
    aiohttp_client, make_app, sessionmaker, clock, database_url, tmp_path
):
    kind = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    async with sessionmaker() as session:
        # No ANALYZE: right after a bulk of inserts the planner has no statistics either.
        await insert_old_scans(session, OLD_SCANS[kind])
    await add_job(
        sessionmaker, clock.now, name="db", source={"type": "local", "path": str(tmp_path)}
    )
    async with sessionmaker() as session:
        await BackupScanner(session, clock=clock).scan_all_jobs()

    client = await aiohttp_client(make_app())
    bodies = {}
    # /metrics, and what else reads the scan history: the status, readiness (the failure
    # streak), the newest page of scans.
    for path in ("/metrics", "/api/v1/status", "/health/ready", "/api/v1/scans?limit=50"):
        assert (await client.get(path)).status == 200  # warm: connections, caches
        times = []
        for _ in range(5):
            start = time.perf_counter()
            response = await client.get(path)
            bodies[path] = await response.text()
            times.append(time.perf_counter() - start)
            assert response.status == 200, path
        assert sorted(times)[2] < BUDGET, f"median {path} {sorted(times)[2]:.3f}s ({kind})"
    body = bodies["/metrics"]
    values = scalar_samples(body)
    # The counters count the scans that closed (the old rows were written behind the
    # service's back, as if by a version before scan_counters); the streak is read from
    # scan_runs and is right.
    assert values["backup_scans_total"] == 1
    assert values["backup_scanner_consecutive_failures"] == 0
    assert values["backup_last_scan_timestamp_seconds"] == pytest.approx(clock.now.timestamp())


async def test_a_scan_closed_as_abandoned_then_finished_counts_once(sessionmaker, clock):
    """A scan another replica gave up on (no heartbeat for the lease) that finishes after all:
    counted as abandoned, then as what it really was, never both."""
    async with sessionmaker() as session:
        run_id = await record_start(session, "interval", clock.now)
    later = clock.now + timedelta(hours=1)
    async with sessionmaker() as session:
        assert await close_abandoned(session, later) == [run_id]
        await session.commit()
        abandoned = await read_counters(session)
    assert abandoned["scans"] == 1 and abandoned["failed"] == 1
    # Closed at its last sign of life (its start): 0 s.
    assert abandoned[bucket_name(DURATION_BUCKETS[0])] == 1
    assert "last_finished_timestamp" not in abandoned

    async with sessionmaker() as session:
        report = ScanReport(scan_id=run_id, status="finished")
        await record_finish(session, run_id, report, clock.now + timedelta(seconds=20))
        finished = await read_counters(session)
    assert finished["scans"] == 1 and finished["failed"] == 0
    assert finished["duration_seconds_sum"] == pytest.approx(20)
    assert finished[bucket_name(DURATION_BUCKETS[0])] == 0
    assert finished[bucket_name(30.0)] == 1 and finished[bucket_name(10.0)] == 0
    assert finished["last_finished_timestamp"] == pytest.approx(
        (clock.now + timedelta(seconds=20)).timestamp()
    )


async def test_scans_closing_at_once_are_all_counted(sessionmaker, clock):
    """Replicas close their scans at the same moment: each upsert adds, none is lost, none
    deadlocks (on PostgreSQL the sessions really run in parallel)."""
    count = 12

    async def one_scan(index: int) -> None:
        async with sessionmaker() as session:
            run_id = await record_start(session, "interval", clock.now)
        async with sessionmaker() as session:
            status = "failed" if index % 3 == 0 else "finished"
            report = ScanReport(
                scan_id=run_id, status=status, error="x" if index % 3 == 0 else None
            )
            await record_finish(session, run_id, report, clock.now + timedelta(seconds=index))

    await asyncio.gather(*(one_scan(index) for index in range(count)))
    async with sessionmaker() as session:
        counters = await read_counters(session)
    assert counters["scans"] == count
    assert counters["failed"] == count // 3
    assert counters["duration_seconds_sum"] == pytest.approx(sum(range(count)))
    assert counters[bucket_name(10.0)] == 11  # 0 s to 10 s
    assert counters["last_finished_timestamp"] == pytest.approx(
        (clock.now + timedelta(seconds=count - 1)).timestamp()
    )
