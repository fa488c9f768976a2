"""The record of scans (scan_runs) as a whole: why a scan failed, whether the scanner keeps
failing, and the heartbeat that lets a dead scan be closed. What each job's scan found is the
scanner's business, not this module's.

record_start and record_finish write a scan's row; the scan's own work is recorded by
service.scanner.writer, job by job.

A scan whose process is killed (SIGKILL, OOM, power loss) cannot close its own row. Every
running scan moves its `heartbeat_at` every HEARTBEAT_SECONDS; each new scan closes, as
`abandoned`, the running scans with no sign of life (heartbeat, or start) for LEASE. Several
replicas share the table: a live scan on another replica keeps beating, so it is never closed,
however long it runs; the lease is ten beats, which covers clock skew between replicas, a
database hiccup and a busy event loop.

Closing a scan (record_finish, close_abandoned) also adds it to scan_counters, in the same
transaction: the totals /metrics exposes as counters cost a few rows to read however many scans
were ever run, and stay put when retention deletes old scans.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.db.engine import claimed, is_postgresql
from service.db.errors import (
    database_unavailable,
    describe_database_error,
    describe_error,
    log_failure,
)
from service.db.models import ScanCounter, ScanRun
from service.scanner.state import ScanReport

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30.0
LEASE = timedelta(seconds=10 * HEARTBEAT_SECONDS)

# Failed scans whose error starts with this are the database's fault, not the scanner's: the
# readiness check reports the database while it is away and does not hold them against the
# scanner once it is back.
DATABASE_UNAVAILABLE = "database unavailable: "
FAILED = ("failed", "abandoned")
SUCCEEDED = ("finished", "interrupted")
# Readiness fails once this many scans in a row failed (a single failure may be bad luck).
FAILING_AFTER = 3

# The upper bounds (seconds) of the scan duration histogram's buckets.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
# scan_counters' names: sums over every closed scan, and the end of the last `finished` one.
SCANS, FAILED_SCANS, ERRORS, ARTIFACTS_NEW = "scans", "failed", "errors", "artifacts_new"
DURATION_SUM = "duration_seconds_sum"
LAST_FINISHED = "last_finished_timestamp"


def bucket_name(le: float) -> str:
    return f"duration_le_{le:g}"


def contribution(
    status: str, started: datetime, finished: datetime, errors: int, artifacts_new: int
) -> Counter[str]:
    """What one closed scan adds to the sums of scan_counters (LAST_FINISHED aside)."""
    seconds = (finished - started).total_seconds()
    added: Counter[str] = Counter(
        {SCANS: 1, DURATION_SUM: seconds, ERRORS: errors, ARTIFACTS_NEW: artifacts_new,
         FAILED_SCANS: 1 if status in FAILED else 0}
    )  # fmt: skip
    for le in DURATION_BUCKETS:
        added[bucket_name(le)] = 1 if seconds <= le else 0
    return added


async def add_to_counters(
    session: AsyncSession, sums: Mapping[str, float], last_finished: datetime | None = None
) -> None:
    """Add `sums` to scan_counters (and move LAST_FINISHED forward to `last_finished`), in the
    caller's transaction. Rows are upserted in name order in one statement: two transactions
    doing this at once wait for each other instead of deadlocking."""
    rows: list[dict[str, Any]] = [
        {"name": name, "value": float(value)} for name, value in sorted(sums.items())
    ]
    insert = postgresql.insert if is_postgresql(session) else sqlite.insert
    if rows:
        statement = insert(ScanCounter).values(rows)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[ScanCounter.name],
                set_={"value": ScanCounter.value + statement.excluded.value},
            )
        )
    if last_finished is not None:
        statement = insert(ScanCounter).values(name=LAST_FINISHED, value=last_finished.timestamp())
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[ScanCounter.name],
                set_={
                    "value": case(
                        (statement.excluded.value > ScanCounter.value, statement.excluded.value),
                        else_=ScanCounter.value,
                    )
                },
            )
        )


async def read_counters(session: AsyncSession) -> dict[str, float]:
    """scan_counters by name (empty before the first scan closes)."""
    rows = await session.execute(select(ScanCounter.name, ScanCounter.value))
    return {name: float(value) for name, value in rows.all()}


async def _closed_sums(session: AsyncSession, run_id: int) -> Counter[str]:
    """What the scan already added to scan_counters: nothing while it runs."""
    row = (
        await session.execute(
            select(
                ScanRun.status, ScanRun.started_at, ScanRun.finished_at, ScanRun.errors,
                ScanRun.artifacts_new,
            ).where(ScanRun.id == run_id).with_for_update()
        )
    ).one_or_none()  # fmt: skip
    if row is None or row.finished_at is None:
        return Counter()
    return contribution(row.status, row.started_at, row.finished_at, row.errors, row.artifacts_new)


def run_status(exc: BaseException) -> str:
    """The status of a scan run that `exc` stopped. Cancelled (the service stopping after its
    grace) is `interrupted`, as a stop within the grace is: it says nothing of the scanner, so
    it must not count toward FAILING_AFTER and make /health/ready fail."""
    return "interrupted" if isinstance(exc, asyncio.CancelledError) else "failed"


def run_error(exc: BaseException, database_url: str | URL | None = None) -> str:
    """The one line stored on a scan run that `exc` stopped (a full disk named as such)."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled before the end (the service was stopping)"
    if database_unavailable(exc):
        return DATABASE_UNAVAILABLE + describe_database_error(exc, database_url)
    return f"internal error: {describe_error(exc)} (a bug: the traceback is in the service log)"


