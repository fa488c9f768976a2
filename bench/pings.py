"""Ping ingestion on PostgreSQL: pings/s and latency at 64 concurrent clients, next to a bare
aiohttp handler measured in the same run; every ping answered OK must be stored. The pings are
POSTs with a body (a run's log line), then GETs (`curl -fsS URL`, the usual heartbeat, and the
bare handler's own request: a GET costs the load generator less than a POST with a body, and
on two cores that is CPU the server does not get).

    .venv/bin/python bench/pings.py [--seconds 10] [--warmup 2] [--concurrency 64] [--jobs 100]
                                    [--database-url URL] [--py-spy FILE]

The service and the bare handler each run in their own process (bench/harness.py); the
load comes from this process. Targets: at least 3 000 pings/s on this 2-core machine (issue 4),
and at least 0.5x the bare handler's requests/s in the same run (issue 16). The bare handler runs
on asyncio's own loop; the service on uvloop unless UVLOOP=false is in the environment.

It also reports the CPU each request cost (server processes, PostgreSQL backends, this load
generator, from /proc over the whole load, warm-up included): on a shared machine that varies
less than the rates. `--py-spy FILE` records the service during the measured POST pings
(collapsed stacks; the `py-spy` command, or PY_SPY="uv tool run --from py-spy py-spy").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
from sqlalchemy.engine import make_url

from service.core.jobspec import parse_job
from service.db.engine import create_engine, create_sessionmaker
from service.store.jobs import new_job

import harness
from probes import BackendCpu, machine_cpu, process_cpu_seconds, process_system_seconds

URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/bm_bench_pings"
TOKEN = "bench-token-for-the-ping-benchmark"


async def declare(url: str, jobs: int) -> list[str]:
    """Heartbeat jobs declared through the service's own code (parse_job, new_job, the ORM),
    so every column the model has gets its value or default."""
    engine = create_engine(url)
    now = datetime.now(UTC)
    try:
        async with create_sessionmaker(engine)() as session:
            declared = [
                new_job(parse_job({"name": f"hb-{index:04d}", "schedule": {"every": "1h"}}), now)
                for index in range(jobs)
            ]
            session.add_all(declared)
            await session.commit()
            return [job.ping_key for job in declared]
    finally:
        await engine.dispose()


async def stored_pings(url: str) -> int:
    connection = await asyncpg.connect(harness.dsn(url))
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM pings")
        return count
    finally:
        await connection.close()


Load = tuple[list[float], int, int]


async def load(
    urls: list[str], method: str, concurrency: int, warmup: float, seconds: float
) -> Load:
    """(latencies of the measured requests, OKs in all, failures in all)."""
    latencies: list[float] = []
    oks = failures = 0
    clock = time.perf_counter
    boundary = clock() + warmup
    deadline = boundary + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(index: int) -> None:
            nonlocal oks, failures
            url = urls[index % len(urls)]
            body = f"run {index} ok".encode() if method == "POST" else None
            while (started := clock()) < deadline:
                try:
                    async with session.request(method, url, data=body) as response:
                        await response.read()
                        good = response.status == 200
                except aiohttp.ClientError:
                    good = False
                if good:
                    oks += 1
                else:
                    failures += 1
                if good and started >= boundary:
                    latencies.append(clock() - started)

        await asyncio.gather(*(worker(index) for index in range(concurrency)))
    return latencies, oks, failures


@dataclass
class Cost:
    """CPU seconds spent during one load: the server's process, the PostgreSQL backends of
    the benchmark's database, this process (the clients), and the machine's busy share."""

    server: float
    server_system: float  # of which in the kernel
    postgres: float
    clients: float
    machine_busy: float


async def costed(server: harness.Server, database: str, run: Awaitable[Load]) -> tuple[Load, Cost]:
    backends = BackendCpu(database)
    backends.start()
    pid = server.process.pid
    server_before, clients_before = process_cpu_seconds(pid), time.process_time()
    system_before = process_system_seconds(pid)
    busy_before, total_before = machine_cpu()
    result = await run
    busy, total = machine_cpu()
    cost = Cost(
        server=process_cpu_seconds(pid) - server_before,
        server_system=process_system_seconds(pid) - system_before,
        postgres=backends.stop(),
        clients=time.process_time() - clients_before,
        machine_busy=(busy - busy_before) / max(1, total - total_before),
    )
    return result, cost


def line(name: str, latencies: list[float], seconds: float, reference: float | None) -> str:
    ordered = sorted(latencies)
    rate = len(ordered) / seconds
    p99 = harness.percentile(ordered, 0.99)
    ratio = f"{rate / reference:5.3f}" if reference else "1.000"
    return (
        f"{name:28} {rate:8.0f}/s  vs bare {ratio}  p50 {statistics.median(ordered) * 1000:6.2f} ms"
        f"  p99 {p99 * 1000:6.2f} ms"
    )


def cost_line(cost: Cost, requests: int) -> str:
    each = 1000 / max(1, requests)
    return (
        f"{'':28} CPU ms a request: server {cost.server * each:.3f} (system "
        f"{cost.server_system * each:.3f}), postgres "
        f"{cost.postgres * each:.3f}, clients {cost.clients * each:.3f}; machine "
        f"{cost.machine_busy:.0%} busy"
    )


def record_profile(server: harness.Server, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """py-spy on the service for the measured part of the pings (it starts after the warm-up)."""
    command = [
        *shlex.split(os.environ.get("PY_SPY", "py-spy")),
        "record", "--pid", str(server.process.pid), "--duration", str(int(args.seconds)),
        "--rate", "250", "--format", "raw", "--output", args.py_spy,
    ]  # fmt: skip
    return subprocess.Popen(
        ["sh", "-c", f"sleep {args.warmup} && exec {shlex.join(command)}"],
        stdout=subprocess.DEVNULL,
    )


async def measure(args: argparse.Namespace, keys: list[str], log_dir: Path) -> int:
    service = harness.start_service(args.database_url, TOKEN, log_dir)
    bare = harness.start_bare(log_dir)
    database = make_url(args.database_url).database or ""
    try:
        async with aiohttp.ClientSession() as session:
            await harness.wait_until(service, session, "/health/live", lambda _: True, "live")
            await harness.wait_until(bare, session, "/constant", lambda _: True, "bare")
        (bare_latencies, bare_oks, _), bare_cost = await costed(
            bare, "", load([bare.base + "/constant"], "GET", args.concurrency, args.warmup,
                           args.seconds)
        )  # fmt: skip
        urls = [f"{service.base}/ping/{key}" for key in keys]
        before = await stored_pings(args.database_url)
        profiler = record_profile(service, args) if args.py_spy else None
        (pings, oks, failures), ping_cost = await costed(
            service, database,
            load(urls, "POST", args.concurrency, args.warmup, args.seconds),
        )  # fmt: skip
        if profiler is not None:
            profiler.wait()
        # The same pings as GETs (`curl -fsS URL`, the usual heartbeat): the reference's own
        # request, so the load generator's cost is the same on both sides.
        (gets, get_oks, get_failures), get_cost = await costed(
            service, database,
            load(urls, "GET", args.concurrency, args.warmup, args.seconds),
        )  # fmt: skip
        stored = await stored_pings(args.database_url) - before
    finally:
        service.stop()
        bare.stop()
    reference = len(bare_latencies) / args.seconds
    print(f"{args.concurrency} clients, {args.seconds:g} s measured after {args.warmup:g} s")
    print(line("bare aiohttp handler", bare_latencies, args.seconds, None))
    print(cost_line(bare_cost, bare_oks))
    print(line("POST /ping/{key} (stored)", pings, args.seconds, reference))
    print(cost_line(ping_cost, oks + failures))
    print(line("GET /ping/{key} (stored)", gets, args.seconds, reference))
    print(cost_line(get_cost, get_oks + get_failures))
    oks, failures = oks + get_oks, failures + get_failures
    print(f"pings answered OK: {oks}, stored: {stored}, failed requests: {failures}")
    rate = len(pings) / args.seconds
    verdict = "PASS" if rate >= 3000 else "FAIL"
    print(f"ping ingestion {rate:.0f}/s (POST, target >= 3000/s)  {verdict}")
    for name, measured in (("POST with a body", pings), ("GET, the reference's request", gets)):
        ratio = len(measured) / args.seconds / reference
        verdict = "PASS" if ratio >= 0.5 else "FAIL"
        print(f"vs the bare handler, {name}: {ratio:.3f} (target >= 0.5)  {verdict}")
    if stored != oks or failures:
        print("ERROR: a ping answered OK is missing, or requests failed")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--py-spy", metavar="FILE",
                        help="record the service with py-spy during the pings")  # fmt: skip
    parser.add_argument("--database-url", default=URL,
                        help="dropped and recreated; its name must contain 'bench'")  # fmt: skip
    args = parser.parse_args()
    try:
        harness.check_disposable(
            args.database_url, postgresql_only="it counts the stored pings through asyncpg"
        )
    except harness.BenchError as exc:
        parser.error(str(exc))
    harness.create_database(args.database_url)
    try:
        keys = asyncio.run(declare(args.database_url, args.jobs))
        with tempfile.TemporaryDirectory(prefix="bm-bench-pings-") as logs:
            return asyncio.run(measure(args, keys, Path(logs)))
    finally:
        harness.drop_database(args.database_url)


if __name__ == "__main__":
    sys.exit(main())
