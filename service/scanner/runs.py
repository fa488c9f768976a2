"""The record of scans (scan_runs) as a whole: why a scan failed, and whether the scanner keeps
failing. What each job's scan found is the scanner's business, not this module's."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import database_unavailable, describe_error
from service.models import ScanRun

# Failed scans whose error starts with this are the database's fault, not the scanner's: the
# readiness check reports the database while it is away and does not hold them against the
# scanner once it is back.
DATABASE_UNAVAILABLE = "database unavailable: "
FAILED = ("failed", "abandoned")
SUCCEEDED = ("finished", "interrupted")
# Readiness fails once this many scans in a row failed (a single failure may be bad luck).
FAILING_AFTER = 3


def run_error(exc: BaseException) -> str:
    """The one line stored on a scan run that `exc` stopped."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled before the end (the service was stopping)"
    if database_unavailable(exc):
        return DATABASE_UNAVAILABLE + describe_error(exc)
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
