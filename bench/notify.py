"""Notification delivery on PostgreSQL: how fast a backlog of notices drains to a webhook,
next to plain aiohttp POSTs of the same bodies to the same receiver, in the same run.

    .venv/bin/python bench/notify.py [--jobs 200] [--per-job 5] [--backlog both|many|one]
        [--concurrency N] [--database-url URL]

The dispatcher runs as in `serve` (`Dispatcher.start`, its default sends at once per channel:
32 for a webhook; `--concurrency` sets them) until the receiver has every notice; the plain
POSTs go out as many at once.

Two backlogs (`--backlog` picks one): J jobs x N notices (sent as many jobs at a time as the
slots allow), and J x N notices of one job (strictly one after the other: a job's notices keep
their order). Each notice must arrive exactly once. Target (issue 16): 10 000 notices drain at
500/s or more.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
from sqlalchemy import insert

from service.core.jobspec import parse_job
from service.db.engine import create_engine, create_sessionmaker
from service.db.models import NotificationEvent
from service.notify.config import parse_channels
from service.notify.dispatcher import STOP_GRACE, Dispatcher, DispatchOptions
from service.notify.events import event_row
from service.store.jobs import new_job

from harness import Receiver, code_version, create_database, drop_database

URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/bm_bench_notify"


async def backlog(sessions: Any, jobs: int, per_job: int, prefix: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    rows = []
    async with sessions() as session:
        for index in range(jobs):
            job = new_job(parse_job({"name": f"{prefix}-{index:04d}", "schedule": {"every": "1d"}}),
                          now)  # fmt: skip
            session.add(job)
            await session.flush()
            rows += [
                event_row(job_id=job.id, job_name=job.name, kind="problem", status="critical",
                          previous_status="ok", reasons=[{"code": "late", "severity": "critical",
                          "message": f"notice {n}"}], latest_artifact=None, channels=None, now=now)
                for n in range(per_job)
            ]  # fmt: skip
        await session.execute(insert(NotificationEvent), rows)
        await session.commit()
    return rows


def event_ids(receiver: Receiver) -> list[str]:
    return [body["event_id"] for _arrived, body in receiver.bodies]


async def drain(dispatcher: Dispatcher, receiver: Receiver, count: int) -> float:
    started = time.perf_counter()
    await dispatcher.start()
    async with asyncio.timeout(600):
        await receiver.until(count)
    seconds = time.perf_counter() - started
    await dispatcher.stop(STOP_GRACE)
    return seconds


async def plain_posts(url: str, bodies: list[dict[str, Any]], concurrency: int) -> float:
    queue = list(bodies)
    started = time.perf_counter()
    async with aiohttp.ClientSession() as client:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with client.post(url, json=body) as response:
                    assert response.status == 204

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> int:
    receiver = Receiver()
    await receiver.start()
    channels = parse_channels({"defaults": ["hook"], "channels": {"hook": {
        "type": "webhook", "url": receiver.url}}}, "bench")  # fmt: skip
    engine = create_engine(args.database_url)
    sessions = create_sessionmaker(engine)
    options = DispatchOptions(poll_seconds=0.05, concurrency=args.concurrency)
    slots = Dispatcher(sessions, channels, options).slots("hook")  # the plain POSTs' too
    problems = 0
    print(f"backup-monitor notification benchmark — {args.database_url} (code {code_version()}, "
          f"{slots} sends at once)")  # fmt: skip
    try:
        for label, jobs, per_job in (
            ("many jobs", args.jobs, args.per_job),
            ("one job", 1, args.jobs * args.per_job),
        ):
            if args.backlog not in ("both", label.split()[0]):
                continue
            prefix = label.split()[0]  # "many", "one": --jobs 1 makes two one-job backlogs
            rows = await backlog(sessions, jobs, per_job, prefix)
            receiver.bodies.clear()
            seconds = await drain(Dispatcher(sessions, channels, options), receiver, len(rows))
            expected = [row["event_id"] for row in rows]
            seen = event_ids(receiver)
            exact = sorted(seen) == sorted(expected)
            ordered = jobs > 1 or seen == expected
            receiver.bodies.clear()
            reference = await plain_posts(receiver.url, [row["payload"] for row in rows], slots)
            count = len(rows)
            print(
                f"{label:>9}: {count} notices in {seconds:.2f} s = {count / seconds:,.0f}/s; "
                f"plain POSTs {count / reference:,.0f}/s; ratio {seconds / reference:.1f}x; "
                f"each exactly once: {'yes' if exact else 'NO'}"
                + ("" if jobs > 1 else f"; in order: {'yes' if ordered else 'NO'}")
            )
            problems += (not exact) + (not ordered)
    finally:
        await engine.dispose()
        await receiver.stop()
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--per-job", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=None, help="default: by channel type")
    parser.add_argument("--backlog", choices=("both", "many", "one"), default="both")
    parser.add_argument("--database-url", default=URL)
    args = parser.parse_args()
    create_database(args.database_url)  # dropped first, and migrated
    try:
        return asyncio.run(run(args))
    finally:
        drop_database(args.database_url)


if __name__ == "__main__":
    sys.exit(main())
