"""/metrics, /api/v1/status and the dashboard pages with N jobs (30 files each) on PostgreSQL,
against a bare aiohttp handler that returns a constant, measured in the same run.

    .venv/bin/python bench/metrics.py [--jobs 2000] [--requests 200] [--database-url URL]

Targets (issue 5): /metrics under 200 ms and the dashboard (`/`: its first page, 100 jobs with
their sparklines, and the counts of all) under 300 ms, server side, with 2 000 jobs.

The client runs in the server's process and event loop, so its latencies include reading the
answer (1.5 MB of /metrics for 2 000 jobs); the "server" lines are the time from the request
entering the service's outermost middleware to its response leaving it (body built, not yet
written), which is what the target (< 200 ms) is about.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
from aiohttp import web

from service.core.jobspec import parse_job
from service.db.engine import create_engine, create_sessionmaker
from service.runtime.app import create_app
from service.settings import load_settings
from service.store.jobs import new_job

import harness

FILES_PER_JOB = 30
URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/bm_bench_metrics"


async def prepare(url: str, jobs: int) -> None:
    """N jobs (every status) through the ORM, and 30 files each (COPY) for their charts."""
    engine = create_engine(url)
    now = datetime.now(UTC)
    statuses = ("ok", "warning", "critical", "unknown", "pending", "paused")
    async with create_sessionmaker(engine)() as session:
        for index in range(jobs):
            declared = {"name": f"job-{index:05d}", "tags": ["db", f"team{index % 7}"],
                        "source": {"type": "local", "path": f"/backups/job-{index:05d}"},
                        "schedule": {"every": "1d"}}  # fmt: skip
            job = new_job(parse_job(declared), now)
            job.status = statuses[index % len(statuses)]
            job.artifact_count = 30
            job.latest_artifact = {"path": "x.tar", "size": 10_000, "mtime": now.isoformat()}
            job.next_check_at = now + timedelta(hours=index % 24)
            session.add(job)
        await session.commit()
    await engine.dispose()
    # 30 files a job, for the dashboard's sparklines and the job page's chart.
    connection = await asyncpg.connect(harness.dsn(url))
    ids = [row[0] for row in await connection.fetch("SELECT id FROM jobs ORDER BY id")]
    records = [
        (job_id, f"x-{day:02d}.tar", 10_000 + (job_id * 7 + day * 13) % 997,
         now - timedelta(days=day), now, now)
        for job_id in ids
        for day in range(FILES_PER_JOB)
    ]  # fmt: skip
    await connection.copy_records_to_table(
        "artifacts",
        records=records,
        columns=("job_id", "path", "size", "mtime", "first_seen", "last_seen"),
    )
    await connection.execute("ANALYZE")
    await connection.close()


OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"}


async def timed(
    session: aiohttp.ClientSession, url: str, count: int, headers: dict[str, str] | None = None
) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        async with session.get(url, headers=headers or {}) as response:
            await response.read()
            assert response.status == 200, response.status
        times.append(time.perf_counter() - started)
    return times


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:7.2f} ms  p99 {p99 * 1000:7.2f} ms"


async def run(args: argparse.Namespace) -> None:
    url = args.database_url
    await prepare(url, args.jobs)

    app = create_app(load_settings(database_url=url), scheduler=False)
    gc.collect()  # as `serve` does: what lives as long as the process stays out of full passes
    gc.freeze()

    async def constant(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/bare", constant)
    server: dict[tuple[str, bool], list[float]] = {}  # (path, OpenMetrics asked): seconds

    @web.middleware
    async def timer(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            key = (request.path, "openmetrics" in request.headers.get("Accept", ""))
            server.setdefault(key, []).append(time.perf_counter() - started)

    app.middlewares.insert(0, timer)  # outermost: the service's own middlewares included
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await timed(session, f"{base}/metrics", 5)  # warm-up
            server.clear()
            bare = await timed(session, f"{base}/bare", args.requests)
            metrics = await timed(session, f"{base}/metrics", args.requests, OPENMETRICS)
            classic = await timed(session, f"{base}/metrics", args.requests)
            status = await timed(session, f"{base}/api/v1/status", args.requests)
            pages = max(args.requests // 4, 10)
            await timed(session, f"{base}/", 2)  # warm-up (templates compiled)
            dashboard = await timed(session, f"{base}/", pages)
            job_page = await timed(session, f"{base}/jobs/job-00001", pages)
    finally:
        await runner.cleanup()
    reference = statistics.median(bare)
    print(f"{args.jobs} jobs on PostgreSQL, {args.requests} sequential requests each")
    print(f"bare handler    {summary(bare)}")
    measured = (
        ("/metrics (OM)", metrics),
        ("/metrics (text)", classic),
        ("/api/v1/status", status),
        ("/ (dashboard)", dashboard),
        ("/jobs/{job}", job_page),
    )
    for name, times in measured:
        ratio = statistics.median(times) / reference
        print(f"{name:15} {summary(times)}  median = {ratio:.0f}x bare")
    # The same requests, timed inside the server (see the docstring).
    server_bare, server_om = server[("/bare", False)], server[("/metrics", True)]
    print(f"server: {'bare handler':15} {summary(server_bare)}")
    server_dashboard = server[("/", False)][2:]  # without the warm-up
    for name, times in (
        ("/metrics (OM)", server_om),
        ("/metrics (text)", server[("/metrics", False)]),
        ("/ (dashboard)", server_dashboard),
        ("/jobs/{job}", server[("/jobs/job-00001", False)]),
    ):
        ratio = statistics.median(times) / statistics.median(server_bare)
        print(f"server: {name:15} {summary(times)}  median = {ratio:.0f}x bare")
    verdict = "PASS" if max(metrics) < 0.2 else "FAIL"
    print(f"/metrics (OpenMetrics, as Prometheus asks) worst {max(metrics) * 1000:.1f} ms "
          f"(target < 200 ms)  {verdict}")  # fmt: skip
    verdict = "PASS" if max(server_om) < 0.2 else "FAIL"
    print(f"/metrics (OpenMetrics) server side worst {max(server_om) * 1000:.1f} ms "
          f"(target < 200 ms)  {verdict}")  # fmt: skip
    p50 = statistics.median(server_dashboard)
    verdict = "PASS" if p50 < 0.3 else "FAIL"
    print(f"/ (dashboard, {args.jobs} jobs) server side p50 {p50 * 1000:.1f} ms, worst "
          f"{max(server_dashboard) * 1000:.1f} ms (target < 300 ms)  {verdict}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--database-url", default=URL,
                        help="PostgreSQL; dropped and recreated, its name must contain 'bench'"
                        )  # fmt: skip
    args = parser.parse_args()
    try:
        harness.check_disposable(args.database_url, postgresql_only="it loads files with COPY")
    except harness.BenchError as exc:
        parser.error(str(exc))
    harness.create_database(args.database_url)
    try:
        asyncio.run(run(args))
    finally:
        harness.drop_database(args.database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
