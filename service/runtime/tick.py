"""The deadline tick: between full scans, judge the jobs whose deadline passed, whose reminder
is due, or that pinged, within seconds."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.clock import Clock, utcnow
from service.core.scan_options import ScanOptions
from service.db.engine import claimed, database_url_of
from service.db.errors import log_failure
from service.db.models import Job, Ping
from service.runtime.lifecycle import drain
from service.scanner.scanner import run_scanner
from service.store.digests import send_due_digests

# The scheduler's log lines keep the logger of the original request, wherever they come from.
logger = logging.getLogger("service.scheduler")

TICK_BATCH = 500  # jobs claimed by one tick at most


async def _claim(session: AsyncSession, job_id: int, condition: Any, now: datetime) -> bool:
    """A conditional UPDATE checked by its rowcount: one claimer wins, however many try."""
    claim = update(Job).where(Job.id == job_id, Job.paused.is_(False), condition)
    return await claimed(session, claim.values(checked_at=now))


def _due_since() -> Any:
    """When a job became due for the tick: the earlier of its deadline and its reminder
    (a CASE, as SQLite has no LEAST and PostgreSQL no two-argument MIN)."""
    return case(
        (Job.renotify_at.is_(None), Job.next_check_at),
        (Job.next_check_at.is_(None), Job.renotify_at),
        (Job.renotify_at < Job.next_check_at, Job.renotify_at),
        else_=Job.next_check_at,
    )


class DeadlineTick:
    """The deadline tick of one app (one database).

    Each job is claimed by a conditional UPDATE checked by its rowcount, so that several
    replicas ticking together never scan a job twice. Each new ping is seen by one run of this
    tick, which judges its job once: the tick remembers the newest ping it has looked at (its
    baseline, taken by `start`, or by the first run when not started). While `stop` runs, a run
    judges nothing and a running one ends after the job in hand; `stop` leaves it usable.
    """

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        options: ScanOptions | None = None,
        *,
        batch: int = TICK_BATCH,
    ) -> None:
        self.session_factory = session_factory
        # A `clock` here (tests) is the tick's time and the scan's.
        self.options = options or ScanOptions()
        self.batch = batch
        self._last_ping_id: int | None = None
        self._stopping = asyncio.Event()
        self._runs: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Judge the jobs of the pings from now on; those before are the first full scan's (it
        starts after this). Taken at the start, not at the first run: a ping stored in between,
        whose job the first full scan had already judged, would have been nobody's until the
        next full scan. If the database cannot say now, the first run takes it then."""
        self._stopping.clear()
        try:
            async with self.session_factory() as session:
                newest = await session.scalar(select(func.max(Ping.id)))
        except Exception as exc:
            log_failure(
                logger, "cannot read the newest ping", exc, database_url_of(self.session_factory)
            )
            return
        self._last_ping_id = newest or 0

    async def stop(self, grace: float) -> None:
        """A running tick ends after the job in hand, within `grace` seconds (then cancelled)."""
        self._stopping.set()
        await asyncio.sleep(0)
        await drain(self._runs, grace)
        self._stopping.clear()

    async def run(self) -> list[str]:
        """Judge now the jobs whose deadline passed, whose next notice is due (a
        reminder, or a notice held by notify.for or a silence until now), or that pinged,
        since they were last judged. Returns the names scanned; logs a failure, never raises."""
        if self._stopping.is_set():
            return []
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing for `stop` to wait for
            return await self._run()
        self._runs.add(task)
        try:
            return await self._run()
        finally:
            self._runs.discard(task)

    async def _run(self) -> list[str]:
        clock: Clock = self.options.clock or utcnow
        now = clock()
        never = Job.checked_at.is_(None)
        not_seen_since = or_(
            and_(Job.next_check_at <= now, or_(never, Job.checked_at < Job.next_check_at)),
            # A reminder (or a notice held until now: renotify_at is when the next notice is
            # due) is written by the judgement at its due time, with the reasons then. Due
            # whenever this job was last looked at: a tick whose scan skipped the job (another
            # writer held its row) or failed has set checked_at, and the reminder must not wait
            # for the next full scan. It clears itself: the judgement that writes the reminder
            # moves renotify_at on, one that ends the problem clears it (paused jobs: not
            # taken). (checked_at < now: replicas ticking at the same moment claim it once.)
            and_(Job.renotify_at <= now, or_(never, Job.checked_at < now)),
        )
        async with self.session_factory() as session:
            try:
                due = await session.execute(
                    select(Job.id, Job.name)
                    .where(Job.paused.is_(False), not_seen_since)
                    # The longest due first, for a deadline or a reminder: none starves.
                    .order_by(_due_since(), Job.id)
                    .limit(self.batch)
                )
                claimed = {
                    name
                    for job_id, name in due.all()
                    if await _claim(session, job_id, not_seen_since, now)
                }
                await session.commit()
                # Pings since the last run: their jobs are judged now too (a failure is news).
                last_seen = self._last_ping_id
                if last_seen is None:  # pings before this tick started: the first full scan's
                    last_seen = await session.scalar(select(func.max(Ping.id))) or 0
                pinged = await session.execute(
                    select(Ping.job_id, Job.name, func.max(Ping.received_at), func.max(Ping.id))
                    .join(Job, Job.id == Ping.job_id)
                    .where(Ping.id > last_seen)
                    .group_by(Ping.job_id, Job.name)
                )
                for job_id, name, _received, newest in pinged.all():
                    last_seen = max(last_seen, newest)
                    # Not "checked before the ping was received": a ping is received before the
                    # writer commits it, so a look in between (a scan) would have hidden it.
                    if name not in claimed and await _claim(session, job_id, true(), now):
                        claimed.add(name)
                await session.commit()
                self._last_ping_id = last_seen
                if claimed:
                    await run_scanner(
                        session,
                        self.options,
                        trigger="tick",
                        stop=self._stopping,
                        names=sorted(claimed),
                    )
            except Exception as exc:  # like the full scan: log, never kill the scheduler
                log_failure(
                    logger, "Error while running the deadline tick", exc,
                    database_url_of(self.session_factory),
                )  # fmt: skip
                return []
            try:
                # The restore-points digests due (each written once, whoever ticks).
                await send_due_digests(session, clock())
            except Exception as exc:  # a digest waits for the next tick; judging goes on
                await session.rollback()
                log_failure(
                    logger, "Error while writing the digests", exc,
                    database_url_of(self.session_factory),
                )  # fmt: skip
            return sorted(claimed)
