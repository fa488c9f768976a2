"""Notifications end to end: the outbox written with the status change, the dispatcher routing
and delivering to a real local HTTP receiver, retries, order, reminders, several dispatchers,
and a dispatcher killed mid-delivery (a real `serve` process, SIGKILLed)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import delete, func, insert, select, text, update

from service.core.scan_options import ScanOptions
from service.core.units import format_duration
from service.db.engine import create_engine, create_sessionmaker
from service.db.models import (
    Job,
    JobCheck,
    NotificationAttempt,
    NotificationDelivery,
    NotificationEvent,
)
from service.notify.config import ChannelSet, parse_channels
from service.notify.dispatcher import (
    BATCH,
    READ_FIRST,
    STOP_GRACE,
    Dispatcher,
    DispatchOptions,
    backoff,
)
from service.notify.events import event_row
from service.runtime.app import create_app
from service.runtime.tick import DeadlineTick
from service.scanner.scanner import BackupScanner
from service.settings import load_settings
from service.store.jobs import delete_jobs

from tests.mailserver import smtp_servers
from tests.support import Receiver, add_job, free_port, get_job, make_file, read

FAST = DispatchOptions(poll_seconds=0.05, lease_seconds=30, retry_seconds=0.05, max_attempts=4)


@pytest.fixture
async def receiver():
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


def webhooks(*names: str, url: str, defaults: tuple[str, ...] | None = None) -> ChannelSet:
    document = {
        "defaults": list(names[:1] if defaults is None else defaults),
        "channels": {name: {"type": "webhook", "url": f"{url}?channel={name}"} for name in names},
    }
    return parse_channels(document, "test")


async def events_of(sessionmaker, job_name: str) -> list[NotificationEvent]:
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(NotificationEvent)
            .where(NotificationEvent.job_name == job_name)
            .order_by(NotificationEvent.id)
        )
        return list(rows)


async def deliveries(sessionmaker) -> list[NotificationDelivery]:
    async with sessionmaker() as session:
        rows = await session.scalars(select(NotificationDelivery).order_by(NotificationDelivery.id))
        return list(rows)


async def attempts_of(sessionmaker, delivery_id: int) -> list[NotificationAttempt]:
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(NotificationAttempt)
            .where(NotificationAttempt.delivery_id == delivery_id)
            .order_by(NotificationAttempt.id)
        )
        return list(rows)


async def add_events(
    sessionmaker, job_name: str, count: int, channels: list[str] | None = None
) -> list[str]:
    """Write `count` problem events for `job_name` straight into the outbox; their ids."""
    async with sessionmaker() as session:
        job_id = await session.scalar(select(Job.id).where(Job.name == job_name))
        assert job_id is not None
        rows = [
            event_row(
                job_id=job_id,
                job_name=job_name,
                kind="problem",
                status="critical",
                previous_status="ok",
                reasons=[{"code": "stale", "severity": "critical", "message": f"event {n}"}],
                latest_artifact=None,
                channels=channels,
                now=datetime.now(UTC),
            )
            for n in range(count)
        ]
        await session.execute(insert(NotificationEvent), rows)
        await session.commit()
    return [row["event_id"] for row in rows]


async def dispatch_until_idle(dispatcher: Dispatcher, rounds: int = 50) -> None:
    for _ in range(rounds):
        if not await dispatcher.run_once():
            return
    pytest.fail("the dispatcher still had work after many rounds")


# --- the outbox, written by the scanner -----------------------------------------------------


async def test_status_changes_write_events_with_the_change(sessionmaker, clock, tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    await add_job(
        sessionmaker,
        clock() - timedelta(days=3),
        name="db",
        source={"type": "local", "path": str(backups), "pattern": "*.dump"},
        schedule={"every": "1d"},
        grace="1h",
        notify={"channels": ["ops"]},
    )

    async def scan() -> str:
        async with sessionmaker() as session:
            report = await BackupScanner(session, clock=clock).scan_all_jobs()
        return report.jobs[0].status

    assert await scan() == "critical"  # nothing ever arrived: a problem
    make_file(backups / "a.dump", 5000, clock())
    clock.advance(minutes=1)
    assert await scan() == "ok"  # a recovery
    clock.advance(minutes=1)
    assert await scan() == "ok"  # no change, no notice

    events = await events_of(sessionmaker, "db")
    assert [(e.kind, e.payload["previous_status"], e.payload["status"]) for e in events] == [
        ("problem", None, "critical"),  # nothing told before
        ("recovery", "critical", "ok"),
    ]
    assert all(e.channels == ["ops"] and e.routed_at is None for e in events)
    assert events[1].payload["latest_artifact"]["path"] == str(backups / "a.dump")
    assert events[0].payload["reasons"][0]["code"] == "missing"
    assert len({e.event_id for e in events}) == 2
    # One notice per recorded change, each at the change's moment.
    async with sessionmaker() as session:
        checks = (await session.scalars(select(JobCheck).order_by(JobCheck.id))).all()
    assert [c.checked_at for c in checks] == [e.created_at for e in events]


async def test_a_new_job_found_ok_or_paused_is_not_news(sessionmaker, clock, tmp_path):
    make_file(tmp_path / "a.dump", 5000, clock())
    await add_job(
        sessionmaker, clock(), name="fine", source={"type": "local", "path": str(tmp_path)}
    )
    await add_job(sessionmaker, clock(), name="resting", paused=True)
    async with sessionmaker() as session:
        report = await BackupScanner(session, clock=clock).scan_all_jobs()
    assert {job.name: job.status for job in report.jobs} == {"fine": "ok", "resting": "paused"}
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(NotificationEvent)) == 0


# --- the dispatcher -------------------------------------------------------------------------


async def test_events_are_delivered_once_to_each_routed_channel(sessionmaker, clock, receiver):
    await add_job(sessionmaker, clock(), name="db")
    await add_job(sessionmaker, clock(), name="web")
    channels = webhooks("ops", "team", "quiet", url=receiver.url, defaults=("ops", "team"))
    defaults = await add_events(sessionmaker, "db", 1)  # names no channel: the defaults
    chosen = await add_events(sessionmaker, "web", 1, channels=["quiet"])
    silent = await add_events(sessionmaker, "web", 1, channels=[])

    dispatcher = Dispatcher(sessionmaker, channels, FAST)
    await dispatch_until_idle(dispatcher)
    await dispatch_until_idle(dispatcher)  # nothing is sent twice

    got = sorted(
        (body["event_id"], hdr["X-Event-Id"], body["job"])
        for body, hdr in zip(receiver.delivered, receiver.headers, strict=True)
    )
    assert got == sorted([(defaults[0], defaults[0], "db")] * 2 + [(chosen[0], chosen[0], "web")])
    rows = await deliveries(sessionmaker)
    assert sorted((r.channel, r.state, r.attempts) for r in rows) == [
        ("ops", "delivered", 1),
        ("quiet", "delivered", 1),
        ("team", "delivered", 1),
    ]
    assert silent[0] not in receiver.event_ids()
    for row in rows:
        (attempt,) = await attempts_of(sessionmaker, row.id)
        assert attempt.ok is True and attempt.detail.startswith("HTTP 200")
        assert attempt.finished_at is not None
    async with sessionmaker() as session:
        unrouted = await session.scalar(
            select(func.count()).where(NotificationEvent.routed_at.is_(None))
        )
    assert unrouted == 0


async def test_failures_are_retried_with_backoff_and_recorded(sessionmaker, clock, receiver):
    await add_job(sessionmaker, clock(), name="db")
    (event_id,) = await add_events(sessionmaker, "db", 1)
    receiver.answers = [500, 503]
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST)

    async with asyncio.timeout(10):
        while not receiver.delivered:
            await dispatcher.run_once()
            await asyncio.sleep(0.01)
    (row,) = await deliveries(sessionmaker)
    assert (row.state, row.attempts, row.last_error) == ("delivered", 3, None)
    attempts = await attempts_of(sessionmaker, row.id)
    assert [a.ok for a in attempts] == [False, False, True]
    assert "HTTP 500" in attempts[0].detail and "HTTP 503" in attempts[1].detail
    # Each retry waited at least its backoff after the failure before it.
    for failed, retried, attempt_number in (
        (attempts[0], attempts[1], 1),
        (attempts[1], attempts[2], 2),
    ):
        waited = (retried.started_at - failed.finished_at).total_seconds()
        assert waited >= backoff(attempt_number, FAST.retry_seconds) - 0.005
    assert receiver.event_ids() == [event_id]


def test_backoff_doubles_up_to_an_hour():
    assert [backoff(n, 30) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert backoff(8, 30) == 3600 and backoff(500, 30) == 3600


async def test_a_permanent_refusal_or_too_many_failures_gives_up(sessionmaker, clock, receiver):
    await add_job(sessionmaker, clock(), name="db")
    await add_job(sessionmaker, clock(), name="web")
    await add_events(sessionmaker, "db", 1)
    receiver.answers = [400]
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST)
    await dispatch_until_idle(dispatcher)
    (refused,) = await deliveries(sessionmaker)
    assert (refused.state, refused.attempts) == ("failed", 1)
    assert "HTTP 400" in refused.last_error

    await add_events(sessionmaker, "web", 1)
    receiver.answers = [500] * FAST.max_attempts
    assert await dispatcher.route() == 1
    async with asyncio.timeout(10):
        while (await deliveries(sessionmaker))[-1].state == "pending":
            await dispatcher.run_once()
            await asyncio.sleep(0.02)
    exhausted = (await deliveries(sessionmaker))[-1]
    assert (exhausted.state, exhausted.attempts) == ("failed", FAST.max_attempts)
    assert len(await attempts_of(sessionmaker, exhausted.id)) == FAST.max_attempts
    assert receiver.delivered == []


async def test_a_channel_gone_from_the_file_fails_clearly(sessionmaker, clock, receiver):
    await add_job(sessionmaker, clock(), name="db")
    await add_events(sessionmaker, "db", 1, channels=["pager"])
    await dispatch_until_idle(Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST))
    (row,) = await deliveries(sessionmaker)
    assert (row.channel, row.state) == ("pager", "failed")
    assert "no channel 'pager' in CHANNELS_FILE" in row.last_error


async def test_one_jobs_notices_arrive_in_order(sessionmaker, clock, receiver):
    """The recovery waits behind the alert it ends, even while that alert is being retried;
    another job's notices are not held up."""
    await add_job(sessionmaker, clock(), name="db")
    await add_job(sessionmaker, clock(), name="web")
    alert, recovery = await add_events(sessionmaker, "db", 2)
    (other,) = await add_events(sessionmaker, "web", 1)
    # The retry 2 s later: the second round below comes well before it, even on a busy machine.
    slow = DispatchOptions(poll_seconds=0.05, retry_seconds=2.0, max_attempts=5)
    receiver.answers = [500]  # the first request (db's alert) fails
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), slow)
    await dispatcher.run_once()
    assert [body["event_id"] for body in receiver.arrived] == [alert, other]
    await dispatcher.run_once()  # the alert's retry is not due: the recovery must wait
    assert receiver.event_ids() == [other]
    async with asyncio.timeout(20):
        while len(receiver.delivered) < 3:
            await dispatcher.run_once()
            await asyncio.sleep(0.05)
    assert receiver.event_ids() == [other, alert, recovery]


