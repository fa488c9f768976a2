"""The lease primitive (service/store/leases.py) on both databases, and the fleet's share of the
listings (service/store/fleet.py) on PostgreSQL, with real concurrent claimers."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from service.db.engine import create_engine, create_sessionmaker
from service.db.models import Job, ScanRun
from service.runtime.coordinator import ScanCoordinator
from service.runtime.fleet import Fleet
from service.store import fleet
from service.store.fleet import LISTINGS, share
from service.store.leases import claim, release, renew

from tests.support import add_job


async def jobs(sessionmaker, clock, count: int) -> list[int]:
    return [await add_job(sessionmaker, clock(), name=f"job-{i:03d}") for i in range(count)]


async def test_a_lease_is_one_holders_until_it_runs_out_or_is_given_back(sessionmaker, clock):
    ids = await jobs(sessionmaker, clock, 5)
    now = clock()
    async with sessionmaker() as session:
        assert await claim(session, LISTINGS, holder="a", now=now, seconds=60) == ids
        # Held: nobody else gets it; its holder gets it again (a claim is idempotent).
        assert await claim(session, LISTINGS, holder="b", now=now, seconds=60) == []
        assert await claim(
            session, LISTINGS, holder="a", now=now, seconds=60, where=Job.id == ids[0]
        ) == [ids[0]]  # fmt: skip
        await session.commit()
        # Renewed before it runs out: still a's a minute later.
        later = now + timedelta(seconds=50)
        assert await renew(session, LISTINGS, holder="a", now=later, seconds=60) == 5
        assert await claim(session, LISTINGS, holder="b", now=later + timedelta(seconds=30),
                           seconds=60) == []  # fmt: skip
        # Run out (a holder that died): the next claimer takes them, at most `limit`.
        gone = later + timedelta(seconds=61)
        assert await renew(session, LISTINGS, holder="a", now=gone, seconds=60) == 0
        assert await claim(session, LISTINGS, holder="b", now=gone, seconds=60, limit=2) == ids[:2]
        # Given back: free at once, with the values asked for.
        assert await release(session, LISTINGS, holder="b", keys=[ids[0]],
                             values={"listed_at": gone}) == 1  # fmt: skip
        assert await release(session, LISTINGS, holder="a", keys=[ids[1]]) == 0  # not a's
        await session.commit()
        rows = (await session.execute(
            select(Job.id, Job.listing_holder, Job.listed_at).order_by(Job.id)
        )).all()  # fmt: skip
        assert rows[0] == (ids[0], None, gone)
        assert rows[1][1] == "b" and rows[1][2] is None
        assert await claim(session, LISTINGS, holder="c", now=gone, seconds=60) == [
            ids[0], *ids[2:]
        ]  # fmt: skip


async def test_concurrent_claimers_never_share_a_row(pg_url, clock):
    """Eight sessions claim the same 400 rows at once, 25 at a time, until none is left: each
    row is claimed exactly once (no deadlock, no wait on a row another holds)."""
    engine = create_engine(pg_url, pool_size=10)
    sessionmaker = create_sessionmaker(engine)
    try:
        async with sessionmaker() as session:
            session.add_all(
                Job(name=f"job-{i:03d}", schedule={"every": 86400}, grace=0, created_at=clock(),
                    updated_at=clock()) for i in range(400)
            )  # fmt: skip
            await session.commit()

        async def claimer(name: str) -> list[int]:
            got: list[int] = []
            async with sessionmaker() as session:
                # Not its own again: a claim takes back what its holder holds.
                nobodys = Job.listing_holder.is_(None)
                while batch := await claim(
                    session, LISTINGS, holder=name, now=clock(), seconds=60, limit=25, where=nobodys
                ):
                    got += batch
                    await asyncio.sleep(0)
                    await session.commit()
            return got

        results = await asyncio.gather(*(claimer(f"r{i}") for i in range(8)))
        claimed = [job for got in results for job in got]
        assert len(claimed) == len(set(claimed)) == 400
        assert sum(1 for got in results if got) > 1  # they did run side by side
    finally:
        await engine.dispose()


def test_share_is_by_sorted_name_and_counts_the_replica_itself():
    assert share(["b", "a", "c"], "b") == (1, 3)
    assert share(["a", "c"], "b") == (1, 3)  # not in the table yet: counted anyway
    assert share([], "z") == (0, 1)


async def test_replicas_split_one_cycle_and_no_job_is_listed_twice_in_it(pg_url, clock):
    engine = create_engine(pg_url)
    sessionmaker = create_sessionmaker(engine)
    interval = 60.0
    try:
        ids = await jobs(sessionmaker, clock, 30)
        names = ["r-a", "r-b", "r-c"]
        async with sessionmaker() as session:
            for name in names:
                await fleet.beat(session, name, now=clock(), seconds=30)
            assert await fleet.members(session, clock()) == names
            shares = [
                await fleet.claim_listings(
                    session,
                    name,
                    fleet=names,
                    now=clock(),
                    interval_seconds=interval,
                    lease_seconds=30,
                )
                for name in names
            ]
            assert [len(got) for got in shares] == [10, 10, 10]
            assert {job_id for got in shares for job_id in got.values()} == set(ids)
            # Listed: none is due again within the cycle, whoever asks (a replica that just
            # joined and sees another partition included).
            for name, got in zip(names, shares, strict=True):
                await fleet.done_listings(
                    session, name, list(got.values()), listed=list(got.values()), listed_at=clock()
                )
            clock.advance(seconds=interval * 0.5)
            assert await fleet.claim_listings(
                session, "r-d", fleet=[*names, "r-d"], now=clock(), interval_seconds=interval,
                lease_seconds=30,
            ) == {}  # fmt: skip
            # The next cycle: due again. r-c died (no beat for a lease): r-a and r-b share all.
            clock.advance(seconds=interval * 0.5)
            await fleet.beat(session, "r-a", now=clock(), seconds=30)
            await fleet.beat(session, "r-b", now=clock(), seconds=30)
            live = await fleet.members(session, clock())
            assert live == ["r-a", "r-b"]
            halves = [
                await fleet.claim_listings(
                    session,
                    name,
                    fleet=live,
                    now=clock(),
                    interval_seconds=interval,
                    lease_seconds=30,
                )
                for name in live
            ]
            assert [len(got) for got in halves] == [15, 15]
            # A listing not finished (the holder killed mid-scan) is due again once its lease
            # ran out, for whoever's share it is in then.
            clock.advance(seconds=31)
            again = await fleet.claim_listings(
                session, "r-b", fleet=["r-b"], now=clock(), interval_seconds=interval,
                lease_seconds=30,
            )  # fmt: skip
            assert len(again) == 30
            # A replica that leaves gives its leases back at once, and its membership.
            await fleet.beat(session, "r-a", now=clock(), seconds=30)
            await fleet.beat(session, "r-b", now=clock(), seconds=30)
            await fleet.leave(session, "r-b")
            holders = await session.scalar(
                select(func.count()).where(Job.listing_holder.is_not(None))
            )
            assert holders == 0
            assert await fleet.members(session, clock()) == ["r-a"]
    finally:
        await engine.dispose()


async def test_scheduled_scans_of_three_replicas_list_each_job_once(pg_url, clock, tmp_path):
    """Three coordinators with a fleet each (one app per replica, one database): the scheduled
    scans of one cycle judge 30 jobs between them, each once, a third each."""
    engine = create_engine(pg_url)
    sessionmaker = create_sessionmaker(engine)
    try:
        for i in range(30):
            (tmp_path / f"d{i}").mkdir()
            await add_job(sessionmaker, clock(), name=f"job-{i:03d}",
                          source={"type": "local", "path": str(tmp_path / f"d{i}")})  # fmt: skip
        fleets = [
            Fleet(sessionmaker, name, interval_seconds=60, lease_seconds=30, clock=clock)
            for name in ("r-a", "r-b", "r-c")
        ]
        for member in fleets:
            assert await member.beat()
        coordinators = [ScanCoordinator(sessionmaker, fleet=member) for member in fleets]
        await asyncio.gather(*(coordinator.run_scheduled() for coordinator in coordinators))
        async with sessionmaker() as session:
            listed = (await session.execute(select(Job.listed_at, Job.listing_holder))).all()
            assert len(listed) == 30
            assert {row.listed_at for row in listed} == {clock()}
            assert {row.listing_holder for row in listed} == {None}  # given back
            runs = (await session.execute(
                select(ScanRun.replica, ScanRun.jobs_scanned).order_by(ScanRun.replica)
            )).all()  # fmt: skip
            assert runs == [("r-a", 10), ("r-b", 10), ("r-c", 10)]
            # Again in the same cycle: nothing left to list.
            await coordinators[0].run_scheduled()
            again = await session.scalar(
                select(ScanRun.jobs_scanned).order_by(ScanRun.id.desc()).limit(1)
            )
            assert again == 0
    finally:
        await engine.dispose()


async def test_a_watcher_takes_the_jobs_of_its_share_and_leaves_its_scans_leases(pg_url, clock):
    engine = create_engine(pg_url)
    sessionmaker = create_sessionmaker(engine)
    try:
        ids = await jobs(sessionmaker, clock, 8)  # ids 1..8: r-a's share (of 2) is the even ones
        names = {job_id: f"job-{index:03d}" for index, job_id in enumerate(ids)}
        even = [job_id for job_id in ids if job_id % 2 == 0]
        async with sessionmaker() as session:
            # r-a's scan lists one of its jobs now; another is held by r-b (a view of the fleet
            # from a moment ago) until its lease runs out.
            await claim(session, LISTINGS, holder="r-a", now=clock(), seconds=30,
                        where=Job.id == even[0])  # fmt: skip
            await claim(session, LISTINGS, holder="r-b", now=clock(), seconds=30,
                        where=Job.id == even[1])  # fmt: skip
            await session.commit()
            listable, taken = await fleet.take_listings(
                session, "r-a", list(names.values()), fleet=["r-a", "r-b"], now=clock(),
                lease_seconds=30,
            )  # fmt: skip
            assert listable == sorted(names[job_id] for job_id in even if job_id != even[1])
            assert taken == {names[job_id]: job_id for job_id in even[2:]}
            await fleet.done_listings(session, "r-a", list(taken.values()))
            rows = await session.execute(select(Job.id, Job.listing_holder))
            holders = {job_id: holder for job_id, holder in rows}
            assert holders[even[0]] == "r-a" and holders[even[1]] == "r-b"  # left as they were
            assert {holders[job_id] for job_id in even[2:]} == {None}
    finally:
        await engine.dispose()
