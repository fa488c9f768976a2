"""Heartbeats: pings from backup scripts, stored in batches, and the runs they make.

A ping is answered `OK` only once it is committed. Committing each ping alone would cost a disk
flush per ping; instead one writer task takes every ping waiting at that moment, inserts them in
one transaction, and then answers them all (group commit): the more pings arrive together, the
fewer flushes each one costs, and none is answered before it is durable.

On PostgreSQL a batch is one statement on a connection the writer keeps (in autocommit: the
statement is its own transaction): the lookup of the keys and the insert together, with the
pings' fields sent as arrays, so a batch of any size costs one round trip, no ORM and no
check-out of the pool. SQLite goes through the ORM (one process, one writer: the round trips
are function calls there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from sqlalchemy import func, insert, select, true
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from service.core.rules import RunFacts
from service.db.engine import database_url_of, engine_of, is_postgresql
from service.db.errors import (
    database_unavailable,
    describe_database_error,
    describe_error,
    log_failure,
)
from service.db.models import Job, Ping

logger = logging.getLogger(__name__)

Kind = Literal["start", "success", "fail", "log"]
BODY_LIMIT = 10 * 1024  # characters of a ping's body kept as its log
BATCH_LIMIT = 1000
# The keys looked up and the pings of their jobs inserted, in arrival order, in one statement;
# it returns the keys found (the others get a 404). The INSERT runs though nothing reads it.
_INSERT_BATCH = """
WITH batch AS (
    SELECT jobs.id AS job_id, p.key, p.kind, p.exit_status, p.rid, p.body, p.received_at, p.n
    FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::timestamptz[])
        WITH ORDINALITY AS p(key, kind, exit_status, rid, body, received_at, n)
    JOIN jobs ON jobs.ping_key = p.key
), stored AS (
    INSERT INTO pings (job_id, kind, exit_status, rid, body, received_at)
    SELECT job_id, kind, exit_status, rid, body, received_at FROM batch ORDER BY n
)
SELECT DISTINCT key FROM batch
"""


@dataclass(frozen=True, slots=True)
class Received:
    key: str
    kind: Kind
    exit_status: int | None
    rid: str | None
    body: str
    received_at: datetime


class PingWriter:
    """Stores pings in batches; `submit` returns once the ping is committed (True) or its key
    belongs to no job (False)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        # The pings waiting for the next batch, in arrival order: a plain list the writer swaps
        # out whole (an asyncio.Queue costs a coroutine and a counter per ping, on the
        # busiest path of the service).
        self._waiting: list[tuple[Received, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()  # set when a ping waits
        self._idle = asyncio.Event()  # set when no ping waits nor is being written
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        # PostgreSQL: the connection the batches are written on, opened at the first batch and
        # after a failure (a restarted database leaves it dead).
        self._connection: AsyncConnection | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ping-writer")

    async def stop(self, grace: float) -> None:
        """Store what is queued (for up to `grace` seconds), then stop."""
        if self._task is None:
            return
        # Not waiting for the idle writer alone: a writer that has ended would never be.
        idle = asyncio.create_task(self._idle.wait())
        await asyncio.wait({idle, self._task}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        idle.cancel()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        await self._close_connection()

    async def submit(self, ping: Received) -> bool:
        if self._task is None or self._task.done():
            raise RuntimeError("the ping writer is not running")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((ping, future))
        self._idle.clear()
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Every ping waiting now, in batches of BATCH_LIMIT at most (_write never raises).
            while self._waiting:
                batch = self._waiting[:BATCH_LIMIT]
                del self._waiting[:BATCH_LIMIT]
                await self._write(batch)
            self._idle.set()

    async def _write(self, batch: Sequence[tuple[Received, asyncio.Future[bool]]]) -> None:
        """Store a batch and answer each of its pings; never raises, so the writer lives on."""
        try:
            outcomes = await self._store([ping for ping, _ in batch])
        except Exception as exc:
            # A failure outside what _store handles (its own error handling failing, a bug):
            # this batch gets the error, and the writer goes on with the next one. Ending here
            # would leave these pings unanswered and fail every later one.
            log_failure(
                logger, "ping batch not stored", exc, database_url_of(self._sessionmaker),
                count=len(batch),
            )  # fmt: skip
            outcomes = [exc] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its client went away
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _store(
        self, pings: Sequence[Received], *, again: bool = True
    ) -> list[bool | Exception]:
        """Each ping's outcome: stored (True), no such job (False), or the error it gets.

        One bad ping must not fail the others: a batch that fails on a row (a foreign key of a
        job deleted since the lookup, a value refused) is split in halves, each stored on its
        own with a fresh lookup, down to the one ping at fault, which gets one more try (its
        job, if deleted, is no longer found: a 404). An error no row causes (a database that is
        away, a bug) fails them all at once, without splitting.
        """
        try:
            known = await self._insert(pings)
        except Exception as exc:
            if database_unavailable(exc):
                error = describe_database_error(exc, database_url_of(self._sessionmaker))
                logger.warning("pings not stored", extra={"count": len(pings), "error": error})
                return [exc] * len(pings)
            if not isinstance(exc, IntegrityError | DataError) or (len(pings) == 1 and not again):
                return [exc] * len(pings)
            logger.info(
                "ping batch failed on a row, storing it in parts",
                extra={"count": len(pings), "error": describe_error(exc)},
            )
            if len(pings) == 1:
                return await self._store(pings, again=False)
            middle = len(pings) // 2
            return await self._store(pings[:middle]) + await self._store(pings[middle:])
        return [ping.key in known for ping in pings]

    async def _insert(self, pings: Sequence[Received]) -> set[str]:
        """Store the pings whose key is a job's in one transaction; the keys found."""
        engine = engine_of(self._sessionmaker)
        if engine is not None and engine.dialect.name == "postgresql":
            return await self._insert_postgresql(engine, pings)
        async with self._sessionmaker() as session:
            keys = {ping.key for ping in pings}
            rows = await session.execute(select(Job.ping_key, Job.id).where(Job.ping_key.in_(keys)))
            jobs = {key: job_id for key, job_id in rows}
            values = [
                {
                    "job_id": jobs[ping.key], "kind": ping.kind, "exit_status": ping.exit_status,
                    "rid": ping.rid, "body": ping.body, "received_at": ping.received_at,
                }
                for ping in pings
                if ping.key in jobs
            ]  # fmt: skip
            if values:
                # Only pings are written here: the deadline tick finds the jobs they concern
                # (no lock on the jobs' rows, which scans hold).
                await session.execute(insert(Ping), values)
                await session.commit()
            return set(jobs)

    async def _insert_postgresql(self, engine: AsyncEngine, pings: Sequence[Received]) -> set[str]:
        arrays = (
            [ping.key for ping in pings], [ping.kind for ping in pings],
            [ping.exit_status for ping in pings], [ping.rid for ping in pings],
            [ping.body for ping in pings], [ping.received_at for ping in pings],
        )  # fmt: skip
        kept = self._connection is not None
        try:
            if self._connection is None:
                self._connection = await engine.connect()
                await self._connection.execution_options(isolation_level="AUTOCOMMIT")
            result = await self._connection.exec_driver_sql(_INSERT_BATCH, arrays)
            return {key for (key,) in result}
        except BaseException as exc:
            # Whatever failed (a statement, the connection, a cancellation mid-statement),
            # the next batch starts on a fresh connection.
            await self._close_connection()
            # A kept connection found dead (the database restarted while it was idle: what the
            # pool's pre-ping catches): once more on a new one.
            if kept and isinstance(exc, DBAPIError) and exc.connection_invalidated:
                return await self._insert_postgresql(engine, pings)
            raise

    async def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except Exception:  # a dead connection: the pool discards it
                with contextlib.suppress(Exception):
                    await connection.invalidate()


Outcome = Literal["running", "abandoned", "success", "fail", "log"]


@dataclass(frozen=True, slots=True)
class Run:
    """A start and its finish (either may be missing), or a log ping alone."""

    outcome: Outcome
    started_at: datetime | None
    finished_at: datetime | None
    exit_status: int | None
    rid: str | None
    log: str

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


def runs_of(pings: Sequence[Ping]) -> list[Run]:
    """The runs that pings (oldest first) make, each listed at its last ping, oldest first.

    A finish closes the open run with the same run id (`?rid=`, or none on both). A start
    supersedes the open run with its run id (or none on both): that run's script died without
    a finish, so it is `abandoned` (its start kept, no finish, no duration) instead of
    `running` until it leaves the pings read. Runs with different run ids overlap (Healthchecks'
    rule): a start with one leaves an open run with another alone. A finish with nothing open
    is a run of unknown length; a start that nothing finished or superseded yet is `running`.
    Log pings are listed as they came.
    """
    runs: list[Run | None] = []
    open_runs: dict[str | None, int] = {}  # rid -> index in runs of the open run
    for ping in pings:
        if ping.kind == "start":
            superseded = open_runs.get(ping.rid)
            if superseded is not None and (opened := runs[superseded]) is not None:
                runs[superseded] = replace(opened, outcome="abandoned")
            open_runs[ping.rid] = len(runs)
            runs.append(Run("running", ping.received_at, None, None, ping.rid, ping.body))
        elif ping.kind == "log":
            runs.append(Run("log", None, ping.received_at, None, ping.rid, ping.body))
        else:
            index = open_runs.pop(ping.rid, None)
            started = None
            if index is not None:
                opened, runs[index] = runs[index], None  # the finished run takes its place
                started = opened.started_at if opened is not None else None
            outcome: Literal["success", "fail"] = "success" if ping.kind == "success" else "fail"
            runs.append(
                Run(outcome, started, ping.received_at, ping.exit_status, ping.rid, ping.body)
            )
    return [run for run in runs if run is not None]


async def recent_runs(session: AsyncSession, job_id: int, limit: int) -> list[Run]:
    """The job's newest runs, newest first (from its last pings)."""
    rows = await session.scalars(
        select(Ping).where(Ping.job_id == job_id).order_by(Ping.id.desc()).limit(limit * 3)
    )
    return runs_of(list(rows)[::-1])[::-1][:limit]


PINGS_JUDGED = 50  # a job's newest pings the evaluation reads


def run_facts(runs: Sequence[Run]) -> RunFacts:
    """What the evaluation needs from a job's runs (oldest first).

    Only the newest start is watched for `max_duration`, as Healthchecks does: once a later run
    has started, an older one still open (its script died, or it overlaps under another run
    id) is never judged overdue, so one crash cannot pin the job critical while later runs
    succeed.
    """
    finished = [run for run in runs if run.outcome in ("success", "fail")]
    successes = [run for run in finished if run.outcome == "success"]
    # The newest start; at the same instant, the run listed later (the one that superseded).
    starts = [(run.started_at, index) for index, run in enumerate(runs) if run.started_at]
    newest = runs[max(starts)[1]] if starts else None
    last = finished[-1] if finished else None
    return RunFacts(
        last_success_at=successes[-1].finished_at if successes else None,
        last_failed=last is not None and last.outcome == "fail",
        last_finished_at=last.finished_at if last else None,
        last_duration=last.duration if last else None,
        last_exit_status=last.exit_status if last else None,
        running_since=newest.started_at if newest and newest.outcome == "running" else None,
    )


async def jobs_with_pings(session: AsyncSession, job_ids: Sequence[int]) -> set[int]:
    """Which of these jobs have pinged at all."""
    if not job_ids:
        return set()
    found = await session.scalars(
        select(Job.id).where(
            Job.id.in_(job_ids), select(Ping.id).where(Ping.job_id == Job.id).exists()
        )
    )
    return set(found)


async def run_facts_of(session: AsyncSession, job_ids: Sequence[int]) -> dict[int, RunFacts]:
    """Run facts of the jobs that have pings, from each one's newest PINGS_JUDGED pings."""
    if not job_ids:
        return {}
    if is_postgresql(session):
        # One index scan on (job_id, id) per job, however many pings it has.
        newest = (
            select(Ping.id)
            .where(Ping.job_id == Job.id)
            .order_by(Ping.id.desc())
            .limit(PINGS_JUDGED)
            .lateral()
        )
        ids = select(newest.c.id).select_from(Job).join(newest, true()).where(Job.id.in_(job_ids))
    else:
        rank = func.row_number().over(partition_by=Ping.job_id, order_by=Ping.id.desc())
        ranked = select(Ping.id, rank.label("rank")).where(Ping.job_id.in_(job_ids)).subquery()
        ids = select(ranked.c.id).where(ranked.c.rank <= PINGS_JUDGED)
    pings = await session.scalars(select(Ping).where(Ping.id.in_(ids)).order_by(Ping.id))
    by_job: dict[int, list[Ping]] = {}
    for ping in pings:
        by_job.setdefault(ping.job_id, []).append(ping)
    return {job_id: run_facts(runs_of(rows)) for job_id, rows in by_job.items()}
