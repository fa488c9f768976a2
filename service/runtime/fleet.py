"""This replica in a PostgreSQL fleet: its membership, kept by a heartbeat, and its share of the
listings (the rules and the SQL are service.store.fleet's; the lease primitive is
service.store.leases).

Only on PostgreSQL, and only where the scheduler runs: SQLite is one process that lists every
job, as an app without a fleet does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.clock import Clock, utcnow
from service.db.engine import database_url_of
from service.db.errors import log_failure
from service.store import fleet

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Share:
    """The listings a periodic scan of this replica claimed (ids by name), and when."""

    at: datetime
    jobs: dict[str, int]


class Fleet:
    """The membership of replica `name`, renewed every third of `lease_seconds`, and the leases
    of its listings.

    Invariants: from `start` until `stop`, the replica's row and the listing leases it holds
    are renewed at least twice within each lease (so a replica alive and reaching the database
    never loses them); `stop` removes the row and gives the leases back (the others take its
    share at their next scan). A failing beat is logged, never raised: the next one tries again.
    """

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        name: str,
        *,
        interval_seconds: float,
        lease_seconds: float,
        clock: Clock = utcnow,
    ) -> None:
        self.session_factory = session_factory
        self.name = name
        self.interval_seconds = interval_seconds
        self.lease_seconds = lease_seconds
        self.clock = clock
        # The live replicas as the last beat saw them (this one at least).
        self.members: list[str] = [name]
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Join now (the first scan's share counts this replica), then beat in the background."""
        self._stop.clear()
        await self.beat()
        self._task = asyncio.create_task(self._beat_until_stopped(), name="fleet-heartbeat")

    async def stop(self, grace: float) -> None:
        """Stop beating and leave the fleet (best effort: a lease left runs out by itself)."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            async with self.session_factory() as session:
                await fleet.leave(session, self.name)
            logger.info("fleet: left", extra={"replica": self.name})
        except Exception as exc:
            log_failure(logger, "fleet: cannot leave", exc, database_url_of(self.session_factory))

    async def _beat_until_stopped(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.lease_seconds / 3)
            if not self._stop.is_set():
                await self.beat()

    async def beat(self) -> bool:
        """Renew the membership and the listing leases, read the live replicas; False (logged)
        when the database could not be reached."""
        try:
            async with self.session_factory() as session:
                now = self.clock()
                await fleet.beat(session, self.name, now=now, seconds=self.lease_seconds)
                members = await fleet.members(session, now)
        except Exception as exc:
            url = database_url_of(self.session_factory)
            log_failure(logger, "fleet: heartbeat failed", exc, url)
            return False
        if members != self.members:
            index, count = fleet.share(members, self.name)
            logger.info(
                "fleet: members changed",
                extra={"replica": self.name, "replicas": count, "share": f"{index}/{count}",
                       "members": ",".join(members)},
            )  # fmt: skip
        self.members = members
        return True

    async def claim_share(self) -> Share:
        """The listings of this replica's share due in this cycle, leased to it."""
        await self.beat()  # the members as they are now, and this replica among them
        now = self.clock()
        async with self.session_factory() as session:
            claimed = await fleet.claim_listings(
                session, self.name, fleet=self.members, now=now,
                interval_seconds=self.interval_seconds, lease_seconds=self.lease_seconds,
            )  # fmt: skip
        index, count = fleet.share(self.members, self.name)
        logger.info(
            "fleet: share claimed",
            extra={"replica": self.name, "share": f"{index}/{count}", "jobs": len(claimed)},
        )
        return Share(now, claimed)

    async def take(self, names: Sequence[str]) -> tuple[list[str], dict[str, int]]:
        """Of the jobs `names`, those of this replica's share it may list now, and the leases
        taken for them (a watcher's judgement: every replica sees the change, one judges it)."""
        async with self.session_factory() as session:
            return await fleet.take_listings(
                session, self.name, names, fleet=self.members, now=self.clock(),
                lease_seconds=self.lease_seconds,
            )  # fmt: skip

    async def give_back(
        self,
        claimed: Mapping[str, int],
        listed: Sequence[str] = (),
        listed_at: datetime | None = None,
    ) -> None:
        """Give back the leases of `claimed`; with `listed_at` (a periodic scan's), those
        `listed` count as listed in this cycle, at that moment. Logged, never raised."""
        listed_ids = [claimed[name] for name in listed if name in claimed]
        try:
            async with self.session_factory() as session:
                await fleet.done_listings(
                    session, self.name, list(claimed.values()), listed=listed_ids,
                    listed_at=listed_at,
                )  # fmt: skip
        except Exception as exc:  # the leases run out by themselves
            log_failure(
                logger, "fleet: cannot give the leases back", exc,
                database_url_of(self.session_factory),
            )  # fmt: skip
