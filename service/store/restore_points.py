"""Restore points: the backups of a job present in a date range, and the retention slots
(service.core.retention_slots) each one is kept for. What an auditor asks for, and what the
job page's calendar strip and the digest show.

Three queries at most: the present artifacts in the range (newest first, bounded), when the
job declares a retention policy the times of the present artifacts since its oldest slot began
(the index on (job_id, mtime) serves both), and when it verifies its files their results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.jobspec import JobSpec, parse_job
from service.core.retention_slots import Slot, retention_slots, slots_of, window_start
from service.db.models import Artifact, Job
from service.store import verifications
from service.store.jobs import stored_declaration
from service.store.verifications import NOT_YET


@dataclass(frozen=True, slots=True)
class RestorePoint:
    """One backup present: where, how big, when written and first seen, the slots it is kept
    for, and what verification found of this version of it (None: the job verifies no files;
    `not_yet`: not verified yet, or rewritten since)."""

    path: str
    size: int
    mtime: datetime
    first_seen: datetime
    slots: tuple[str, ...]
    verification: str | None = None
    verified_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RestorePoints:
    """A job's restore points in [start, end), newest first, and its retention slots now."""

    job: str
    start: datetime
    end: datetime
    timezone: str
    spec: JobSpec | None
    items: list[RestorePoint] = field(default_factory=list)
    slots: tuple[Slot, ...] = ()
    truncated: bool = False  # more than `limit` backups in the range: narrow it


def job_spec(job: Job) -> JobSpec | None:
    """The job's stored declaration, validated (None: one this version cannot read)."""
    try:
        return parse_job({"name": job.name, **stored_declaration(job)})
    except ValidationError:
        return None


async def job_slots(
    session: AsyncSession, job: Job, spec: JobSpec, now: datetime
) -> tuple[Slot, ...]:
    """The retention slots of the job at `now` (nothing when it declares no policy): one query
    of the times of its present artifacts since the oldest slot began."""
    policy = spec.retention
    since = None if policy is None else window_start(policy, schedule=spec.schedule, now=now)
    if policy is None or since is None:
        return ()
    times = list(
        await session.scalars(
            select(Artifact.mtime)
            .where(Artifact.job_id == job.id, Artifact.gone_since.is_(None))
            .where(Artifact.mtime >= since)
            .order_by(Artifact.mtime)
        )
    )
    return retention_slots(
        policy, times, schedule=spec.schedule, grace=spec.grace, created_at=job.created_at, now=now
    )


async def restore_points(
    session: AsyncSession, job: Job, *, start: datetime, end: datetime, now: datetime, limit: int
) -> RestorePoints:
    """The job's backups present with a time in [start, end), newest first, at most `limit`."""
    spec = job_spec(job)
    slots = await job_slots(session, job, spec, now) if spec is not None else ()
    rows = (
        await session.execute(
            select(Artifact.id, Artifact.path, Artifact.size, Artifact.mtime, Artifact.first_seen)
            .where(Artifact.job_id == job.id, Artifact.gone_since.is_(None))
            .where(Artifact.mtime >= start, Artifact.mtime < end)
            .order_by(Artifact.mtime.desc(), Artifact.id.desc())
            .limit(limit + 1)
        )
    ).all()
    truncated, rows = len(rows) > limit, rows[:limit]
    verified = spec is not None and spec.verify is not None and spec.verify.files
    results = await verifications.results_of(session, [row.id for row in rows]) if verified else {}
    items = []
    for row in rows:
        result = results.get(row.id)
        state = verifications.state_of(result, row.size, row.mtime) if verified else None
        items.append(
            RestorePoint(
                row.path, row.size, row.mtime, row.first_seen,
                tuple(slot.label for slot in slots_of(row.mtime, slots)),
                verification=state,
                verified_at=result.verified_at if result and state != NOT_YET else None,
            )
        )  # fmt: skip
    zone = spec.schedule.zone.key if spec is not None else "UTC"
    return RestorePoints(job.name, start, end, zone, spec, items, slots, truncated=truncated)


def slot_summary(slots: Sequence[Slot]) -> dict[str, int]:
    """How many slots are kept, missing, not expected."""
    counts = {"kept": 0, "missing": 0, "not_expected": 0}
    for slot in slots:
        counts[slot.state] += 1
    return counts
