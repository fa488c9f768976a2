"""Retention: old pings and finished notifications go; what a verdict needs stays."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, insert, select

from service.db.models import NotificationDelivery, NotificationEvent, Ping
from service.notify.events import event_row
from service.store.pings import PINGS_JUDGED
from service.store.retention import prune

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
