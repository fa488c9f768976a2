"""The restore-points digest a job's `report: {channel, every}` asks for, through the
notification outbox.

Each job with a report has `report_due_at`. A due digest is claimed by a conditional UPDATE
that moves `report_due_at` on (checked by its rowcount), and its outbox event is inserted in
the same transaction: however many replicas tick together, each digest is written once, and
the dispatcher delivers it like any notice (one delivery per channel, leased, retried, the
event id stable across retries: exactly once as far as receivers deduplicate on it).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.kinds import status_of
from service.db.engine import claimed
from service.db.models import Job, NotificationEvent
from service.notify.events import event_row
from service.store.restore_points import job_spec, restore_points, slot_summary

logger = logging.getLogger(__name__)

DIGEST_BATCH = 100  # digests written by one call at most
DIGEST_POINTS = 50  # backups listed by one digest (then "and N more")


def next_due(due: datetime, every: int, now: datetime) -> datetime:
    """The first `due + k × every` after `now` (k >= 1): a service down for weeks sends one
    digest, not one per missed period."""
    step = timedelta(seconds=every)
    missed = max(0, (now - due) // step)
    return due + (missed + 1) * step


async def digest_of(session: AsyncSession, job: Job, every: int, now: datetime) -> dict[str, Any]:
    """What a digest tells (Notice.digest): the backups made in the last `every` seconds, the
    retention slots now and the backups present in all."""
    start = now - timedelta(seconds=every)
    points = await restore_points(session, job, start=start, end=now, now=now, limit=DIGEST_POINTS)
    spec = points.spec
    retention = spec.retention if spec is not None else None
    return {
        "from": start.isoformat(),
        "to": now.isoformat(),
        "timezone": points.timezone,
        "present": job.artifact_count,
        "retention": None if retention is None else retention.model_dump(mode="json"),
        "slots": slot_summary(points.slots),
        "missing": [slot.label for slot in reversed(points.slots) if slot.state == "missing"],
        "points": [
            {
                "path": point.path,
                "size": point.size,
                "mtime": point.mtime.isoformat(),
                "first_seen": point.first_seen.isoformat(),
                "slots": list(point.slots),
                "verification": point.verification,
            }
            for point in points.items
        ],
        # Not counted exactly past the limit: "more" says at least one more.
        "more": 1 if points.truncated else 0,
    }


async def send_due_digests(session: AsyncSession, now: datetime) -> list[str]:
    """Write the outbox event of every digest due at `now` (at most DIGEST_BATCH), each with
    its claim in one transaction; returns the jobs' names. A paused job's digest is skipped
    (its next one is due a period later)."""
    due = (
        await session.scalars(
            select(Job)
            .where(Job.report_due_at.is_not(None), Job.report_due_at <= now)
            .order_by(Job.report_due_at, Job.id)
            .limit(DIGEST_BATCH)
        )
    ).all()
    await session.commit()
    sent = []
    for job in due:
        spec = job_spec(job)
        was = job.report_due_at
        report = spec.report if spec is not None else None
        moved = None if report is None or was is None else next_due(was, report.every, now)
        claim = update(Job).where(Job.id == job.id, Job.report_due_at == was)
        if not await claimed(session, claim.values(report_due_at=moved)):
            await session.rollback()  # another replica took it
            continue
        if report is None or job.paused:  # no report (any more), or a paused job: none sent
            await session.commit()
            continue
        digest = await digest_of(session, job, report.every, now)
        row = event_row(
            job_id=job.id, job_name=job.name, kind="digest", status=status_of(job.status),
            previous_status=None, reasons=list(job.reasons or []),
            latest_artifact=job.latest_artifact, channels=[report.channel], now=now,
            digest=digest,
        )  # fmt: skip
        await session.execute(insert(NotificationEvent).values(**row))
        await session.commit()
        logger.info("digest written", extra={"job": job.name, "channel": report.channel})
        sent.append(job.name)
    return sent
