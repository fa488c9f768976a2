"""The restore-points digest end to end: a job's `report: {channel, every}`, the deadline tick
writing the digest to the outbox once (however many ticks run), the dispatcher delivering it to
a real webhook receiver and to a real SMTP server, then again one period later."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from service.core.scan_options import ScanOptions
from service.db.models import Job, NotificationEvent
from service.notify.config import parse_channels
from service.notify.dispatcher import Dispatcher, DispatchOptions
from service.runtime.tick import DeadlineTick
from service.scanner.scanner import BackupScanner
from service.store.digests import next_due, send_due_digests

from tests.mailserver import smtp_servers
from tests.support import Receiver, add_job, make_file

FAST = DispatchOptions(poll_seconds=0.05, lease_seconds=30, retry_seconds=0.05, max_attempts=4)
WEEK = timedelta(days=7)


@pytest.fixture
async def receiver():
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


async def digests(sessionmaker) -> list[NotificationEvent]:
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(NotificationEvent)
            .where(NotificationEvent.kind == "digest")
            .order_by(NotificationEvent.id)
        )
        return list(rows)


async def dispatch_until_idle(dispatcher: Dispatcher) -> None:
    for _ in range(50):
        if not await dispatcher.run_once():
            return
    pytest.fail("the dispatcher still had work after many rounds")


async def nightly_job(sessionmaker, clock, tmp_path, channel: str) -> None:
    """A nightly job declared 40 days ago keeping 2 months, with 3 backups this week, one 20
    days ago, none the month before last: its first digest is due."""
    now = clock()
    for days in (1, 2, 3, 20):
        moment = (now - timedelta(days=days)).replace(hour=2, minute=30)
        make_file(tmp_path / f"db-{moment:%Y-%m-%d}.dump", 1000 + days, moment)
    await add_job(
        sessionmaker, now - timedelta(days=40), name="db",
        source={"type": "local", "path": str(tmp_path), "pattern": "*.dump"},
        schedule={"cron": "30 2 * * *"}, retention={"monthly": 2},
        report={"channel": channel, "every": "7d"}, notify={"channels": []},
    )  # fmt: skip
    async with sessionmaker() as session:
        await BackupScanner(session, clock=clock).scan_all_jobs()


def test_next_due_skips_the_periods_missed() -> None:
    due = datetime(2026, 11, 1, tzinfo=UTC)
    assert next_due(due, 7 * 86400, due) == due + WEEK
    assert next_due(due, 7 * 86400, due + timedelta(days=30)) == due + 5 * WEEK
    assert next_due(due, 7 * 86400, due - timedelta(days=1)) == due + WEEK


async def test_a_digest_reaches_a_webhook_once_per_period(sessionmaker, clock, tmp_path, receiver):
    channels = parse_channels(
        {"channels": {"ops": {"type": "webhook", "url": receiver.url}}}, "test"
    )
    await nightly_job(sessionmaker, clock, tmp_path, "ops")
    options = ScanOptions(clock=clock)
    # Three ticks (two of them together, as replicas would): one digest is written.
    ticks = [DeadlineTick(sessionmaker, options) for _ in range(3)]
    await ticks[0].run()
    await asyncio.gather(ticks[1].run(), ticks[2].run())
    async with sessionmaker() as session:
        assert await send_due_digests(session, clock()) == []
    (event,) = await digests(sessionmaker)
    assert event.channels == ["ops"] and event.job_name == "db"

    await dispatch_until_idle(Dispatcher(sessionmaker, channels, FAST))
    (body,) = receiver.delivered
    assert body["kind"] == "digest" and body["job"] == "db" and body["event_id"] == event.event_id
    digest = body["digest"]
    assert [point["path"] for point in digest["points"]] == [
        f"db-{(clock() - timedelta(days=d)):%Y-%m-%d}.dump" for d in (1, 2, 3)
    ]
    assert digest["present"] == 4 and digest["timezone"] == "UTC"
    assert digest["retention"]["monthly"] == 2
    this_month = f"{clock():%Y-%m}"
    # The newest backup of this month is kept for it (when the week began in this month).
    newest = digest["points"][0]
    if newest["mtime"][:7] == this_month:
        assert this_month in newest["slots"]

    # Nothing more until the next period; then one more digest, delivered once.
    await ticks[0].run()
    await dispatch_until_idle(Dispatcher(sessionmaker, channels, FAST))
    assert len(receiver.delivered) == 1
    clock.advance(days=7)
    await ticks[0].run()
    await ticks[1].run()
    await dispatch_until_idle(Dispatcher(sessionmaker, channels, FAST))
    assert [body["kind"] for body in receiver.delivered] == ["digest", "digest"]
    assert len({body["event_id"] for body in receiver.delivered}) == 2
    async with sessionmaker() as session:
        due = await session.scalar(select(Job.report_due_at).where(Job.name == "db"))
    assert due is not None and due > clock()


async def test_a_digest_reads_plainly_by_email(sessionmaker, clock, tmp_path):
    with smtp_servers() as smtp:
        server = smtp()
        channels = parse_channels(
            {"channels": {"ops-mail": {
                "type": "email", "host": "127.0.0.1", "port": server.port, "security": "none",
                "from": "backup-monitor@example.com", "to": ["ops@example.com"]}}}, "test",
        )  # fmt: skip
        await nightly_job(sessionmaker, clock, tmp_path, "ops-mail")
        async with sessionmaker() as session:
            assert await send_due_digests(session, clock()) == ["db"]
        await dispatch_until_idle(Dispatcher(sessionmaker, channels, FAST))
        message = server.mailbox.message()
    subject = message["Subject"].strip()  # folded by the mail library: a long header
    assert subject == "[backup-monitor] digest db: 3 new backups, 0 retention gaps"
    body = message.get_content()
    assert "Restore points of db, from " in body
    assert "Backups present in all: 4." in body
    assert "Retention (monthly 2): " in body
    for days in (1, 2, 3):
        moment = (clock() - timedelta(days=days)).replace(hour=2, minute=30)
        assert f"- {moment:%Y-%m-%d %H:%M}  db-{moment:%Y-%m-%d}.dump  " in body
    assert "db-" + f"{(clock() - timedelta(days=20)):%Y-%m-%d}" not in body  # before the period


async def test_a_job_without_report_sends_no_digest(sessionmaker, clock, tmp_path):
    await add_job(
        sessionmaker, clock() - timedelta(days=40), name="db",
        source={"type": "local", "path": str(tmp_path)},
    )  # fmt: skip
    async with sessionmaker() as session:
        assert await send_due_digests(session, clock()) == []
    assert await digests(sessionmaker) == []


async def test_a_paused_job_sends_no_digest(sessionmaker, clock, tmp_path):
    await nightly_job(sessionmaker, clock, tmp_path, "ops")
    async with sessionmaker() as session:
        job = await session.scalar(select(Job).where(Job.name == "db"))
        assert job is not None
        job.paused = True
        await session.commit()
    async with sessionmaker() as session:
        assert await send_due_digests(session, clock()) == []
        due = await session.scalar(select(Job.report_due_at).where(Job.name == "db"))
    assert await digests(sessionmaker) == []
    assert due is not None and due > clock()  # skipped, not retried at every tick
