"""Hang detection latency through a real server: `/ping/K/start` with no finish, and how long
after start + `max_duration` the job turns critical `run_overdue` (its status_changed_at) and
the webhook notice arrives (issue 11 item 3).

    .venv/bin/python bench/overdue.py [--events 50] [--tick 1] [--max-duration 3]

`python -m service serve` runs in its own process (bench/harness.py) with TICK_SECONDS
= --tick, a full scan only at start (SCANNER_INTERVAL_MINUTES=10000: any other full scan is an
error), and a CHANNELS_FILE whose webhook is a receiver in this process. One job per event
(`every: 1d`, `max_duration`), their starts spread over --spread seconds so that the deadlines
fall at every phase of the tick. Target: status change ≤ TICK_SECONDS + 1 s at p99.

The database (PostgreSQL by default, or a SQLite file) is dropped and recreated first, and
dropped at the end: its name must contain `bench`. Exit status: 0 whatever the target says
(PASS/FAIL is printed); 1 on an error (a job never overdue, a notice missing, a full scan).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, select

from service.db.engine import create_engine, create_sessionmaker
from service.db.models import Job, Ping, ScanRun

import harness
from harness import BenchError, Receiver, summary, wait_for

URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/bm_bench_overdue"
TOKEN = "bench-token-for-the-overdue-benchmark"


def start_service(url: str, tick: float, channels: Path, log_dir: Path) -> harness.Server:
    return harness.start_service(
        url, TOKEN, log_dir, TICK_SECONDS=str(tick), CHANNELS_FILE=str(channels),
        NOTIFY_POLL_SECONDS="0.2",
    )  # fmt: skip


async def measure(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    receiver = Receiver()
    await receiver.start()
    channels = log_dir / "channels.yml"
    hook = {"type": "webhook", "url": receiver.url}
    channels.write_text(json.dumps({"defaults": ["hook"], "channels": {"hook": hook}}))
    server = start_service(args.database_url, args.tick, channels, log_dir)
    engine = create_engine(args.database_url)
    sessions = create_sessionmaker(engine)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as client:
            await harness.startup_scan(server, client)
            keys = {}
            for index in range(args.events):
                name = f"hung-{index:04d}"
                declaration = {
                    "name": name, "schedule": {"every": "1d"},
                    "rules": {"max_duration": args.max_duration},
                }  # fmt: skip
                async with client.post(server.base + "/api/v1/jobs", json=declaration) as answer:
                    if answer.status != 201:
                        raise BenchError(f"creating {name}: {answer.status} {await answer.text()}")
                    keys[name] = (await answer.json())["ping_key"]
            step = args.spread / max(1, args.events)
            for key in keys.values():
                async with client.get(f"{server.base}/ping/{key}/start") as answer:
                    if answer.status != 200:
                        raise BenchError(f"/start answered {answer.status}")
                await asyncio.sleep(step)

        async def overdue() -> list[Any] | None:
            async with sessions() as session:
                rows = (
                    await session.execute(
                        select(
                            Job.name, Job.status_changed_at, Job.reasons, func.max(Ping.received_at)
                        )
                        .join(Ping, Ping.job_id == Job.id)
                        .where(Job.status == "critical", Ping.kind == "start")
                        .group_by(Job.name, Job.status_changed_at, Job.reasons)
                    )
                ).all()
            return rows if len(rows) == args.events else None

        rows = await wait_for("every job overdue", overdue, args.max_duration + args.spread + 60)

        async def notified() -> bool:
            return len(receiver.first("problem")) == args.events

        await wait_for("every problem notice", notified, 60)
        async with sessions() as session:
            full_scans = await session.scalar(
                select(func.count()).select_from(ScanRun).where(ScanRun.trigger != "tick")
            )
        if full_scans != 1:
            raise BenchError(f"{full_scans} full scans ran: the startup one only was expected")
        status_delays, hook_delays = [], []
        for name, changed_at, reasons, started_at in rows:
            if [reason["code"] for reason in reasons] != ["run_overdue"]:
                raise BenchError(f"{name}: {reasons}")
            deadline = started_at + timedelta(seconds=args.max_duration)
            status_delays.append((changed_at - deadline).total_seconds())
            hook_delays.append((receiver.first("problem")[name] - deadline).total_seconds())
    finally:
        await engine.dispose()
        code = server.stop()
        await receiver.stop()
        if code not in (0, None):
            print(server.tail(), file=sys.stderr)
    return {
        "events": args.events, "tick_seconds": args.tick, "max_duration": args.max_duration,
        "status": summary(status_delays), "webhook": summary(hook_delays),
        "target_p99": args.tick + 1.0,
        "pass": summary(status_delays)["p99"] <= args.tick + 1.0,
    }  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--tick", type=float, default=1.0, help="TICK_SECONDS")
    parser.add_argument("--max-duration", type=float, default=3.0, help="seconds")
    parser.add_argument("--spread", type=float, default=5.0, help="seconds over which to start")
    parser.add_argument("--database-url", default=URL)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        harness.create_database(args.database_url)
        try:
            with tempfile.TemporaryDirectory(prefix="bm_bench_overdue_") as log_dir:
                result = asyncio.run(measure(args, Path(log_dir)))
        finally:
            harness.drop_database(args.database_url)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"backup-monitor overdue benchmark — {result['events']} hung runs, "
        f"TICK_SECONDS={args.tick:g}, max_duration={args.max_duration:g} s"
    )
    for key, label in (("status", "deadline → status change"), ("webhook", "deadline → webhook")):
        line = result[key]
        print(
            f"  {label:<26} p50 {line['p50']:.2f} s  p99 {line['p99']:.2f} s  "
            f"max {line['max']:.2f} s  (min {line['min']:.2f} s)"
        )
    verdict = "PASS" if result["pass"] else "FAIL"
    print(
        f"  target: status change p99 ≤ TICK_SECONDS + 1 s = {result['target_p99']:g} s: {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
