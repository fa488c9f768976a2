"""A PostgreSQL fleet: which replicas are alive, and each one's share of the jobs' listings.

Membership: each replica has a row in `replicas`, leased until `lease_until` and renewed by
its heartbeat; a replica killed (SIGKILL, OOM, a lost machine) drops out when its lease runs out,
one that stops cleanly removes its row at once (`leave`). The live replicas, sorted by name,
share the jobs by their id: the replica at index i of n lists the jobs whose `id % n == i`
(`share`, a pure rule), about 1/n each.

Listings: a periodic scan claims the jobs of its share that no periodic scan listed in the
current cycle (`listed_at` older than the scan interval less a slack: `cycle_start`), as
leases on the jobs' rows (service.store.leases), renewed by the heartbeat while the scan
runs. Finishing, it records `listed_at` on the jobs it listed and gives the leases back. A job
whose replica died mid-scan keeps its old `listed_at`: once the lease has run out it is due
again, for whichever replica's share it is in by then. Replicas that see the membership
differently for a moment (one just joined or died) may both find a job in their share: the
lease lets one list it, and `listed_at` keeps the other from listing it again in the cycle.

The watcher's judgements (a file landed) take the same leases, in the same shares, without
counting as the cycle's listing; the deadline tick claims each due job by a conditional UPDATE
of its own (service.runtime.tick), whichever replica runs it. The API's "scan now" and the CLI
list every job, as asked.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, or_, select, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.engine import is_postgresql
from service.db.models import Job, Replica
from service.store.leases import IN_PIECE, Leased, claim, release, renew

# A job's listing, leased to one replica at a time.
LISTINGS = Leased(Job.id, Job.listing_holder, Job.listing_lease_until)
# A job listed less than one scan interval ago, minus this slack, is not listed again in this
# cycle. The slack lets the next scan of the same replica, one interval later, find its jobs
# due even when the earlier one claimed them late (a busy machine, a slow heartbeat): a tenth
# of the interval, at least LISTED_SLACK_SECONDS, at most half the interval.
LISTED_SLACK_SECONDS = 5.0
# A replica whose lease ran out this many leases ago is forgotten (its row deleted).
FORGET_AFTER_LEASES = 10


def share(members: Sequence[str], name: str) -> tuple[int, int]:
    """(i, n): the replica `name` lists the jobs whose id % n == i among `members` (itself
    counted, whether or not the database had it yet)."""
    ordered = sorted({*members, name})
    return ordered.index(name), len(ordered)


def in_share(index: int, count: int) -> ColumnElement[bool]:
    """The jobs of the share (index, count)."""
    return Job.id % count == index


async def beat(session: AsyncSession, name: str, *, now: datetime, seconds: float) -> None:
    """Join the fleet, or stay in it: the replica's membership leased until now + seconds, and
    the listing leases it holds renewed as long (a long scan keeps its jobs). Commits."""
    until = now + timedelta(seconds=seconds)
    insert = postgresql.insert if is_postgresql(session) else sqlite.insert
    statement = insert(Replica).values(name=name, started_at=now, lease_until=until)
    await session.execute(
        statement.on_conflict_do_update(index_elements=[Replica.name], set_={"lease_until": until})
    )
    await renew(session, LISTINGS, holder=name, now=now, seconds=seconds)
    # The rows of replicas long dead (each start of an unnamed replica is a new name).
    forgotten = now - timedelta(seconds=FORGET_AFTER_LEASES * seconds)
    # (Those another beat is deleting are skipped: two beats never wait for each other.)
    gone = select(Replica.name).where(Replica.lease_until < forgotten)
    await session.execute(
        delete(Replica).where(Replica.name.in_(gone.with_for_update(skip_locked=True)))
    )
    await session.commit()


async def members(session: AsyncSession, now: datetime) -> list[str]:
    """The names of the live replicas (their lease not run out), sorted."""
    rows = await session.scalars(
        select(Replica.name).where(Replica.lease_until >= now).order_by(Replica.name)
    )
    return list(rows.all())


async def leave(session: AsyncSession, name: str) -> None:
    """Leave the fleet: the membership and the listing leases given back at once (the others
    take the replica's share at their next scan, not at its leases' expiry). Commits."""
    await release(session, LISTINGS, holder=name)
    await session.execute(delete(Replica).where(Replica.name == name))
    await session.commit()


def cycle_start(now: datetime, interval_seconds: float) -> datetime:
    """The jobs listed before this moment are due again at `now` (see LISTED_SLACK_SECONDS)."""
    slack = min(interval_seconds / 2, max(interval_seconds / 10, LISTED_SLACK_SECONDS))
    return now - timedelta(seconds=interval_seconds - slack)


def due(now: datetime, interval_seconds: float) -> ColumnElement[bool]:
    """The jobs no periodic scan listed in the current cycle."""
    return or_(Job.listed_at.is_(None), Job.listed_at < cycle_start(now, interval_seconds))


async def claim_listings(
    session: AsyncSession,
    name: str,
    *,
    fleet: Sequence[str],
    now: datetime,
    interval_seconds: float,
    lease_seconds: float,
) -> dict[str, int]:
    """Lease to replica `name` the listings of its share of the jobs (among the live `fleet`)
    due in this cycle: their ids by name. Commits."""
    index, count = share(fleet, name)
    rows = await claim(
        session, LISTINGS, holder=name, now=now, seconds=lease_seconds,
        where=and_(in_share(index, count), due(now, interval_seconds)), returning=[Job.name],
    )  # fmt: skip
    await session.commit()
    return {job: job_id for job_id, job in rows}


async def take_listings(
    session: AsyncSession,
    name: str,
    names: Collection[str],
    *,
    fleet: Sequence[str],
    now: datetime,
    lease_seconds: float,
) -> tuple[list[str], dict[str, int]]:
    """Of `names`, those in replica `name`'s share that it may list now (a change seen by every
    replica's watcher is judged by one), sorted; and, by name, the ids of those whose lease it
    took for this (to give back after). One it holds already (its periodic scan lists it right
    now) is listed too, its lease left to that scan. Commits."""
    index, count = share(fleet, name)
    listable: set[str] = set()
    taken: dict[str, int] = {}
    wanted = sorted(names)
    for start in range(0, len(wanted), IN_PIECE):
        piece = and_(in_share(index, count), Job.name.in_(wanted[start : start + IN_PIECE]))
        mine = and_(Job.listing_holder == name, Job.listing_lease_until >= now)
        held = set((await session.scalars(select(Job.name).where(piece, mine))).all())
        listable |= held
        rows = await claim(
            session, LISTINGS, holder=name, now=now, seconds=lease_seconds,
            where=and_(piece, Job.name.not_in(held) if held else true()), returning=[Job.name],
        )  # fmt: skip
        taken.update({job: job_id for job_id, job in rows})
    await session.commit()
    return sorted(listable | set(taken)), taken


async def done_listings(
    session: AsyncSession,
    name: str,
    claimed: Collection[int],
    *,
    listed: Collection[int] = (),
    listed_at: datetime | None = None,
) -> None:
    """Give back the listing leases of the jobs `claimed`; those `listed` are recorded as
    listed at `listed_at` (the cycle's listing: not listed again in this cycle). Commits."""
    done = set(listed) & set(claimed) if listed_at is not None else set()
    if done:
        await release(session, LISTINGS, holder=name, keys=done, values={"listed_at": listed_at})
    rest = set(claimed) - done
    if rest:
        await release(session, LISTINGS, holder=name, keys=rest)
    await session.commit()