async def test_a_ready_queue_behind_many_held_deliveries_is_found(sessionmaker, clock, receiver):
    """A claim reads a channel's oldest pending deliveries first: when they are all held (a job
    whose first notice is on the wire, and many more behind it), it reads on, and another
    job's notice goes; the held job's wait behind their head."""
    await add_job(sessionmaker, clock(), name="db")
    await add_job(sessionmaker, clock(), name="web")
    await add_events(sessionmaker, "db", READ_FIRST + 5)
    (other,) = await add_events(sessionmaker, "web", 1)
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST)
    await dispatcher.route()
    async with sessionmaker() as session:  # db's first notice held by another dispatcher
        head = await session.scalar(select(func.min(NotificationDelivery.id)))
        await session.execute(
            update(NotificationDelivery)
            .where(NotificationDelivery.id == head)
            .values(lease_until=clock() + timedelta(minutes=5), attempts=1)
        )
        await session.commit()
    assert await dispatcher.run_once() == 1
    assert receiver.event_ids() == [other]
    rows = await deliveries(sessionmaker)
    assert [row.state for row in rows].count("pending") == READ_FIRST + 5


async def test_a_burst_of_deliveries_has_postgresql_count_them(sessionmaker, clock, receiver):
    """Routing a batch of deliveries (a mount gone: many jobs critical at once) has PostgreSQL
    analyze the table, so the claims are planned on the pending deliveries there are now; at
    most once a minute. (SQLite: nothing to do.)"""
    await add_job(sessionmaker, clock(), name="db")
    await add_events(sessionmaker, "db", BATCH + 1)
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST)

    async def analyzed() -> int | None:
        async with sessionmaker() as session:
            if session.bind.dialect.name != "postgresql":
                return None
            query = text("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = :name")
            return await session.scalar(query, {"name": "notification_deliveries"})

    before = await analyzed()
    assert await dispatcher.route() == BATCH
    assert await dispatcher.route() == 1
    if before is not None:
        for _ in range(100):  # the statistics are reported within a moment
            if (count := await analyzed()) != before:
                break
            await asyncio.sleep(0.1)
        assert count == before + 1
    await dispatch_until_idle(dispatcher)
    assert len(receiver.delivered) == BATCH + 1


async def test_a_failure_in_a_job_s_chain_gives_the_rest_back_untried(
    sessionmaker, clock, receiver
):
    """One job's four notices are leased together and sent one after the other: the second
    fails, so the last two go back untried (no attempt counted or recorded) and wait behind
    it; once it is retried, the rest follow in order."""
    await add_job(sessionmaker, clock(), name="db")
    events = await add_events(sessionmaker, "db", 4)
    receiver.answers = [200, 500]
    slow = DispatchOptions(poll_seconds=0.05, retry_seconds=2.0, max_attempts=5)
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), slow)
    assert await dispatcher.run_once() == 1  # one chain
    assert [body["event_id"] for body in receiver.arrived] == events[:2]
    rows = await deliveries(sessionmaker)
    assert [(row.state, row.attempts, row.lease_until) for row in rows] == [
        ("delivered", 1, None),
        ("pending", 1, None),
        ("pending", 0, None),
        ("pending", 0, None),
    ]
    assert [len(await attempts_of(sessionmaker, row.id)) for row in rows] == [1, 1, 0, 0]
    assert await dispatcher.run_once() == 0  # the failed one's retry is not due: all wait
    async with asyncio.timeout(20):
        while len(receiver.delivered) < 4:
            await dispatcher.run_once()
            await asyncio.sleep(0.05)
    assert receiver.event_ids() == events
    rows = await deliveries(sessionmaker)
    assert [(row.state, row.attempts) for row in rows] == [("delivered", 1), ("delivered", 2)] + [
        ("delivered", 1)
    ] * 2


