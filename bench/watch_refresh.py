"""The source watcher's refresh at a fleet's size: how long it holds the event loop.

Every WATCH_REFRESH_SECONDS the watcher reads the jobs again, and at start it reads them all
for the first time. This declares J jobs with local sources in a fresh SQLite database (their
directories missing, as under a mount that is gone: the worst case, every source logged and
named), starts a SourceWatcher with the collector set as `serve` sets it, and reports the
event loop's worst lag (a 5 ms ticker beside it) during the first refresh and during later
ones, the time `check()` takes (what /health/ready shows), and how many lines the watcher
logged.

    .venv/bin/python bench/watch_refresh.py [--jobs 10000] [--refreshes 3]

Exit status 1 when the watcher does not name every source as not watched.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from service.core.jobspec import parse_job
from service.db.engine import create_engine, create_sessionmaker
from service.runtime.server import settle_startup_objects
from service.scanner.watch import SourceWatcher
from service.store.jobs import new_job

import harness

REFRESH_SECONDS = 1.0


class Counted(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def measure(url: str, jobs: int, refreshes: int) -> dict[str, float]:
    engine = create_engine(url)
    sessionmaker = create_sessionmaker(engine)
    now = datetime.now(UTC)
    async with sessionmaker() as session:
        session.add_all(
            new_job(parse_job({
                "name": f"job-{index:05d}", "schedule": {"every": "1d"},
                "source": {"type": "local", "path": f"/gone/site-{index % 50}/job-{index}"},
            }), now)
            for index in range(jobs)
        )  # fmt: skip
        await session.commit()
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append((time.perf_counter() - started - 0.005) * 1000)

    logged = Counted()
    logging.getLogger("service.scanner.watch").addHandler(logged)
    logging.getLogger("service.scanner.watch").setLevel(logging.INFO)
    gc.collect()
    settle_startup_objects()
    ticking = asyncio.create_task(ticker())
    watcher = SourceWatcher(sessionmaker, refresh_seconds=REFRESH_SECONDS)
    try:
        await watcher.start()
        for _ in range(6000):  # 60 s
            if watcher.check() != "starting":
                break
            await asyncio.sleep(0.01)
        else:
            raise harness.BenchError("the first refresh did not end within 60 s")
        first = max(lags)
        lags.clear()
        await asyncio.sleep(REFRESH_SECONDS * refreshes + 0.1)
        later = max(lags)
        started = time.perf_counter()
        check = watcher.check()
        check_ms = (time.perf_counter() - started) * 1000
    finally:
        await watcher.stop()
        ticking.cancel()
        logging.getLogger("service.scanner.watch").removeHandler(logged)
        await engine.dispose()
    if not check.startswith(f"degraded: 0 of {jobs} sources watched"):
        raise harness.BenchError(f"check() says {check[:200]!r}")
    named = sum(
        len(getattr(record, "paths", [record]))  # a line names one path, or a list of them
        for record in logged.records
        if "not watched" in record.getMessage()
    )
    if named != jobs:
        raise harness.BenchError(f"the log named {named} sources not watched, not {jobs}")
    return {"first": first, "later": later, "check_ms": check_ms, "lines": len(logged.records)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--refreshes", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'bench_watch.sqlite'}"
        harness.create_database(url)
        try:
            result = asyncio.run(measure(url, args.jobs, args.refreshes))
        except harness.BenchError as exc:
            print(f"watch_refresh: {exc}", file=sys.stderr)
            return 1
    print(f"source watcher, {args.jobs} jobs with local sources (missing), SQLite, "
          f"code {harness.code_version()}")  # fmt: skip
    print(f"event loop's worst lag, first refresh:  {result['first']:7.1f} ms")
    print(f"event loop's worst lag, {args.refreshes} later refreshes: {result['later']:7.1f} ms")
    print(f"check() (/health/ready's watch check): {result['check_ms']:7.1f} ms")
    print(f"lines the watcher logged:              {result['lines']:7d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
