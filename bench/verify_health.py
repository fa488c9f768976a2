"""Verification benchmark: /health/live answers while a big archive is verified.

Builds a gzip file of --megabytes MB (incompressible data), declares a job that verifies it
(`verify: {archive: true}`), starts the service's app (its HTTP server, no scheduler) and a
Verifier in the same process and event loop, and probes GET /health/live back to back: first
for --baseline-seconds with nothing verified (the reference, same run), then while the file is
read. Prints both latency distributions and the verification's throughput; checks that the
file was verified ok.

    .venv/bin/python bench/verify_health.py --megabytes 1024
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web
from sqlalchemy import select

from service.core.jobspec import parse_job
from service.core.scan_options import ScanOptions
from service.db import migrate
from service.db.models import ArtifactVerification
from service.runtime.app import create_app
from service.runtime.keys import sessionmaker_key
from service.runtime.lifecycle import wait_for_condition
from service.runtime.verifier import Verifier, VerifyOptions
from service.scanner.scanner import run_scanner
from service.settings import load_settings
from service.store.jobs import new_job


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def build_file(path: Path, megabytes: int) -> int:
    """A gzip stream of `megabytes` MB of random bytes, written a piece at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=1) as out:
        for _ in range(megabytes):
            out.write(os.urandom(1_000_000))
    old = (datetime.now(UTC) - timedelta(hours=1)).timestamp()
    os.utime(path, (old, old))
    return path.stat().st_size


async def probe(session: aiohttp.ClientSession, url: str, until: asyncio.Event) -> list[float]:
    latencies = []
    while not until.is_set():
        started = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
            assert response.status == 200
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def main(args: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="bm-bench-verify-"))
    url = f"sqlite+aiosqlite:///{work / 'bench.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    size = await asyncio.to_thread(build_file, work / "db" / "big.sql.gz", args.megabytes)
    app = create_app(load_settings(database_url=url), scheduler=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    health = f"http://{host}:{port}/health/live"
    sessions = app[sessionmaker_key]
    spec = parse_job(
        {
            "name": "big", "schedule": {"every": "1d"},
            "source": {"type": "local", "path": str(work / "db"), "pattern": "*.gz"},
            "verify": {"archive": True},
        }
    )  # fmt: skip
    async with sessions() as session:
        session.add(new_job(spec, datetime.now(UTC) - timedelta(days=1)))
        await session.commit()
        await run_scanner(session, ScanOptions(), trigger="manual")
    report: dict[str, object] = {"file_bytes": size}
    try:
        async with aiohttp.ClientSession() as client:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(args.baseline_seconds, stop.set)
            baseline = await probe(client, health, stop)
            options = VerifyOptions(bytes_per_second=args.rate, poll_seconds=0.05)
            verifier = Verifier(sessions, options)
            done = asyncio.Event()
            started = time.monotonic()
            await verifier.start()

            async def watch() -> None:
                await wait_for_condition(lambda: verifier.stats.verified >= 1, 3600, 0.05)
                done.set()

            watcher = asyncio.create_task(watch())
            during = await probe(client, health, done)
            seconds = time.monotonic() - started
            await watcher
            await verifier.stop(5)
        async with sessions() as session:
            row = await session.scalar(select(ArtifactVerification))
        assert row is not None, "not verified"
        assert row.outcome == "ok", row.detail
        report.update(
            verify_seconds=round(seconds, 2),
            verify_mb_per_s=round(size / seconds / 1e6, 1),
            baseline_ms={"n": len(baseline), "p50": round(percentile(baseline, 0.5), 2),
                         "p99": round(percentile(baseline, 0.99), 2)},
            during_ms={"n": len(during), "p50": round(percentile(during, 0.5), 2),
                       "p99": round(percentile(during, 0.99), 2),
                       "max": round(max(during), 2)},
        )  # fmt: skip
    finally:
        await runner.cleanup()
        await asyncio.to_thread(shutil.rmtree, work)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--rate", type=int, default=10**10, help="VERIFY_BYTES_PER_SECOND")
    parser.add_argument("--baseline-seconds", type=float, default=3.0)
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result, indent=2))