async def test_a_stop_mid_chain_gives_the_untried_rest_back(sessionmaker, clock, receiver):
    await add_job(sessionmaker, clock(), name="db")
    events = await add_events(sessionmaker, "db", 3)
    receiver.hold.add(events[1])
    channels = webhooks("ops", url=receiver.url)
    dispatcher = Dispatcher(sessionmaker, channels, FAST)
    await dispatcher.start()
    await receiver.wait_until(lambda: len(receiver.arrived) == 2)
    await dispatcher.stop(STOP_GRACE)  # the second is held: cut short
    rows = await deliveries(sessionmaker)
    assert [(row.state, row.attempts, row.lease_until) for row in rows] == [
        ("delivered", 1, None),
        ("pending", 1, None),
        ("pending", 0, None),
    ]
    assert await attempts_of(sessionmaker, rows[2].id) == []
    receiver.hold.clear()
    receiver.release()
    await dispatch_until_idle(Dispatcher(sessionmaker, channels, FAST))
    assert receiver.event_ids() == events  # the held one sent again, the rest after it
    assert [row.state for row in await deliveries(sessionmaker)] == ["delivered"] * 3


async def test_concurrent_dispatchers_deliver_each_event_once(sessionmaker, clock, receiver):
    names = [f"job{n}" for n in range(5)]
    for name in names:
        await add_job(sessionmaker, clock(), name=name)
    expected = [event for name in names for event in await add_events(sessionmaker, name, 4)]
    channels = webhooks("ops", url=receiver.url)
    dispatchers = [Dispatcher(sessionmaker, channels, FAST) for _ in range(4)]

    async def drain(dispatcher: Dispatcher) -> None:
        for _ in range(200):
            await dispatcher.run_once()
            if len(receiver.delivered) >= len(expected):
                return
            await asyncio.sleep(0.005)

    await asyncio.gather(*(drain(d) for d in dispatchers))
    for dispatcher in dispatchers:  # time for a late duplicate to show up
        await dispatcher.run_once()
    assert sorted(receiver.event_ids()) == sorted(expected)  # each once, none lost
    assert len(receiver.arrived) == len(expected)
    for name in names:  # and each job's in order
        mine = [body["event_id"] for body in receiver.delivered if body["job"] == name]
        assert mine == [e for e in expected if e in mine]
        assert len(mine) == 4


async def test_a_critical_job_is_reminded_until_it_recovers(
    sessionmaker, clock, receiver, tmp_path
):
    await add_job(
        sessionmaker,
        clock() - timedelta(days=3),
        name="db",
        source={"type": "local", "path": str(tmp_path), "pattern": "*.dump"},
        notify={"renotify_every": "1h"},
    )
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST, clock=clock)

    async def scan() -> None:
        async with sessionmaker() as session:
            await BackupScanner(session, clock=clock).scan_all_jobs()

    await scan()
    became_critical = clock()
    job = await get_job(sessionmaker, "db")
    assert job.status == "critical"
    assert job.renotify_at == became_critical + timedelta(hours=1)
    await dispatch_until_idle(dispatcher)
    clock.advance(minutes=59)
    await scan()
    await dispatch_until_idle(dispatcher)
    assert [body["kind"] for body in receiver.delivered] == ["problem"]
    # The judgement at a reminder's due time writes it (the deadline tick judges the job then).
    clock.advance(minutes=1)
    await scan()
    await dispatch_until_idle(dispatcher)
    clock.advance(minutes=30)
    await scan()
    await dispatch_until_idle(dispatcher)  # not yet an hour since the reminder
    clock.advance(minutes=30)
    await scan()
    await dispatch_until_idle(dispatcher)
    assert [body["kind"] for body in receiver.delivered] == ["problem", "reminder", "reminder"]
    reminder = receiver.delivered[1]
    assert reminder["status"] == "critical" and reminder["reasons"][0]["code"] == "missing"

    async with sessionmaker() as session:  # paused (by PATCH: not judged again yet)
        job = await session.get(Job, (await get_job(sessionmaker, "db")).id)
        job.paused = True
        await session.commit()
    clock.advance(hours=3)
    await scan()
    await dispatch_until_idle(dispatcher)
    assert len(receiver.delivered) == 3  # no reminder about a paused job
    async with sessionmaker() as session:
        job = await session.get(Job, job.id)
        job.paused = False
        await session.commit()

    make_file(tmp_path / "a.dump", 5000, clock())
    clock.advance(minutes=1)
    await scan()
    assert (await get_job(sessionmaker, "db")).renotify_at is None
    clock.advance(hours=5)
    await dispatch_until_idle(dispatcher)
    kinds = [body["kind"] for body in receiver.delivered]
    assert kinds == ["problem", "reminder", "reminder", "recovery"]


async def test_a_new_problem_at_the_same_severity_is_recorded_and_told_once(
    sessionmaker, clock, receiver, tmp_path
):
    """Critical for `late`, then a truncated dump (`too_small`, `size_drop`) at the same
    severity: one history row and one "changed" notice; the same judgement again: nothing."""
    await add_job(
        sessionmaker, clock() - timedelta(days=30), name="db",
        source={"type": "local", "path": str(tmp_path), "pattern": "*.dump"},
        schedule={"every": "1d"}, grace="1h", rules={"min_size": "1KiB", "max_size_drop": "50%"},
    )  # fmt: skip
    for day in range(5):  # good nightly dumps, the newest 26 h old: late
        make_file(tmp_path / f"db-{day}.dump", 100_000, clock() - timedelta(days=5 - day, hours=2))
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST, clock=clock)

    async def scan() -> list[str]:
        async with sessionmaker() as session:
            report = await BackupScanner(session, clock=clock).scan_all_jobs()
        await dispatch_until_idle(dispatcher)
        clock.advance(minutes=5)
        return [reason["code"] for reason in report.jobs[0].reasons]

    async def checks() -> list[tuple[str | None, str, list[str]]]:
        async with sessionmaker() as session:
            rows = await session.scalars(select(JobCheck).order_by(JobCheck.id))
            return [(c.previous_status, c.status, [r["code"] for r in c.reasons]) for c in rows]

    assert await scan() == ["late"]
    # A dump copied in with its old time (still late), truncated.
    make_file(tmp_path / "db-5.dump", 10, clock() - timedelta(days=1, hours=1, minutes=30))
    assert await scan() == ["late", "too_small", "size_drop"]
    assert await scan() == ["late", "too_small", "size_drop"]  # the same, an age grown

    assert await checks() == [
        ("pending", "critical", ["late"]),
        ("critical", "critical", ["late", "too_small", "size_drop"]),
    ]
    assert [body["kind"] for body in receiver.delivered] == ["problem", "changed"]
    changed = receiver.delivered[1]
    assert (changed["status"], changed["previous_status"]) == ("critical", "critical")
    # What changed is the critical problems (size_drop, a warning, rides along as a reason).
    assert changed["changes"] == {"new": ["too_small"], "gone": []}
    assert [reason["code"] for reason in changed["reasons"]] == ["late", "too_small", "size_drop"]
    assert [e.kind for e in await events_of(sessionmaker, "db")] == ["problem", "changed"]

    # One of the problems gone is a change too; the job stays critical.
    (tmp_path / "db-5.dump").unlink()
    assert await scan() == ["late"]
    assert [body["kind"] for body in receiver.delivered] == ["problem", "changed", "changed"]
    assert receiver.delivered[2]["changes"] == {"new": [], "gone": ["too_small"]}
    assert len(await checks()) == 3


