"""The fleet's claims on a real PostgreSQL: N jobs, R replicas, each cycle every replica beats,
claims its share of the listings and gives the leases back (the sources are not listed: this
measures what the coordination costs the database, not the I/O it splits).

    .venv/bin/python bench/fleet.py [--jobs 100000] [--replicas 10] [--cycles 3]
                                    [--interval 900] [--database-url URL] [--json]

Each replica has its own engine (one connection, as a replica's scan holds one) and runs the
service's own functions (service.store.fleet: beat, members, claim_listings, done_listings)
with a clock moved one interval per cycle, all replicas at once. Reported per cycle: the
statements sent, the job rows updated (pg_stat_user_tables), the WAL written, each replica's
claim and release times, and the cycle's wall time; then the same after one replica is gone
(its lease run out: the others' shares grow). The reference measured in the same run is one
`SELECT count(*)` over the jobs table (the cheapest full read of it). Checked: in each cycle
every job is claimed exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from service.core.jobspec import parse_job
from service.db.engine import create_engine, create_sessionmaker
from service.db.models import Job
from service.store import fleet
from service.store.jobs import new_job

import harness

URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/bm_bench_fleet"
LEASE = 60.0


@dataclass
class Replica:
    name: str
    engine: AsyncEngine
    statements: int = 0
    claim_seconds: list[float] = field(default_factory=list)
    release_seconds: list[float] = field(default_factory=list)

    def count(self) -> None:
        @event.listens_for(self.engine.sync_engine, "before_cursor_execute")
        def _counted(*_args: Any) -> None:
            self.statements += 1


async def prepare(url: str, jobs: int) -> None:
    """N jobs with a local source each, by COPY of the rows the ORM would insert."""
    now = datetime.now(UTC)
    columns = harness.copy_columns(Job.__table__)  # type: ignore[arg-type]
    records = []
    for index in range(jobs):
        declared = {"name": f"job-{index:06d}", "schedule": {"every": "1d"},
                    "source": {"type": "local", "path": f"/backups/job-{index:06d}"}}  # fmt: skip
        records.append(harness.orm_record(new_job(parse_job(declared), now), columns))
    connection = await asyncpg.connect(harness.dsn(url))
    try:
        await connection.copy_records_to_table(
            "jobs", records=records, columns=[column.name for column in columns]
        )
        await connection.execute("VACUUM ANALYZE jobs")
    finally:
        await connection.close()


async def database_counters(url: str) -> dict[str, int]:
    """Job rows updated (HOT or not) and WAL written so far."""
    connection = await asyncpg.connect(harness.dsn(url))
    try:
        row = await connection.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'jobs'"
        )
        wal = await connection.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        return {"updated": row["n_tup_upd"], "hot": row["n_tup_hot_upd"], "wal": int(wal)}
    finally:
        await connection.close()


async def settled_counters(url: str, expected: int, before: dict[str, int]) -> dict[str, int]:
    """The counters once the statistics have caught up with the `expected` job row updates
    (a backend reports them when its connection closes, or within a second of idling)."""
    deadline = time.monotonic() + 10
    while True:
        now = await database_counters(url)
        if now["updated"] - before["updated"] >= expected or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.1)


async def checkpoint(url: str) -> None:
    """A checkpoint: the next write of each page logs it whole, as a cycle of 15 minutes (more
    than checkpoint_timeout) always does."""
    connection = await asyncpg.connect(harness.dsn(url))
    try:
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


async def one_replica(
    replica: Replica, live: list[str], now: datetime, interval: float
) -> dict[str, int]:
    sessions = create_sessionmaker(replica.engine)
    async with sessions() as session:
        await fleet.beat(session, replica.name, now=now, seconds=LEASE)
        started = time.perf_counter()
        claimed = await fleet.claim_listings(
            session, replica.name, fleet=live, now=now, interval_seconds=interval,
            lease_seconds=LEASE,
        )  # fmt: skip
        replica.claim_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        ids = list(claimed.values())
        await fleet.done_listings(session, replica.name, ids, listed=ids, listed_at=now)
        replica.release_seconds.append(time.perf_counter() - started)
    return claimed


async def cycle(
    url: str, replicas: list[Replica], now: datetime, interval: float, jobs: int
) -> dict[str, Any]:
    live = sorted(replica.name for replica in replicas)
    await checkpoint(url)
    before = await database_counters(url)
    statements = sum(replica.statements for replica in replicas)
    started = time.perf_counter()
    shares = await asyncio.gather(*(one_replica(r, live, now, interval) for r in replicas))
    wall = time.perf_counter() - started
    for replica in replicas:  # closed: their statistics are reported
        await replica.engine.dispose()
    # Each job row updated twice (claimed, then given back); a lease renewal by the beat, none.
    after = await settled_counters(url, 2 * jobs, before)
    claimed = Counter(job for share in shares for job in share)
    sizes = [len(share) for share in shares]
    return {
        "replicas": len(replicas),
        "wall_seconds": round(wall, 3),
        "statements": sum(replica.statements for replica in replicas) - statements,
        "rows_updated": after["updated"] - before["updated"],
        "hot_updates": after["hot"] - before["hot"],
        "wal_bytes": after["wal"] - before["wal"],
        "share_min": min(sizes),
        "share_max": max(sizes),
        "claim_seconds_max": round(max(r.claim_seconds[-1] for r in replicas), 3),
        "release_seconds_max": round(max(r.release_seconds[-1] for r in replicas), 3),
        "each_job_once": len(claimed) == jobs and set(claimed.values()) == {1},
    }


async def reference(url: str) -> float:
    """The median of 5 `SELECT count(*) FROM jobs`: one full read of the table."""
    connection = await asyncpg.connect(harness.dsn(url))
    try:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            await connection.fetchval("SELECT count(*) FROM jobs")
            times.append(time.perf_counter() - started)
        return statistics.median(times)
    finally:
        await connection.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    await prepare(args.database_url, args.jobs)
    replicas = [
        Replica(f"replica-{index:02d}", create_engine(args.database_url, pool_size=1))
        for index in range(args.replicas)
    ]
    for replica in replicas:
        replica.count()
    now = datetime.now(UTC)
    try:
        cycles = []
        for _ in range(args.cycles):
            cycles.append(await cycle(args.database_url, replicas, now, args.interval, args.jobs))
            now += timedelta(seconds=args.interval)
        # One replica gone: its membership runs out, the others take its share.
        survivors = replicas[:-1]
        now += timedelta(seconds=LEASE)
        takeover = await cycle(args.database_url, survivors, now, args.interval, args.jobs)
    finally:
        for replica in replicas:
            await replica.engine.dispose()
    return {
        "jobs": args.jobs,
        "replicas": args.replicas,
        "interval_seconds": args.interval,
        "reference_count_seconds": round(await reference(args.database_url), 4),
        "cycles": cycles,
        "after_one_replica_died": takeover,
    }


def report(result: dict[str, Any]) -> None:
    jobs, interval = result["jobs"], result["interval_seconds"]
    print(f"{jobs} jobs, {result['replicas']} replicas, claims only (no source listed)")
    print(f"reference: SELECT count(*) FROM jobs {result['reference_count_seconds'] * 1000:.1f} ms")
    for index, measured in enumerate([*result["cycles"], result["after_one_replica_died"]]):
        label = f"cycle {index + 1}" if index < len(result["cycles"]) else "one replica gone"
        print(
            f"{label}: {measured['replicas']} replicas, wall {measured['wall_seconds']:.2f} s, "
            f"{measured['statements']} statements, {measured['rows_updated']} job rows updated "
            f"({measured['hot_updates']} HOT), WAL {measured['wal_bytes'] / 1e6:.1f} MB, "
            f"shares {measured['share_min']}-{measured['share_max']}, claim max "
            f"{measured['claim_seconds_max'] * 1000:.0f} ms, release max "
            f"{measured['release_seconds_max'] * 1000:.0f} ms, each job claimed once: "
            f"{'yes' if measured['each_job_once'] else 'NO'}"
        )
    last = result["cycles"][-1]
    print(
        f"per {interval:g} s interval: {last['statements'] / interval:.2f} statements/s, "
        f"{last['rows_updated'] / interval:.0f} row updates/s, "
        f"{last['wal_bytes'] / interval / 1e3:.1f} kB/s of WAL; "
        f"database busy {last['wall_seconds'] / interval * 100:.2f} % of the interval"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--interval", type=float, default=900.0, help="SCANNER_INTERVAL, s")
    parser.add_argument("--database-url", default=URL,
                        help="PostgreSQL; dropped and recreated, its name must contain 'bench'"
                        )  # fmt: skip
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        harness.check_disposable(args.database_url, postgresql_only="the fleet is PostgreSQL's")
    except harness.BenchError as exc:
        parser.error(str(exc))
    harness.create_database(args.database_url)
    try:
        result = asyncio.run(run(args))
    finally:
        harness.drop_database(args.database_url)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)
    ok = all(c["each_job_once"] for c in [*result["cycles"], result["after_one_replica_died"]])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
