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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.db.engine import claimed
from service.db.errors import (
    database_unavailable,
    describe_database_error,
    describe_error,
    log_failure,
)
from service.db.models import ScanRun
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


async def failures_in_a_row(session: AsyncSession) -> int:
    """How many scans failed (or were abandoned) since the last one that did not, leaving out
    failures for want of a database."""
    last_good = (
        select(ScanRun.id)
        .where(ScanRun.status.in_(SUCCEEDED))
        .order_by(ScanRun.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    count = await session.scalar(
        select(func.count()).where(
            ScanRun.id > func.coalesce(last_good, 0),
            ScanRun.status.in_(FAILED),
            func.coalesce(ScanRun.error, "").not_like(DATABASE_UNAVAILABLE + "%"),
        )
    )
    return int(count or 0)


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
    await session.execute(
        update(ScanRun).where(ScanRun.id == run_id).values(error_details=errors[:100], **values)
    )
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