async def test_a_failed_ping_adding_a_reason_is_told_by_the_same_rule(
    aiohttp_client, database_url, sessionmaker, clock, receiver, tmp_path
):
    """The ping path (a ping, then the deadline tick's judgement) goes through the same rule:
    a job critical for `late` whose script then reports a failure is "changed", once."""
    await add_job(
        sessionmaker, clock() - timedelta(days=3), name="db",
        source={"type": "local", "path": str(tmp_path), "pattern": "*.dump"},
        schedule={"every": "1h"}, grace=0,
    )  # fmt: skip
    make_file(tmp_path / "a.dump", 5000, clock() - timedelta(hours=2))
    client = await aiohttp_client(create_app(load_settings(database_url=database_url),
                                             scheduler=False))  # fmt: skip
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST)
    async with sessionmaker() as session:
        await BackupScanner(session).scan_all_jobs()
    tick = DeadlineTick(sessionmaker)
    assert await tick.run() == []  # the tick has seen every ping so far
    key = (await get_job(sessionmaker, "db")).ping_key
    assert (await client.get(f"/ping/{key}/fail")).status == 200
    assert await tick.run() == ["db"]
    assert await tick.run() == []  # judged once
    await dispatch_until_idle(dispatcher)

    assert [body["kind"] for body in receiver.delivered] == ["problem", "changed"]
    assert receiver.delivered[1]["changes"] == {"new": ["run_failed"], "gone": []}
    listed = await (await client.get("/api/v1/jobs/db/notifications")).json()
    assert [(item["kind"], item["changes"]) for item in listed["items"]] == [
        ("changed", {"new": ["run_failed"], "gone": []}),
        ("problem", None),
    ]
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(JobCheck)) == 2


async def test_a_reminder_tells_the_job_as_it_is_at_its_due_time(
    sessionmaker, clock, receiver, tmp_path
):
    """Reminders every 10 min of a late job, with no full scan in between: each one says how
    old the newest file is at its time, not the age the first alert said."""
    await add_job(
        sessionmaker, clock() - timedelta(days=3), name="db",
        source={"type": "local", "path": str(tmp_path), "pattern": "*.dump"},
        schedule={"every": "1h"}, grace=0, notify={"renotify_every": "10m"},
    )  # fmt: skip
    written = clock() - timedelta(hours=1, seconds=83)
    make_file(tmp_path / "a.dump", 5000, written)
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST, clock=clock)
    async with sessionmaker() as session:
        await BackupScanner(session, clock=clock).scan_all_jobs()
    await dispatch_until_idle(dispatcher)
    told_at = [clock()]
    tick = DeadlineTick(sessionmaker, ScanOptions(clock=clock))
    for _ in range(3):
        clock.advance(minutes=10)
        await tick.run()  # what serve runs every TICK_SECONDS
        await dispatch_until_idle(dispatcher)
        told_at.append(clock())

    assert [body["kind"] for body in receiver.delivered] == ["problem"] + ["reminder"] * 3
    for body, moment in zip(receiver.delivered, told_at, strict=True):
        (reason,) = body["reasons"]
        age = format_duration((moment - written).total_seconds())
        assert f"newest backup a.dump is {age} old" in reason["message"], body["kind"]
    # Reminders are not changes: the history has the one status change.
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(JobCheck)) == 1


async def test_a_reminder_skipped_by_its_tick_is_written_at_the_next_tick(
    sessionmaker, clock, tmp_path
):
    """The tick claims a job whose reminder is due, then its scan leaves the job out (here: a
    PATCH changed the declaration after the scan looked, as when another writer holds the
    row): the next tick writes the reminder, not the next full scan 15 minutes later."""
    await add_job(
        sessionmaker, clock() - timedelta(days=3), name="db",
        source={"type": "local", "path": str(tmp_path), "pattern": "*.dump"},
        schedule={"every": "1h"}, grace=0, notify={"renotify_every": "10m"},
    )  # fmt: skip
    async with sessionmaker() as session:
        await BackupScanner(session, clock=clock).scan_all_jobs()
    clock.advance(minutes=10)
    async with sessionmaker() as session:
        await session.execute(
            update(Job).where(Job.name == "db").values(updated_at=clock() + timedelta(seconds=1))
        )
        await session.commit()
    tick = DeadlineTick(sessionmaker, ScanOptions(clock=clock))
    assert await tick.run() == ["db"]
    assert [event.kind for event in await events_of(sessionmaker, "db")] == ["problem"]

    clock.advance(seconds=5)  # the next tick
    assert await tick.run() == ["db"]
    assert [event.kind for event in await events_of(sessionmaker, "db")] == [
        "problem",
        "reminder",
    ]
    assert await tick.run() == []  # told: not again


async def test_a_paused_job_with_a_reminder_due_is_left_alone_by_the_tick(
    sessionmaker, clock, tmp_path
):
    await add_job(
        sessionmaker, clock() - timedelta(days=3), name="db",
        source={"type": "local", "path": str(tmp_path), "pattern": "*.dump"},
        schedule={"every": "1h"}, grace=0, notify={"renotify_every": "10m"},
    )  # fmt: skip
    async with sessionmaker() as session:
        await BackupScanner(session, clock=clock).scan_all_jobs()
        await session.execute(update(Job).where(Job.name == "db").values(paused=True))
        await session.commit()
    clock.advance(minutes=10)
    assert await DeadlineTick(sessionmaker, ScanOptions(clock=clock)).run() == []
    assert [event.kind for event in await events_of(sessionmaker, "db")] == ["problem"]


async def test_jobs_due_only_for_a_reminder_are_not_starved_by_other_due_jobs(
    sessionmaker, clock, tmp_path
):
    """A tick takes a batch of due jobs, the longest due first, whether for a deadline or
    for a reminder: a reminder due 10 minutes ago goes before deadlines passed a second ago."""
    await add_job(
        sessionmaker, clock() - timedelta(days=3), name="db",
        source={"type": "local", "path": str(tmp_path / "db"), "pattern": "*.dump"},
        schedule={"every": "1d"}, grace=0, notify={"renotify_every": "10m"},
    )  # fmt: skip
    (tmp_path / "db").mkdir()
    async with sessionmaker() as session:
        await BackupScanner(session, clock=clock).scan_all_jobs()
    assert (await get_job(sessionmaker, "db")).status == "critical"
    for number in range(3):
        await add_job(
            sessionmaker, clock() - timedelta(days=3), name=f"other{number}",
            source={"type": "local", "path": str(tmp_path / "other"), "pattern": "*.dump"},
        )  # fmt: skip
    clock.advance(minutes=20)
    async with sessionmaker() as session:  # the others' deadlines passed a second ago
        await session.execute(
            update(Job)
            .where(Job.name.like("other%"))
            .values(next_check_at=clock() - timedelta(seconds=1), checked_at=None)
        )
        # db's next deadline is tomorrow (as for a file judged too small): due for its reminder.
        await session.execute(
            update(Job).where(Job.name == "db").values(next_check_at=clock() + timedelta(days=1))
        )
        await session.commit()
    tick = DeadlineTick(sessionmaker, ScanOptions(clock=clock), batch=2)
    assert await tick.run() == ["db", "other0"]
    assert [event.kind for event in await events_of(sessionmaker, "db")] == [
        "problem",
        "reminder",
    ]