async def failures_in_a_row(session: AsyncSession, page: int = 50) -> int:
    """How many scans failed (or were abandoned) since the last one that did not, leaving out
    failures for want of a database. Read newest first by the primary key, a page at a time,
    down to that last good scan: the cost is the streak's, never the history's (a count over
    `id > last good` was planned as a scan of every row when statistics were missing)."""
    count = 0
    before: int | None = None
    while True:
        query = select(ScanRun.id, ScanRun.status, ScanRun.error)
        if before is not None:
            query = query.where(ScanRun.id < before)
        rows = (await session.execute(query.order_by(ScanRun.id.desc()).limit(page))).all()
        for _, status, error in rows:
            if status in SUCCEEDED:
                return count
            if status in FAILED and not (error or "").startswith(DATABASE_UNAVAILABLE):
                count += 1
        if len(rows) < page:
            return count
        before = rows[-1].id


async def record_start(
    session: AsyncSession, trigger: str, started: datetime, replica: str | None = None
) -> int:
    """Record a scan starting now (committed), run by `replica` (in a fleet): its id. A scan
    whose process died cannot close its own row: each new scan closes those first
    (close_abandoned), and logs them."""
    abandoned = await close_abandoned(session, started)
    run = ScanRun(
        trigger=trigger, status="running", started_at=started, replica=replica, jobs_scanned=0,
        artifacts_new=0, artifacts_changed=0, artifacts_gone=0, errors=0, error_details=[],
    )  # fmt: skip
    session.add(run)
    await session.commit()
    run_id = run.id  # a rollback later would expire `run`: never touch it again
    for scan_id in abandoned:
        logger.warning("abandoned scan closed", extra={"scan_id": scan_id, "by": run_id})
    return run_id


async def record_finish(
    session: AsyncSession, run_id: int, report: ScanReport, finished: datetime
) -> None:
    """Close the scan's row with its status, totals and the first 100 jobs' errors, in a
    transaction of its own (whatever the session was doing is rolled back first)."""
    with suppress(Exception):
        await session.rollback()
    errors = [{"job": job.name, "message": job.error} for job in report.jobs if job.error]
    totals = {
        "jobs_scanned": len(report.jobs),
        "artifacts_new": sum(job.new for job in report.jobs),
        "artifacts_changed": sum(job.changed for job in report.jobs),
        "artifacts_gone": sum(job.gone for job in report.jobs),
        "errors": len(errors),
    }
    values = {"status": report.status, "finished_at": finished, "error": report.error, **totals}
    # A scan another replica closed as abandoned meanwhile was counted then: what it added is
    # taken back, and this scan's true outcome added instead.
    before = await _closed_sums(session, run_id)
    if await claimed(
        session,
        update(ScanRun).where(ScanRun.id == run_id).values(error_details=errors[:100], **values),
    ):
        started = await session.scalar(select(ScanRun.started_at).where(ScanRun.id == run_id))
        assert started is not None
        sums = contribution(
            report.status, started, finished, totals["errors"], totals["artifacts_new"]
        )
        sums.subtract(before)
        last = finished if report.status == "finished" else None
        await add_to_counters(session, sums, last)
    await session.commit()
    failure = {"error": report.error} if report.error else {}
    logger.info(
        "scan finished", extra={"scan_id": run_id, "status": report.status, **totals, **failure}
    )


def abandoned_error(lease: timedelta = LEASE) -> str:
    minutes = lease.total_seconds() / 60
    return (
        f"abandoned: no sign of life from the process running it for {minutes:g} min (killed, "
        "crashed, or cut off from the database); closed by a later scan"
    )


async def close_abandoned(
    session: AsyncSession, now: datetime, lease: timedelta = LEASE
) -> list[int]:
    """Mark as `abandoned` the running scans with no sign of life since `now - lease`; their
    finished_at is that last sign. In the caller's transaction; returns their ids."""
    last_sign = func.coalesce(ScanRun.heartbeat_at, ScanRun.started_at)
    stale = (ScanRun.status == "running", last_sign < now - lease)
    rows = (await session.execute(select(ScanRun.id).where(*stale))).scalars().all()
    closed = []
    sums: Counter[str] = Counter()
    for run_id in rows:
        # Checked again by the UPDATE itself: a heartbeat that landed meanwhile keeps the scan
        # open, and of two scans closing the same row only one counts it.
        if await claimed(
            session,
            update(ScanRun)
            .where(ScanRun.id == run_id, *stale)
            .values(status="abandoned", finished_at=last_sign, error=abandoned_error(lease)),
        ):
            closed.append(run_id)
            sums.update(await _closed_sums(session, run_id))
    # Once, after every claim: a scan finishing meanwhile never waits on a row lock held
    # here while holding the counters (a deadlock).
    await add_to_counters(session, sums)
    return closed


async def keep_alive(
    engine: AsyncEngine, run_id: int, clock: Callable[[], datetime],
    every: float = HEARTBEAT_SECONDS,
) -> None:  # fmt: skip
    """Move the run's heartbeat every `every` seconds, until cancelled. Its own connection: the
    scan's session may be in the middle of a transaction, or waiting on a hung source."""
    while True:
        await asyncio.sleep(every)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    update(ScanRun)
                    .where(ScanRun.id == run_id, ScanRun.status == "running")
                    .values(heartbeat_at=clock())
                )
        except Exception as exc:  # the scan meets the same trouble and says so
            log_failure(logger, "scan heartbeat failed", exc, engine.url, scan_id=run_id)
