"""Three real `backup-monitor serve` replicas on one fresh PostgreSQL database split the work:
300 local jobs are listed about 300 times per cycle between them (not 900), a third each; a
change is notified once; a replica killed with SIGKILL has its share taken over within one
lease period (and the next scan of the others).

Short settings (a 4 s scan interval, a 6 s lease) keep it to well under a minute."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from sqlalchemy import func, select

from service.core.jobspec import parse_job
from service.db.engine import create_engine, create_sessionmaker
from service.db.models import Job, NotificationEvent, Replica, ScanRun
from service.store.jobs import new_job

from tests.support import Receiver, free_port, make_file, read

JOBS = 300
INTERVAL = 4.0  # seconds: SCANNER_INTERVAL_MINUTES
LEASE = 6.0  # seconds: FLEET_LEASE_SECONDS
CYCLES = 3  # measured
BROKEN = 30  # jobs whose newest backup becomes too small


async def wait_until(condition, within: float, step: float = 0.2):
    """Await `condition()` (async) until it returns something true; that value."""
    deadline = time.monotonic() + within
    while True:
        value = await condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {within} s"
        await asyncio.sleep(step)


async def wait_ready(port: int, process: asyncio.subprocess.Process, log: Path) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:

        async def ready() -> bool:
            assert process.returncode is None, read(log)
            try:
                async with client.get(f"http://127.0.0.1:{port}/health/live") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(ready, 60)


async def test_three_replicas_split_the_listings_notify_once_and_take_over(
    pg_url, base_env, tmp_path
):
    engine = create_engine(pg_url)
    sessions = create_sessionmaker(engine)
    receiver = Receiver()
    processes: list[asyncio.subprocess.Process] = []
    try:
        await receiver.start()
        created = datetime.now(UTC) - timedelta(days=2)
        async with sessions() as session:  # one transaction: ids 1 to 300, in order
            for index in range(JOBS):
                directory = tmp_path / "backups" / f"d{index:03d}"
                make_file(directory / "b-1.dump", 1000, datetime.now(UTC) - timedelta(hours=1))
                declaration = {
                    "name": f"job-{index:03d}", "schedule": {"every": "1d"},
                    "rules": {"min_size": 100},
                    "source": {"type": "local", "path": str(directory), "pattern": "*.dump",
                               "settle": 0},
                }  # fmt: skip
                session.add(new_job(parse_job(declaration), created))
            await session.commit()
        channels = tmp_path / "channels.yml"
        channels.write_text(
            f"defaults: [hook]\nchannels:\n  hook: {{type: webhook, url: '{receiver.url}'}}\n"
        )
        env = dict(
            base_env, DATABASE_URL=pg_url, CHANNELS_FILE=str(channels),
            SCANNER_INTERVAL_MINUTES=str(INTERVAL / 60), FLEET_LEASE_SECONDS=str(LEASE),
            NOTIFY_POLL_SECONDS="0.5", WATCH_REFRESH_SECONDS="2",
        )  # fmt: skip
        names = [f"replica-{index}" for index in range(3)]
        ports = [free_port() for _ in names]
        logs = [tmp_path / f"{name}.log" for name in names]
        for name, port, log in zip(names, ports, logs, strict=True):
            with log.open("wb") as stderr:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "service",
                        "serve",
                        "--port",
                        str(port),
                        cwd=tmp_path,
                        env=dict(env, REPLICA_NAME=name),
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=stderr,
                    )
                )
        for process, port, log in zip(processes, ports, logs, strict=True):
            await wait_ready(port, process, log)

        async def live() -> list[str]:
            async with sessions() as session:
                rows = await session.scalars(
                    select(Replica.name).where(Replica.lease_until >= datetime.now(UTC))
                )
                return sorted(rows.all())

        assert await wait_until(lambda: _equal(live, names), 30)
        # A replica's first scan, as it starts, finds the jobs listed by those started before
        # it: the scans after it see the three, CYCLES of them measured.
        start = datetime.now(UTC) + timedelta(seconds=INTERVAL / 2)

        async def runs_since(since: datetime, trigger: str = "schedule") -> list[ScanRun]:
            async with sessions() as session:
                rows = await session.scalars(
                    select(ScanRun)
                    .where(ScanRun.trigger == trigger, ScanRun.started_at >= since,
                           ScanRun.status == "finished")
                    .order_by(ScanRun.started_at)
                )  # fmt: skip
                return list(rows.all())

        async def measured() -> dict[str, int] | None:
            runs = await runs_since(start)
            per: dict[str, list[int]] = {name: [] for name in names}
            for run in runs:
                per[run.replica].append(run.jobs_scanned)
            if any(len(counts) < CYCLES for counts in per.values()):
                return None
            return {name: sum(counts[:CYCLES]) for name, counts in per.items()}

        shares = await wait_until(measured, CYCLES * INTERVAL + 20)
        total = sum(shares.values())
        print(f"listings per replica over {CYCLES} cycles: {shares} (total {total})")
        assert total == CYCLES * JOBS, shares  # each job once per cycle: 300, not 900
        for count in shares.values():
            assert abs(count - total / 3) <= 0.3 * total / 3, shares
        async with sessions() as session:
            # Every listing lease given back or held by a live replica; each job listed lately.
            oldest = await session.scalar(select(func.min(Job.listed_at)))
            assert oldest is not None and oldest > start

        # A change seen by the three replicas' watchers (and scans): one notice per job.
        changed_at = datetime.now(UTC)
        for index in range(BROKEN):
            make_file(tmp_path / "backups" / f"d{index:03d}" / "b-2.dump", 10, changed_at)

        async def all_told() -> bool:
            critical = [body for body in receiver.delivered if body.get("status") == "critical"]
            return len(critical) >= BROKEN

        await wait_until(all_told, 2 * INTERVAL + 20)
        await asyncio.sleep(INTERVAL + 1)  # a second notice, if any, would come by now
        critical = Counter(
            body["job"] for body in receiver.delivered if body.get("status") == "critical"
        )
        assert critical == Counter({f"job-{index:03d}": 1 for index in range(BROKEN)})
        event_ids = receiver.event_ids()
        assert len(event_ids) == len(set(event_ids))
        async with sessions() as session:
            events = await session.scalar(select(func.count()).select_from(NotificationEvent))
        assert len(receiver.delivered) == events
        watched = sum(run.jobs_scanned for run in await runs_since(changed_at, "watch"))
        print(f"jobs judged by the watchers after the change of {BROKEN}: {watched}")
        assert watched <= 2 * BROKEN  # one replica each (a change may come in two events)

        # kill -9 one replica: its share is listed by the others once its lease has run out.
        victim = processes[2]
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        killed = datetime.now(UTC)
        killed_at = time.monotonic()

        async def taken_over() -> bool:
            async with sessions() as session:
                late = await session.scalar(
                    select(func.count()).where(Job.listed_at.is_(None) | (Job.listed_at < killed))
                )
            return late == 0

        await wait_until(taken_over, LEASE + 2 * INTERVAL + 10)
        takeover = time.monotonic() - killed_at
        print(f"every job listed again {takeover:.1f} s after the kill (lease {LEASE} s, "
              f"interval {INTERVAL} s)")  # fmt: skip
        assert takeover <= LEASE + INTERVAL + 2
        assert await live() == names[:2]

        for process in processes[:2]:
            process.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(process.wait(), 30) for process in processes[:2]]
        assert codes == [0, 0], [read(log) for log in logs]
        for log in logs[:2]:
            assert "Traceback" not in read(log), read(log)
        assert await live() == []  # a replica that stops leaves at once
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await receiver.stop()
        await engine.dispose()


async def _equal(read_value, expected) -> bool:
    return await read_value() == expected