async def test_a_stop_mid_delivery_gives_the_delivery_back(sessionmaker, clock, receiver):
    await add_job(sessionmaker, clock(), name="db")
    (event_id,) = await add_events(sessionmaker, "db", 1)
    receiver.hold.add(event_id)
    channels = webhooks("ops", url=receiver.url)
    dispatcher = Dispatcher(sessionmaker, channels, FAST)
    await dispatcher.start()
    await receiver.wait_until(lambda: bool(receiver.arrived))
    await dispatcher.stop(STOP_GRACE)  # the receiver never answers: cut short
    (row,) = await deliveries(sessionmaker)
    assert (row.state, row.lease_until, row.attempts) == ("pending", None, 1)
    (attempt,) = await attempts_of(sessionmaker, row.id)
    assert (attempt.ok, attempt.detail) == (False, "interrupted: the service stopped")

    receiver.hold.clear()
    receiver.release()
    await dispatch_until_idle(Dispatcher(sessionmaker, channels, FAST))  # the next start
    assert receiver.event_ids() == [event_id]
    assert (await deliveries(sessionmaker))[0].state == "delivered"


async def test_a_running_dispatcher_keeps_one_client_session(sessionmaker, clock, receiver):
    """One HTTP client session for the dispatcher's lifetime, as aiohttp asks: a job's notices,
    sent one after the other, go over one kept-alive connection instead of one each; the session
    is closed when the dispatcher stops."""
    await add_job(sessionmaker, clock(), name="db")
    await add_events(sessionmaker, "db", 3)
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST)
    await dispatcher.start()
    await receiver.wait_until(lambda: len(receiver.delivered) == 3)
    http = dispatcher._http
    await dispatcher.stop(STOP_GRACE)
    assert len(receiver.peers) == 3
    assert len(set(receiver.peers)) == 1, receiver.peers
    assert http is not None and http.closed and dispatcher._http is None


async def test_a_pause_neither_repeats_an_alert_nor_swallows_a_recovery(
    sessionmaker, clock, tmp_path
):
    await add_job(
        sessionmaker, clock() - timedelta(days=3), name="db",
        source={"type": "local", "path": str(tmp_path), "pattern": "*.dump"},
    )  # fmt: skip

    async def scan(**changes: Any) -> str:
        async with sessionmaker() as session:
            if changes:
                job = await session.get(Job, (await get_job(sessionmaker, "db")).id)
                for name, value in changes.items():
                    setattr(job, name, value)
                await session.commit()
            report = await BackupScanner(session, clock=clock).scan_all_jobs()
        clock.advance(minutes=1)
        return report.jobs[0].status

    assert await scan() == "critical"
    assert await scan(paused=True) == "paused"
    assert await scan(paused=False) == "critical"  # told already: no second alert
    assert await scan(paused=True) == "paused"
    make_file(tmp_path / "a.dump", 5000, clock())
    assert await scan(paused=False) == "ok"  # fixed while paused: still a recovery
    events = await events_of(sessionmaker, "db")
    assert [(e.kind, e.payload["previous_status"], e.payload["status"]) for e in events] == [
        ("problem", None, "critical"),
        ("recovery", "critical", "ok"),
    ]


async def test_a_new_problem_that_appears_across_a_pause_is_told_once(
    sessionmaker, clock, receiver, tmp_path
):
    """Critical for `late`, told; paused; resumed critical for `late` and `too_small` (a
    truncated dump landed meanwhile): one "changed" notice, which was never sent before
    (the new problem was stored as if told); then nothing more, also across pending."""
    await add_job(
        sessionmaker, clock() - timedelta(days=30), name="db",
        source={"type": "local", "path": str(tmp_path), "pattern": "*.dump"},
        schedule={"every": "1d"}, grace="1h", rules={"min_size": "1KiB"},
    )  # fmt: skip
    make_file(tmp_path / "db-0.dump", 100_000, clock() - timedelta(days=1, hours=2))
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST, clock=clock)

    async def scan(**changes: Any) -> tuple[str, list[str]]:
        async with sessionmaker() as session:
            if changes:
                job = await session.get(Job, (await get_job(sessionmaker, "db")).id)
                for name, value in changes.items():
                    setattr(job, name, value)
                await session.commit()
            report = await BackupScanner(session, clock=clock).scan_all_jobs()
        await dispatch_until_idle(dispatcher)
        clock.advance(minutes=5)
        return report.jobs[0].status, [reason["code"] for reason in report.jobs[0].reasons]

    assert await scan() == ("critical", ["late"])
    assert await scan(paused=True) == ("paused", [])
    make_file(tmp_path / "db-1.dump", 10, clock() - timedelta(days=1, hours=1, minutes=30))
    assert await scan(paused=False) == ("critical", ["late", "too_small"])
    assert await scan() == ("critical", ["late", "too_small"])  # told: not again
    assert await scan(paused=True) == ("paused", [])
    assert await scan(paused=False) == ("critical", ["late", "too_small"])  # the same: nothing

    assert [body["kind"] for body in receiver.delivered] == ["problem", "changed"]
    changed = receiver.delivered[1]
    assert (changed["status"], changed["previous_status"]) == ("critical", "critical")
    assert changed["changes"] == {"new": ["too_small"], "gone": []}
    assert [e.kind for e in await events_of(sessionmaker, "db")] == ["problem", "changed"]
    job = await get_job(sessionmaker, "db")
    assert (job.notified_status, [r["code"] for r in job.notified_reasons or []]) == (
        "critical", ["late", "too_small"],
    )  # fmt: skip


def make_unreadable_tree(parent: Path) -> Path:
    """A subdirectory nested deeper than PATH_MAX: its listing fails (ENAMETOOLONG) even for
    root, as a directory removed mid-walk or unreadable would. Made through directory fds."""
    top = parent / "rotated"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(20):  # 20 x 250 characters > 4096
            os.mkdir("d" * 250, dir_fd=fd)
            inner = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    return top


async def test_a_note_riding_along_a_critical_job_makes_no_notice(
    sessionmaker, clock, receiver, tmp_path
):
    """Critical for `late`, told; then a subdirectory cannot be listed for one scan
    (`source_error`, unknown, beside `late`), then can again: the job's critical problems did
    not change, so no "changed" notice either way, and no history row (it was a New/Gone
    pair before)."""
    await add_job(
        sessionmaker, clock() - timedelta(days=30), name="db",
        source={"type": "local", "path": str(tmp_path), "pattern": "*.dump", "recursive": True},
        schedule={"every": "1d"}, grace="1h",
    )  # fmt: skip
    make_file(tmp_path / "db-0.dump", 100_000, clock() - timedelta(days=1, hours=2))
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST, clock=clock)

    async def scan() -> tuple[str, list[str]]:
        async with sessionmaker() as session:
            report = await BackupScanner(session, clock=clock).scan_all_jobs()
        await dispatch_until_idle(dispatcher)
        clock.advance(minutes=5)
        return report.jobs[0].status, sorted(r["code"] for r in report.jobs[0].reasons)

    assert await scan() == ("critical", ["late"])
    tree = make_unreadable_tree(tmp_path)
    assert await scan() == ("critical", ["late", "source_error"])
    shutil.rmtree(tree)
    assert await scan() == ("critical", ["late"])

    assert [body["kind"] for body in receiver.delivered] == ["problem"]
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(JobCheck)) == 1


