"""What the dashboard pages read: jobs worst first, recent sizes, a digest of the statuses."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, case, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.rules import STATUSES
from service.db.engine import is_postgresql
from service.db.models import Artifact, Job, JobCheck
from service.store.jobs import JobFilter, filtered

SPARK_POINTS = 30
CHART_POINTS = 200
# Worst first: what needs a person comes to the top.
STATUS_ORDER = {"critical": 0, "warning": 1, "unknown": 2, "pending": 3, "ok": 4, "paused": 5}


# What a dashboard row shows: plain rows, no ORM objects (2 000 of those cost ~0.1 s).
ROW_COLUMNS = (
    Job.id, Job.name, Job.status, Job.tags, Job.reasons, Job.latest_artifact, Job.next_check_at,
    Job.checked_at, Job.source,
)  # fmt: skip


async def jobs_worst_first(
    session: AsyncSession, where: JobFilter, *, limit: int, offset: int
) -> tuple[list[Row[Any]], int]:
    """A page of the jobs matching `where`, worst first then by name (a stable order: names
    are unique), and how many match in all."""
    postgresql = is_postgresql(session)
    rank = case(STATUS_ORDER, value=Job.status, else_=len(STATUS_ORDER))
    # The order is found on narrow rows (status, name, id: ix_jobs_status_name alone when
    # nothing filters), and only the page's wide rows are read: sorting every wide row to
    # reach the last page of 10 000 took 57 ms and spilled to disk, this 15.
    page = (
        filtered(select(Job.id, rank.label("rank")), postgresql, where)
        .order_by(rank, Job.name)
        .limit(limit)
        .offset(offset)
        .subquery()
    )
    count = filtered(select(func.count()).select_from(Job), postgresql, where)
    query = (
        select(*ROW_COLUMNS, count.scalar_subquery().label("total"))
        .join(page, page.c.id == Job.id)
        .order_by(page.c.rank, Job.name)
    )
    rows = list(await session.execute(query))
    if rows:
        return rows, rows[0].total
    return [], (await session.scalar(count) or 0) if offset else 0


async def all_tags(session: AsyncSession) -> list[str]:
    """Every tag of every job, sorted. Read as the distinct lists of tags (jobs share a few:
    at 10 000 jobs, 3 ms of PostgreSQL against 5-7 ms for every tag of every job, and 30 ms
    under load, when it planned that in parallel)."""
    lists = await session.scalars(select(Job.tags).distinct())
    return sorted({str(tag) for tags in lists for tag in tags or ()})


async def recent_sizes(
    session: AsyncSession, job_ids: Sequence[int], per_job: int = SPARK_POINTS
) -> dict[int, list[int]]:
    """The sizes of each job's newest present artifacts, oldest first; one row a job."""
    if not job_ids:
        return {}
    if is_postgresql(session):
        # One index scan per job on (job_id, mtime, id), however many artifacts it has.
        rows = await session.execute(
            text(
                "SELECT j.id, ARRAY(SELECT a.size FROM artifacts a WHERE a.job_id = j.id"
                " AND a.gone_since IS NULL ORDER BY a.mtime DESC, a.id DESC LIMIT :n)"
                " FROM jobs j WHERE j.id = ANY(:ids)"
            ),
            {"n": per_job, "ids": list(job_ids)},
        )
        return {job_id: list(sizes[::-1]) for job_id, sizes in rows if sizes}
    newest_first = (Artifact.mtime.desc(), Artifact.id.desc())
    rank = func.row_number().over(partition_by=Artifact.job_id, order_by=newest_first)
    ranked = (
        select(Artifact.job_id, Artifact.size, rank.label("rank"))
        .where(Artifact.gone_since.is_(None), Artifact.job_id.in_(job_ids))
        .subquery()
    )
    query = (
        select(ranked.c.job_id, ranked.c.size)
        .where(ranked.c.rank <= per_job)
        .order_by(ranked.c.job_id, ranked.c.rank)
    )
    sizes: dict[int, list[int]] = defaultdict(list)
    for job_id, size in await session.execute(query):
        sizes[job_id].append(size)
    return {job_id: values[::-1] for job_id, values in sizes.items()}


async def chart_artifacts(session: AsyncSession, job_id: int) -> list[Artifact]:
    """The job's newest artifacts (vanished ones too), oldest first, for the size chart."""
    rows = await session.scalars(
        select(Artifact)
        .where(Artifact.job_id == job_id)
        .order_by(Artifact.mtime.desc(), Artifact.id.desc())
        .limit(CHART_POINTS)
    )
    return list(rows)[::-1]


# The reasons about a file's size: only these mark a file on the size chart (a late job's newest
# file is not the problem, the file that never came is).
SIZE_CODES = frozenset({"too_small", "too_large", "size_drop"})


def has_size_reason(reasons: Sequence[dict[str, Any]] | None) -> bool:
    return any(reason.get("code") in SIZE_CODES for reason in reasons or ())


async def flagged_paths(session: AsyncSession, job_id: int) -> set[str]:
    """Paths of artifacts that were the newest when the job was judged with a size reason."""
    rows = await session.execute(
        select(JobCheck.latest_artifact, JobCheck.reasons).where(
            JobCheck.job_id == job_id, JobCheck.status.in_(("critical", "warning"))
        )
    )
    return {
        latest["path"]
        for latest, reasons in rows
        if latest and latest.get("path") and has_size_reason(reasons)
    }


async def status_summary(session: AsyncSession) -> tuple[dict[str, int], str]:
    """How many jobs are in each status (every status present, zeros included), and the
    digest (status_digest), from one pass over the jobs."""
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    changed: list[datetime] = []
    updated: list[datetime] = []
    query = select(
        Job.status, func.count(), func.max(Job.status_changed_at), func.max(Job.updated_at)
    ).group_by(Job.status)
    for status, count, last_changed, last_updated in await session.execute(query):
        counts[status] = count
        updated.append(last_updated)
        if last_changed is not None:
            changed.append(last_changed)
    return counts, _digest(
        sum(counts.values()), max(changed, default=None), max(updated, default=None)
    )


async def status_digest(session: AsyncSession) -> str:
    """Changes whenever a job changes status, appears or goes (the page then refreshes)."""
    return (await status_summary(session))[1]


def _digest(count: int, changed: datetime | None, updated: datetime | None) -> str:
    text = f"{count}|{changed}|{updated}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
