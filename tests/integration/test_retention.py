"""Retention: old pings, finished notifications, scans and status changes go; what a verdict,
a notice or an endpoint needs stays."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, insert, select

from service.db.models import (
    Artifact,
    JobCheck,
    NotificationDelivery,
    NotificationEvent,
    Ping,
    ScanRun,
)
from service.notify.events import event_row
from service.store import retention
from service.store.pings import PINGS_JUDGED
from service.store.retention import prune
from service.store.scans import failures_in_a_row, read_counters

from tests.support import add_job


async def count(sessionmaker, model, *where) -> int:
    async with sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(model).where(*where)) or 0


async def test_old_pings_go_but_each_job_keeps_its_newest(sessionmaker, clock):
    now = clock()
    busy = await add_job(sessionmaker, now - timedelta(days=400), name="busy")
    quiet = await add_job(sessionmaker, now - timedelta(days=400), name="quiet")
    old, recent = now - timedelta(days=100), now - timedelta(days=10)

    def pings(job_id, when, n):
        return [
            {
                "job_id": job_id,
                "kind": "success",
                "exit_status": 0,
                "rid": None,
                "body": "",
                "received_at": when + timedelta(seconds=i),
            }
            for i in range(n)
        ]

    async with sessionmaker() as session:
        # busy: 120 old pings then 60 recent ones; quiet: 3 old pings and nothing since.
        rows = pings(busy, old, 120) + pings(busy, recent, 60) + pings(quiet, old, 3)
        await session.execute(insert(Ping), rows)
        await session.commit()

    pruned = await prune(sessionmaker, days=90, now=now)
    assert pruned.pings == 120  # every old ping of busy: its 60 recent ones cover the newest 50
    assert await count(sessionmaker, Ping, Ping.job_id == busy) == 60
    # quiet keeps its 3 old pings: they are all it has, and its verdict is judged from them.
    assert await count(sessionmaker, Ping, Ping.job_id == quiet) == 3
    assert PINGS_JUDGED <= 60

    again = await prune(sessionmaker, days=90, now=now)
    assert again.pings == 0


async def test_finished_notifications_go_pending_ones_stay(sessionmaker, clock):
    now = clock()
    job_id = await add_job(sessionmaker, now, name="db")
    old = now - timedelta(days=100)

    def event(when, routed):
        row = event_row(
            job_id=job_id,
            job_name="db",
            kind="problem",
            status="critical",
            previous_status="ok",
            reasons=[],
            latest_artifact=None,
            channels=None,
            now=when,
        )
        row["routed_at"] = when if routed else None
        return row

    async with sessionmaker() as session:
        rows = [event(old, True), event(old, True), event(old, False), event(now, True)]
        ids = [
            (await session.execute(insert(NotificationEvent).values(row))).inserted_primary_key[0]
            for row in rows
        ]
        states = [("delivered", ids[0]), ("pending", ids[1]), ("delivered", ids[3])]
        await session.execute(
            insert(NotificationDelivery),
            [
                {
                    "event_id": event_id,
                    "channel": "ops",
                    "job_name": "db",
                    "state": state,
                    "attempts": 1,
                    "next_attempt_at": now,
                }
                for state, event_id in states
            ],
        )
        await session.commit()

    pruned = await prune(sessionmaker, days=90, now=now)
    # Old and delivered, old and never routed (no channel anywhere): gone. Old but still
    # pending, or recent: kept.
    assert pruned.events == 2
    async with sessionmaker() as session:
        left = set((await session.scalars(select(NotificationEvent.id))).all())
    assert left == {ids[1], ids[3]}
    assert await count(sessionmaker, NotificationDelivery) == 2  # the cascade took the first


def scan_row(trigger, status, started, seconds=2.0, **extra):
    finished = None if status == "running" else started + timedelta(seconds=seconds)
    return {
        "trigger": trigger, "status": status, "started_at": started, "finished_at": finished,
        "jobs_scanned": 1, "artifacts_new": 0, "artifacts_changed": 0, "artifacts_gone": 0,
        "errors": 0, "error_details": [], **extra,
    }  # fmt: skip


async def test_old_scans_go_but_what_health_and_the_streak_need_stays(sessionmaker, clock):
    now = clock()
    old = now - timedelta(days=100)
    rows = [scan_row("interval", "finished", old + timedelta(minutes=i)) for i in range(30)]
    rows += [
        scan_row("interval", "failed", old + timedelta(hours=2)),
        scan_row("job", "abandoned", old - timedelta(days=1)),
        scan_row("job", "finished", old + timedelta(hours=3)),  # the newest of its trigger
        scan_row("interval", "running", old + timedelta(hours=4)),  # running: never deleted
        scan_row("interval", "finished", now - timedelta(days=1)),  # recent
    ]
    async with sessionmaker() as session:
        ids = [
            (await session.execute(insert(ScanRun).values(row))).inserted_primary_key[0]
            for row in rows
        ]
        await session.commit()
        counters = await read_counters(session)
    by_status = dict(zip(ids, rows, strict=True))

    pruned = await prune(sessionmaker, days=90, now=now)
    async with sessionmaker() as session:
        left = set((await session.scalars(select(ScanRun.id))).all())
        # Deleting scans never moves a counter back.
        assert await read_counters(session) == counters
    # The old scan of trigger `job` stays: the newest of its trigger (what /health and
    # /api/v1/status show of it); so do the running one and the recent one (the newest of
    # `interval`, and the newest that did not fail). The 31 other old ones go.
    assert left == {ids[32], ids[33], ids[34]}
    assert pruned.scans == 32
    assert by_status[ids[33]]["status"] == "running"
    assert (await prune(sessionmaker, days=90, now=now)).scans == 0


async def test_the_newest_scan_that_did_not_fail_stays(sessionmaker, clock):
    """The failure streak is a verdict (/health/ready): the newest scan that did not fail and
    every scan since stay, however old."""
    now = clock()
    old = now - timedelta(days=100)
    rows = [scan_row("interval", "finished", old), scan_row("interval", "finished", old)]
    rows += [scan_row("interval", "failed", old + timedelta(hours=i + 1)) for i in range(3)]
    async with sessionmaker() as session:
        await session.execute(insert(ScanRun), rows)
        await session.commit()
        before = await failures_in_a_row(session)
    assert before == 3
    assert (await prune(sessionmaker, days=90, now=now)).scans == 1
    async with sessionmaker() as session:
        assert await failures_in_a_row(session) == 3
        statuses = sorted((await session.scalars(select(ScanRun.status))).all())
    assert statuses == ["failed", "failed", "failed", "finished"]


async def test_old_status_changes_go_but_each_job_keeps_its_newest(sessionmaker, clock):
    now = clock()
    busy = await add_job(sessionmaker, now - timedelta(days=400), name="busy")
    quiet = await add_job(sessionmaker, now - timedelta(days=400), name="quiet")
    old = now - timedelta(days=200)

    def check(job_id, when, status):
        return {"job_id": job_id, "checked_at": when, "status": status, "previous_status": None,
                "reasons": [], "latest_artifact": None}  # fmt: skip

    rows = [check(busy, old + timedelta(days=i), ("ok", "critical")[i % 2]) for i in range(10)]
    rows += [check(busy, now - timedelta(days=1), "ok")]
    rows += [check(quiet, old, "critical"), check(quiet, old + timedelta(days=1), "ok")]
    async with sessionmaker() as session:
        await session.execute(insert(JobCheck), rows)
        await session.commit()
    pruned = await prune(sessionmaker, days=90, now=now)
    assert pruned.checks == 11  # busy's 10 old ones, quiet's older one
    async with sessionmaker() as session:
        kept = (
            await session.execute(
                select(JobCheck.job_id, JobCheck.status).order_by(JobCheck.job_id)
            )
        ).all()
    # quiet has changed nothing for 199 days: its newest change says what it is, and since when.
    assert [tuple(row) for row in kept] == [(busy, "ok"), (quiet, "ok")]


async def test_artifacts_gone_for_long_go_present_ones_stay(sessionmaker, clock):
    now = clock()
    job_id = await add_job(sessionmaker, now - timedelta(days=400), name="db")

    def artifact(path, mtime, gone_since):
        return {"job_id": job_id, "path": path, "size": 1, "mtime": mtime, "first_seen": mtime,
                "last_seen": gone_since or now, "gone_since": gone_since}  # fmt: skip

    year_ago = now - timedelta(days=365)
    rows = [artifact(f"old-{i}.tar", year_ago, year_ago + timedelta(days=7)) for i in range(12)]
    rows += [
        artifact("recently-gone.tar", now - timedelta(days=40), now - timedelta(days=30)),
        artifact("ancient-but-present.tar", year_ago, None),
    ]
    async with sessionmaker() as session:
        await session.execute(insert(Artifact), rows)
        await session.commit()
    pruned = await prune(sessionmaker, days=90, now=now)
    assert pruned.artifacts == 12
    async with sessionmaker() as session:
        left = sorted((await session.scalars(select(Artifact.path))).all())
    assert left == ["ancient-but-present.tar", "recently-gone.tar"]


async def test_a_backlog_larger_than_a_piece_goes_in_pieces(sessionmaker, clock, monkeypatch):
    """Several pieces, each starting after the last: nothing skipped, nothing kept twice."""
    monkeypatch.setattr(retention, "PIECE", 7)
    now = clock()
    old = now - timedelta(days=100)
    rows = [scan_row("interval", "finished", old + timedelta(minutes=i)) for i in range(50)]
    rows.append(scan_row("interval", "finished", now))
    async with sessionmaker() as session:
        await session.execute(insert(ScanRun), rows)
        await session.commit()
    assert (await prune(sessionmaker, days=90, now=now)).scans == 50
    assert await count(sessionmaker, ScanRun) == 1