async def test_an_unreadable_notice_is_given_up_and_the_others_go(sessionmaker, clock, receiver):
    await add_job(sessionmaker, clock(), name="db")
    await add_job(sessionmaker, clock(), name="web")
    await add_events(sessionmaker, "db", 1)
    (good,) = await add_events(sessionmaker, "web", 1)
    async with sessionmaker() as session:  # a payload broken by hand
        await session.execute(
            update(NotificationEvent)
            .where(NotificationEvent.job_name == "db")
            .values(payload={"event_id": "x", "occurred_at": "yesterday"})
        )
        await session.commit()
    await dispatch_until_idle(Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST))
    assert receiver.event_ids() == [good]
    broken, fine = await deliveries(sessionmaker)
    assert (broken.state, fine.state) == ("failed", "delivered")
    assert broken.last_error.startswith("unreadable notice: ")
    (attempt,) = await attempts_of(sessionmaker, broken.id)
    assert attempt.ok is False and attempt.detail == broken.last_error


async def test_a_late_outcome_does_not_undo_the_takeover(sessionmaker, clock, receiver):
    """A dispatcher whose lease ran out reports after another one took the delivery over and
    sent it: the delivery stays delivered, and is not handed out again."""
    await add_job(sessionmaker, clock(), name="db")
    (event_id,) = await add_events(sessionmaker, "db", 1)
    channels = webhooks("ops", url=receiver.url)
    slow, fast = (Dispatcher(sessionmaker, channels, FAST, clock=clock) for _ in range(2))
    await slow.route()
    (stale,) = await slow.claim()
    clock.advance(seconds=FAST.lease_seconds + 1)  # its lease runs out mid-delivery
    (taken,) = await fast.claim()
    assert (taken.delivery_id, taken.attempts) == (stale.delivery_id, 2)
    await fast._deliver(taken)
    await slow._record(stale, ok=False, detail="HTTP 500 (late)", permanent=False)
    (row,) = await deliveries(sessionmaker)
    assert (row.state, row.attempts, row.lease_until) == ("delivered", 2, None)
    assert await fast.claim() == [] and await slow.claim() == []
    assert receiver.event_ids() == [event_id]


async def test_a_notice_waits_for_an_earlier_one_still_being_routed(sessionmaker, clock, receiver):
    """Another replica routes the alert while this one already routed the recovery: the
    recovery is not sent before the alert."""
    await add_job(sessionmaker, clock(), name="db")
    alert, recovery = await add_events(sessionmaker, "db", 2)
    async with sessionmaker() as session:  # the recovery routed first, the alert not yet
        event = await session.scalar(
            select(NotificationEvent).where(NotificationEvent.event_id == recovery)
        )
        event.routed_at = clock()
        session.add(
            NotificationDelivery(
                event_id=event.id,
                channel="ops",
                job_name="db",
                state="pending",
                attempts=0,
                next_attempt_at=clock(),
            )
        )
        await session.commit()  # fmt: skip
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST)
    assert await dispatcher.claim() == []
    await dispatch_until_idle(dispatcher)
    assert receiver.event_ids() == [alert, recovery]


# --- a real process, killed mid-delivery ------------------------------------------------------


async def test_a_killed_dispatcher_restarted_delivers_exactly_the_rest(
    database_url, base_env, tmp_path, receiver
):
    """`serve` is SIGKILLed while the receiver holds the third of five notices: after a restart
    the receiver has each of the five exactly once, in order."""
    engine = create_engine(database_url)
    sessions = create_sessionmaker(engine)
    try:
        await add_job(sessions, datetime.now(UTC), name="db", paused=True)
        expected = await add_events(sessions, "db", 5)
        receiver.hold.add(expected[2])
        channels_file = tmp_path / "channels.yaml"
        channels_file.write_text(
            "defaults: [ops]\nchannels:\n"
            f"  ops: {{type: webhook, url: '{receiver.url}', timeout: 3}}\n"
        )
        env = dict(
            base_env,
            DATABASE_URL=database_url,
            CHANNELS_FILE=str(channels_file),
            NOTIFY_POLL_SECONDS="0.1",
            NOTIFY_RETRY_SECONDS="0.1",
            NOTIFY_LEASE_SECONDS="2",
        )

        async def serve(log: Path) -> asyncio.subprocess.Process:
            with log.open("wb") as stderr:
                return await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "service",
                    "serve",
                    "--port",
                    str(free_port()),
                    cwd=tmp_path,
                    env=env,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=stderr,
                )

        first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
        first = await serve(first_log)
        try:
            await receiver.wait_until(lambda: len(receiver.arrived) == 3, timeout=60)
            assert receiver.event_ids() == expected[:2]
            first.send_signal(signal.SIGKILL)
            await first.wait()
        finally:
            if first.returncode is None:
                first.kill()
                await first.wait()
        await asyncio.sleep(0.2)  # the receiver sees the connection drop
        assert receiver.event_ids() == expected[:2], "a held notice was counted as delivered"
        async with sessions() as session:
            states = (
                await session.execute(
                    select(NotificationDelivery.state, NotificationDelivery.lease_until).order_by(
                        NotificationDelivery.id
                    )
                )
            ).all()
        assert [s for s, _ in states] == ["delivered"] * 2 + ["pending"] * 3
        assert states[2][1] is not None  # the dead process still holds the third: a lease

        receiver.hold.clear()
        second = await serve(second_log)
        try:
            await receiver.wait_until(lambda: len(receiver.delivered) == 5, timeout=60)
            await asyncio.sleep(0.5)  # time enough for a duplicate to show up
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.wait(), 30)
        assert receiver.event_ids() == expected, read(second_log)
        async with sessions() as session:
            rows = (
                await session.execute(
                    select(
                        NotificationDelivery.id,
                        NotificationDelivery.state,
                        NotificationDelivery.attempts,
                    ).order_by(NotificationDelivery.id)
                )
            ).all()
            third_attempts = await attempts_of(sessions, rows[2].id)
        assert [(state, attempts) for _, state, attempts in rows] == [
            ("delivered", 1),
            ("delivered", 1),
            ("delivered", 2),
            ("delivered", 1),
            ("delivered", 1),
        ]
        assert third_attempts[0].detail.startswith("abandoned")
        assert third_attempts[1].ok is True
        assert "Traceback" not in read(second_log)
    finally:
        await engine.dispose()


