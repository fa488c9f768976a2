"""File detection latency through a real server: a backup file landing in a watched local
source → the job's status change → the webhook notice (issue 11 item 3); and, with
--idle-dirs, the idle CPU of a `serve` process watching that many directories.

    .venv/bin/python bench/watch.py [--events 50] [--spread 10]
    .venv/bin/python bench/watch.py --events 0 --idle-dirs 2000 --idle-seconds 60

Latency: `python -m service serve` runs in its own process (bench/harness.py) with a full
scan only at start (SCANNER_INTERVAL_MINUTES=10000: any other full scan is an error), and a
CHANNELS_FILE whose webhook is a receiver in this process. One job per event, declared in a
JOBS_FILE (`every: 1d`, its own directory holding a 3-day-old file): the startup scan finds each
one critical `late` (a problem notice each). Once /health/ready says every source is watched,
one new file lands in each directory, one after the other over --spread seconds, and each is
timed from the moment it was written to the job's status_changed_at (late → ok) and to the
recovery notice reaching the webhook. Target: status change ≤ 5 s at p99.

Idle CPU: --idle-dirs jobs, one directory each (non-recursive: one inotify watch each; the files
fresh, so nothing is due), served twice: WATCH_SOURCES=false (the reference) then true. Once
every source is watched (or, off, after the startup scan) and --settle seconds passed, the
process's utime + stime (/proc/PID/stat, all its threads) is read over --idle-seconds. Target:
watching adds < 2 % of one core.

The database (PostgreSQL by default, or a SQLite file) is dropped and recreated first (for each
serve), and dropped at the end: its name must contain `bench`. Exit status: 0 whatever the
targets say (PASS/FAIL is printed); 1 on an error (a change never judged, a notice missing, a
full scan, a source not watched).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, select

from service.db.engine import create_engine, create_sessionmaker
from service.db.models import Job, ScanRun

import harness
from harness import BenchError, Receiver, summary, wait_for
from probes import process_cpu_seconds

URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/bm_bench_watch"
TOKEN = "bench-token-for-the-watch-benchmark"
TARGET_P99 = 5.0
TARGET_IDLE_CPU = 2.0  # percent of one core, added by watching


def write_jobs(tree: Path, count: int, prefix: str, age: timedelta) -> Path:
    """`count` directories with one file of the given age each, and a jobs file for them."""
    jobs = []
    stamp = (datetime.now(UTC) - age).timestamp()
    for index in range(count):
        name = f"{prefix}-{index:04d}"
        folder = tree / name
        folder.mkdir(parents=True)
        old = folder / "backup-old.tar.gz"
        old.write_bytes(b"o" * 1000)
        os.utime(old, (stamp, stamp))
        source = {"type": "local", "path": str(folder), "pattern": "*.tar.gz"}
        jobs.append({"name": name, "source": source, "schedule": {"every": "1d"}, "grace": "1h"})
    path = tree / "jobs.yml"
    path.write_text(json.dumps({"jobs": jobs}))  # JSON is YAML
    return path


def start_service(
    url: str, log_dir: Path, jobs_file: Path, channels: Path | None, watch: bool
) -> harness.Server:
    settings = {"JOBS_FILE": str(jobs_file), "WATCH_SOURCES": str(watch).lower()}
    if channels is not None:
        settings["CHANNELS_FILE"] = str(channels)
    return harness.start_service(
        url, TOKEN, log_dir, name=f"service-{'watch' if watch else 'nowatch'}",
        NOTIFY_POLL_SECONDS="0.2", **settings,
    )  # fmt: skip


async def ready_to_watch(
    server: harness.Server, client: aiohttp.ClientSession, count: int
) -> float:
    """Wait for the startup scan and for every source watched; the seconds it took."""
    started = time.monotonic()
    await harness.startup_scan(server, client)
    wanted = f"ok: {count} of {count} sources watched"
    deadline = time.monotonic() + 120
    while True:
        async with client.get(server.base + "/health/ready") as answer:
            checks = (await answer.json())["checks"]
            if checks.get("watch") == wanted:
                return time.monotonic() - started
        if time.monotonic() > deadline:
            raise BenchError(f"not every source watched: {checks.get('watch')!r}")
        await asyncio.sleep(0.1)


async def full_scans(url: str) -> int:
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(ScanRun)
                .where(ScanRun.trigger.not_in(("tick", "watch")))
            )
    finally:
        await engine.dispose()
    return int(count or 0)


async def latency(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    receiver = Receiver()
    await receiver.start()
    channels = log_dir / "channels.yml"
    hook = {"type": "webhook", "url": receiver.url}
    channels.write_text(json.dumps({"defaults": ["hook"], "channels": {"hook": hook}}))
    tree = log_dir / "tree"
    jobs_file = write_jobs(tree, args.events, "land", timedelta(days=3))
    server = start_service(args.database_url, log_dir, jobs_file, channels, watch=True)
    engine = create_engine(args.database_url)
    sessions = create_sessionmaker(engine)
    landed: dict[str, datetime] = {}
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            await ready_to_watch(server, client, args.events)

        async def all_late() -> bool:
            return len(receiver.first("problem")) == args.events

        await wait_for("every problem notice", all_late, 60)
        step = args.spread / max(1, args.events)
        for index in range(args.events):
            name = f"land-{index:04d}"
            (tree / name / "backup-new.tar.gz").write_bytes(b"n" * 1000)
            landed[name] = datetime.now(UTC)
            await asyncio.sleep(step)

        async def recovered() -> list[Any] | None:
            async with sessions() as session:
                rows = (
                    await session.execute(
                        select(Job.name, Job.status_changed_at).where(Job.status == "ok")
                    )
                ).all()
            return rows if len(rows) == args.events else None

        rows = await wait_for("every job judged ok", recovered, 60)

        async def notified() -> bool:
            return len(receiver.first("recovery")) == args.events

        await wait_for("every recovery notice", notified, 60)
        scans = await full_scans(args.database_url)
        if scans != 1:
            raise BenchError(f"{scans} full scans ran: the startup one only was expected")
        status_delays = [(changed - landed[name]).total_seconds() for name, changed in rows]
        recoveries = receiver.first("recovery")
        hook_delays = [(recoveries[name] - landed[name]).total_seconds() for name in landed]
    finally:
        await engine.dispose()
        code = server.stop()
        await receiver.stop()
        if code not in (0, None):
            print(server.tail(), file=sys.stderr)
    status = summary(status_delays)
    return {
        "events": args.events, "status": status, "webhook": summary(hook_delays),
        "target_p99": TARGET_P99, "pass": status["p99"] <= TARGET_P99,
    }  # fmt: skip


async def idle_cpu_of(args: argparse.Namespace, log_dir: Path, watch: bool) -> dict[str, float]:
    """One serve process over --idle-dirs jobs: its CPU over --idle-seconds once settled."""
    await asyncio.to_thread(harness.create_database, args.database_url)  # it runs a loop of its own
    tree = log_dir / f"idle-{'watch' if watch else 'nowatch'}"
    jobs_file = write_jobs(tree, args.idle_dirs, "idle", timedelta(hours=1))
    server = start_service(args.database_url, log_dir, jobs_file, None, watch=watch)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            if watch:
                ready = await ready_to_watch(server, client, args.idle_dirs)
            else:
                started = time.monotonic()
                await harness.startup_scan(server, client)
                ready = time.monotonic() - started
        await asyncio.sleep(args.settle)
        pid = server.process.pid
        before, wall = process_cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(args.idle_seconds)
        used, elapsed = process_cpu_seconds(pid) - before, time.monotonic() - wall
        threads = len(os.listdir(f"/proc/{pid}/task"))
    finally:
        code = server.stop()
        if code not in (0, None):
            print(server.tail(), file=sys.stderr)
        await asyncio.to_thread(harness.drop_database, args.database_url)
    return {
        "cpu_percent": 100 * used / elapsed, "seconds": elapsed, "ready_seconds": ready,
        "threads": threads,
    }  # fmt: skip


async def idle(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    off = await idle_cpu_of(args, log_dir, watch=False)
    on = await idle_cpu_of(args, log_dir, watch=True)
    added = on["cpu_percent"] - off["cpu_percent"]
    return {
        "dirs": args.idle_dirs, "off": off, "on": on, "added_cpu_percent": added,
        "target_percent": TARGET_IDLE_CPU, "pass": added < TARGET_IDLE_CPU,
    }  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50, help="files landing (0: none)")
    parser.add_argument("--spread", type=float, default=10.0, help="seconds over which they land")
    parser.add_argument("--idle-dirs", type=int, default=0, help="watched directories (0: skip)")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument("--database-url", default=URL)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bm_bench_watch_") as log_dir:
            try:
                if args.events:
                    harness.create_database(args.database_url)
                    result["latency"] = asyncio.run(latency(args, Path(log_dir)))
                if args.idle_dirs:
                    result["idle"] = asyncio.run(idle(args, Path(log_dir)))
            finally:
                harness.drop_database(args.database_url)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
        return 0
    if "latency" in result:
        report = result["latency"]
        print(f"backup-monitor watch benchmark — {report['events']} files landing")
        for key, label in (("status", "landing → status change"), ("webhook", "landing → webhook")):
            line = report[key]
            print(
                f"  {label:<24} p50 {line['p50']:.2f} s  p99 {line['p99']:.2f} s  "
                f"max {line['max']:.2f} s  (min {line['min']:.2f} s)"
            )
        verdict = "PASS" if report["pass"] else "FAIL"
        print(f"  target: status change p99 ≤ {TARGET_P99:g} s: {verdict}")
    if "idle" in result:
        report = result["idle"]
        print(f"backup-monitor idle CPU — {report['dirs']} jobs, one watched directory each")
        for key, label in (("off", "WATCH_SOURCES=false"), ("on", "WATCH_SOURCES=true")):
            line = report[key]
            print(
                f"  {label:<20} {line['cpu_percent']:.2f} % of a core over {line['seconds']:.0f} s "
                f"({line['threads']} threads; ready after {line['ready_seconds']:.1f} s)"
            )
        verdict = "PASS" if report["pass"] else "FAIL"
        print(
            f"  added by watching: {report['added_cpu_percent']:.2f} % "
            f"(target < {TARGET_IDLE_CPU:g} %): {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