async def test_serve_refuses_a_bad_channels_file(sqlite_url, base_env, tmp_path):
    channels_file = tmp_path / "channels.yaml"
    channels_file.write_text("channels:\n  ops:\n    type: pigeon\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "serve",
        "--port",
        str(free_port()),
        cwd=tmp_path,
        env=dict(base_env, DATABASE_URL=sqlite_url, CHANNELS_FILE=str(channels_file)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    text = err.decode()
    assert str(channels_file) in text and "ops" in text and "Traceback" not in text


async def test_notices_routed_a_day_late_are_history_not_news(sessionmaker, clock, receiver):
    await add_job(sessionmaker, clock(), name="db")
    old, fresh = await add_events(sessionmaker, "db", 2)
    async with sessionmaker() as session:
        await session.execute(
            update(NotificationEvent)
            .where(NotificationEvent.event_id == old)
            .values(created_at=clock() - timedelta(days=1, seconds=1))
        )
        await session.commit()
    await dispatch_until_idle(Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST))
    assert receiver.event_ids() == [fresh]
    (row,) = await deliveries(sessionmaker)  # the old one is routed to nothing, and kept
    assert row.state == "delivered"
    assert [e.routed_at is not None for e in await events_of(sessionmaker, "db")] == [True, True]


async def test_a_scan_alert_reaches_a_real_smtp_server(sessionmaker, clock, tmp_path):
    """From the file that stopped coming to the mailbox: scan, outbox, dispatcher, SMTP."""
    with smtp_servers() as smtp:
        server = smtp()
        port = server.port
        channels = parse_channels(
            {"channels": {"ops-mail": {
                "type": "email", "host": "127.0.0.1", "port": port, "security": "none",
                "from": "backup-monitor@example.com", "to": ["ops@example.com"]}}}, "test",
        )  # fmt: skip
        await add_job(
            sessionmaker, clock() - timedelta(days=3), name="db",
            source={"type": "local", "path": str(tmp_path), "pattern": "*.dump"},
            notify={"channels": ["ops-mail"]},
        )  # fmt: skip
        async with sessionmaker() as session:
            await BackupScanner(session, clock=clock).scan_all_jobs()
        options = dataclasses.replace(FAST, public_url="https://backups.example.com")
        await dispatch_until_idle(Dispatcher(sessionmaker, channels, options))
        (_one,) = server.mailbox.envelopes
        message = server.mailbox.message()
        (event,) = await events_of(sessionmaker, "db")
        assert message["Subject"] == "[backup-monitor] CRITICAL db"
        assert message["To"] == "ops@example.com"
        assert event.event_id in message["Message-ID"]
        body = message.get_content()
        assert "https://backups.example.com/jobs/db" in body
        assert event.payload["reasons"][0]["message"] in body
        (row,) = await deliveries(sessionmaker)
        assert (row.state, row.attempts) == ("delivered", 1)


# --- a hung channel holds up nobody else ------------------------------------------------------


@pytest.fixture
async def dead_receiver():
    """A real HTTP server that never answers the events put in its `hold` (until the test ends)."""
    dead = Receiver()
    await dead.start()
    yield dead
    dead.hold.clear()
    await dead.stop()


# The hung channels below time out after 60 s: waiting for them shows as a minute; not waiting
# takes a few seconds, more on a loaded machine.
HUNG_BOUND = 20


async def test_a_hanging_channel_does_not_delay_another_channels_notices(
    sessionmaker, clock, receiver, dead_receiver
):
    """Channel `dead` never answers (its timeout is a minute) next to a healthy `ops`: every
    notice reaches `ops` well before `dead`'s timeout (a few seconds on an idle machine; the
    bound leaves room for a loaded one), the ones written while `dead` hangs too, and `dead`
    holds no more connections than its own slots."""
    names = [f"job{n}" for n in range(12)]
    for name in names:
        await add_job(sessionmaker, clock(), name=name)
    channels = parse_channels(
        {"defaults": ["dead", "ops"], "channels": {
            "dead": {"type": "webhook", "url": dead_receiver.url, "timeout": 60},
            "ops": {"type": "webhook", "url": receiver.url}}}, "test",
    )  # fmt: skip
    options = dataclasses.replace(FAST, lease_seconds=120, concurrency=4)
    dispatcher = Dispatcher(sessionmaker, channels, options)
    first = [event for name in names for event in await add_events(sessionmaker, name, 2)]
    dead_receiver.hold.update(first)
    started = time.monotonic()
    await dispatcher.start()
    try:
        await receiver.wait_until(lambda: len(receiver.delivered) == len(first), timeout=30)
        took = time.monotonic() - started
        assert took < HUNG_BOUND, f"the healthy channel's notices took {took:.1f} s"
        # Written while `dead` still hangs: they go out as soon as they are routed.
        later = await add_events(sessionmaker, "job0", 1, channels=["ops"])
        started = time.monotonic()
        await receiver.wait_until(lambda: len(receiver.delivered) == len(first) + 1, timeout=30)
        assert time.monotonic() - started < HUNG_BOUND
        await dead_receiver.wait_until(lambda: len(dead_receiver.arrived) >= options.concurrency)
        assert len(dead_receiver.arrived) == options.concurrency  # its own slots, no more
    finally:
        await dispatcher.stop(STOP_GRACE)
    # Final now: the dispatcher is stopped and nothing more can arrive.
    assert len(dead_receiver.arrived) == options.concurrency
    assert sorted(receiver.event_ids()) == sorted(first + later)  # each once
    for name in names:  # each job's in order
        mine = [body["event_id"] for body in receiver.delivered if body["job"] == name]
        assert mine == [event for event in first + later if event in mine]
    # The hung sends were cut short at the stop and given back, not counted as failed.
    states = {(row.channel, row.state, row.lease_until) for row in await deliveries(sessionmaker)}
    assert states == {("ops", "delivered", None), ("dead", "pending", None)}


async def test_a_hanging_delivery_does_not_delay_other_jobs_on_the_same_channel(
    sessionmaker, clock, receiver
):
    """One job's notice hangs at the receiver (the channel's timeout is a minute): the other
    jobs' notices to that channel still arrive well before that timeout."""
    names = [f"job{n}" for n in range(12)]
    for name in names:
        await add_job(sessionmaker, clock(), name=name)
    channels = parse_channels(
        {"defaults": ["ops"],
         "channels": {"ops": {"type": "webhook", "url": receiver.url, "timeout": 60}}}, "test",
    )  # fmt: skip
    dispatcher = Dispatcher(sessionmaker, channels, dataclasses.replace(FAST, lease_seconds=120))
    (stuck,) = await add_events(sessionmaker, names[0], 1)
    receiver.hold.add(stuck)
    others = [event for name in names[1:] for event in await add_events(sessionmaker, name, 2)]
    started = time.monotonic()
    await dispatcher.start()
    try:
        await receiver.wait_until(lambda: len(receiver.delivered) == len(others), timeout=30)
        took = time.monotonic() - started
        assert took < HUNG_BOUND, f"the other jobs' notices took {took:.1f} s"
    finally:
        await dispatcher.stop(STOP_GRACE)
    assert sorted(receiver.event_ids()) == sorted(others)


# --- a receiver slower than the timeout -------------------------------------------------------


async def test_a_receiver_slower_than_its_timeout_gets_each_retry_with_one_idempotency_key(
    sessionmaker, clock
):
    """The receiver takes every copy but answers after the channel's timeout: each try is a
    timeout, retried, until given up; every copy carries the same event id, in the body, in
    X-Event-Id and in Idempotency-Key, so the receiver can keep only the first."""
    copies: list[tuple[dict[str, Any], dict[str, str]]] = []
    teardown = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        # Recorded as soon as head and body are in: the copy has reached the receiver.
        copies.append((await request.json(), dict(request.headers)))
        await teardown.wait()  # a slow receiver: answers after every timeout
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        channels = parse_channels(
            {"defaults": ["ops"], "channels": {"ops": {
                # 1 s, not less: a loaded machine must still send the whole copy in time.
                "type": "webhook", "url": f"http://127.0.0.1:{port}/hook", "timeout": 1}}},
            "test",
        )  # fmt: skip
        await add_job(sessionmaker, clock(), name="db")
        (event_id,) = await add_events(sessionmaker, "db", 1)
        dispatcher = Dispatcher(sessionmaker, channels, FAST)

        async def state() -> str | None:
            rows = await deliveries(sessionmaker)
            return rows[0].state if rows else None

        async with asyncio.timeout(30):
            while await state() in (None, "pending"):
                await dispatcher.run_once()
                await asyncio.sleep(0.02)
    finally:
        teardown.set()
        await runner.cleanup()
    (row,) = await deliveries(sessionmaker)
    assert (row.state, row.attempts) == ("failed", FAST.max_attempts)
    assert "timed out after 1 s" in row.last_error
    assert len(copies) == FAST.max_attempts  # the receiver got every one of them
    for body, headers in copies:
        assert body["event_id"] == headers["X-Event-Id"] == event_id
        assert headers["Idempotency-Key"] == event_id


async def test_a_file_name_cannot_forge_lines_in_an_email(sessionmaker, clock, tmp_path):
    """A file named with line breaks and a bidi override reaches the mailbox escaped: no fake
    "Dashboard:" line, nothing that reorders the text."""
    with smtp_servers() as smtp:
        server = smtp()
        port = server.port
        channels = parse_channels(
            {"channels": {"ops-mail": {
                "type": "email", "host": "127.0.0.1", "port": port, "security": "none",
                "from": "backup-monitor@example.com", "to": ["ops@example.com"]}}}, "test",
        )  # fmt: skip
        await add_job(
            sessionmaker, clock() - timedelta(days=3), name="db",
            source={"type": "local", "path": str(tmp_path), "pattern": "*.dump"},
            rules={"min_size": "1KiB"}, notify={"channels": ["ops-mail"]},
        )  # fmt: skip
        # A name cannot hold a slash: "https://" could not be forged, a host name can.
        # Written 5 minutes ago: settled, so judged for its size.
        name = "x\nDashboard: evil.example\n\u202egpj.dump"
        make_file(tmp_path / name, 10, clock() - timedelta(minutes=5))
        async with sessionmaker() as session:
            await BackupScanner(session, clock=clock).scan_all_jobs()
        options = dataclasses.replace(FAST, public_url="https://backups.example.com")
        await dispatch_until_idle(Dispatcher(sessionmaker, channels, options))
        (_one,) = server.mailbox.envelopes
        message = server.mailbox.message()
        body = message.get_content()
        dashboard = [line for line in body.splitlines() if "Dashboard:" in line]
        assert dashboard[-1] == "Dashboard: https://backups.example.com/jobs/db"
        assert all(not line.startswith("Dashboard: evil") for line in dashboard)
        assert "x\\nDashboard: evil.example\\n\\u202egpj.dump" in body
        assert "\u202e" not in body


async def test_a_job_gone_without_cancelling_is_never_sent_to(sessionmaker, clock, receiver):
    """The claim itself checks that the job still exists: a job deleted by a path that did not
    cancel its notices (between a route and its claim, or by an older version) is never sent
    to; its deliveries, routed before or after the deletion, are recorded as cancelled."""
    await add_job(sessionmaker, clock(), name="db")
    await add_events(sessionmaker, "db", 1)
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST)
    assert await dispatcher.route() == 1  # routed, not claimed yet
    await add_events(sessionmaker, "db", 1)  # not routed yet
    async with sessionmaker() as session:
        await session.execute(delete(Job).where(Job.name == "db"))
        await session.commit()

    await dispatch_until_idle(dispatcher)
    assert receiver.arrived == []
    rows = await deliveries(sessionmaker)
    assert [(row.state, row.attempts, row.last_error) for row in rows] == [
        ("cancelled", 0, "the job was deleted"),
        ("cancelled", 0, "the job was deleted"),
    ]


async def waiting_on_a_lock(sessions) -> int:
    """How many sessions of this database wait on a lock now."""
    async with sessions() as probe:
        return await probe.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            )
        )


async def test_a_job_deleted_while_its_delivery_is_being_claimed_is_not_sent(
    pg_url, clock, receiver
):
    """The race on PostgreSQL (SQLite takes its write lock first: a claim and a deletion never
    overlap there): a claim read the delivery as due, and the deletion commits before the claim
    takes it. The claim's conditional UPDATE waits on the deletion's row lock, sees the
    delivery cancelled and skips it: nothing is sent."""
    engine = create_engine(pg_url)
    sessions = create_sessionmaker(engine)
    try:
        job_id = await add_job(sessions, clock(), name="db")
        await add_events(sessions, "db", 1)
        dispatcher = Dispatcher(sessions, webhooks("ops", url=receiver.url), FAST)
        assert await dispatcher.route() == 1
        async with sessions() as deleting:
            await delete_jobs(deleting, {job_id: "db"})  # not committed yet: rows locked
            claim = asyncio.create_task(dispatcher.claim())
            async with asyncio.timeout(10):  # until the claim waits on the deletion's lock
                # Sessions of this test's own database only: another test's waiting session,
                # elsewhere on the server, must not end the wait early. (A new transaction each
                # time: pg_stat_activity is a snapshot taken once per transaction.)
                while not await waiting_on_a_lock(sessions):
                    assert not claim.done(), claim.result()
                    await asyncio.sleep(0.01)
            await deleting.commit()
        assert await asyncio.wait_for(claim, 10) == []
        await dispatch_until_idle(dispatcher)
        assert receiver.arrived == []
        (row,) = await deliveries(sessions)
        assert (row.state, row.attempts, row.last_error) == ("cancelled", 0, "the job was deleted")
    finally:
        await engine.dispose()


@pytest.mark.parametrize("answer", [200, 500])
async def test_a_delivery_on_the_wire_when_its_job_is_deleted_is_recorded_as_it_ended(
    sessionmaker, clock, receiver, answer
):
    """Deleting a job cancels a delivery already sent and waiting for its answer: if the
    receiver then takes it, the truth is "delivered" (with its time); if it fails, it stays
    cancelled and is never retried."""
    job_id = await add_job(sessionmaker, clock(), name="db")
    (event_id,) = await add_events(sessionmaker, "db", 1)
    receiver.hold.add(event_id)
    receiver.answers = [answer]
    dispatcher = Dispatcher(sessionmaker, webhooks("ops", url=receiver.url), FAST, clock=clock)
    sending = asyncio.create_task(dispatcher.run_once())
    await receiver.wait_until(lambda: bool(receiver.arrived))  # on the wire, unanswered
    async with sessionmaker() as session:
        await delete_jobs(session, {job_id: "db"})
        await session.commit()
    (row,) = await deliveries(sessionmaker)
    assert row.state == "cancelled"

    receiver.hold.clear()
    receiver.release()
    await asyncio.wait_for(sending, 10)
    (row,) = await deliveries(sessionmaker)
    if answer == 200:
        assert (row.state, row.delivered_at, row.last_error) == ("delivered", clock(), None)
    else:
        assert (row.state, row.delivered_at) == ("cancelled", None)
        assert row.last_error == "the job was deleted"
        clock.advance(hours=1)  # long past any retry
        await dispatch_until_idle(dispatcher)
        assert len(receiver.arrived) == 1
        assert (await deliveries(sessionmaker))[0].state == "cancelled"
    (attempt,) = await attempts_of(sessionmaker, row.id)
    assert attempt.ok is (answer == 200)
