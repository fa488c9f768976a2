"""The SQL of verification: the per-artifact results and their leases (artifact_verifications),
the repository checks (repository_checks), and the facts a judgement reads from them.

A verifier leases what it verifies: a claim is a conditional UPDATE of the row (its lease free,
no other artifact of the job leased; the claims of one job serialized), checked by its
rowcount, so several replicas verify each artifact once and one artifact per job at a time;
everything it writes afterwards is fenced by the lease it holds. A verifier that dies leaves a
lease that runs out: the artifact is verified again by the next one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, literal, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from service.core.rules import RepositoryFact, VerificationFacts, VerifiedFact
from service.db.engine import claimed, is_postgresql
from service.db.models import Artifact, ArtifactVerification, Job, RepositoryCheck

# The newest present artifacts of each job whose results a judgement reads: the newest, and
# those before it for a newest file still being written.
FACTS_PER_JOB = 3
# Due artifacts read per job when looking for work (the newest not yet settled are skipped).
CANDIDATES_PER_JOB = 5


@dataclass(frozen=True, slots=True)
class DueArtifact:
    """An artifact whose verification is due, as its last listing recorded it."""

    artifact_id: int
    job_id: int
    path: str
    size: int
    mtime: datetime


@dataclass(frozen=True, slots=True)
class Result:
    """What one verification found, as recorded."""

    outcome: str  # service.core.rules.VERIFY_*
    detail: str
    sidecar: str | None
    bytes_read: int
    seconds: float
    digest: str | None


def _insert(session: AsyncSession, table: Any) -> Any:
    return (pg_insert if is_postgresql(session) else sqlite_insert)(table)


async def add_missing(session: AsyncSession, job_ids: Collection[int]) -> None:
    """Give every present artifact of these jobs a verification row (due at once)."""
    if not job_ids:
        return
    verification = ArtifactVerification
    missing = (
        select(
            Artifact.id, Artifact.job_id, literal(""), literal(0), literal(0.0), Artifact.first_seen
        )
        .where(Artifact.job_id.in_(job_ids), Artifact.gone_since.is_(None))
        .where(~exists().where(verification.artifact_id == Artifact.id))
    )
    statement = _insert(session, verification).from_select(
        ["artifact_id", "job_id", "detail", "bytes_read", "seconds", "due_at"], missing
    )
    await session.execute(statement.on_conflict_do_nothing())


def _free(now: datetime) -> Any:
    return or_(ArtifactVerification.lease_until.is_(None), ArtifactVerification.lease_until < now)


def _job_busy(now: datetime, other_than: Any) -> Any:
    """Another artifact of the same job is leased: one artifact per job at a time."""
    other = aliased(ArtifactVerification)
    return (
        exists()
        .where(other.job_id == ArtifactVerification.job_id, other.lease_until >= now)
        .where(other.artifact_id != other_than)
    )


async def due_artifacts(
    session: AsyncSession, settle: Mapping[int, int], now: datetime, limit: int
) -> list[DueArtifact]:
    """Up to `limit` artifacts to verify now, at most one per job, newest first: settled
    (`settle[job_id]` seconds old), not leased, their job holding no lease, and due (never
    verified, `every` passed, or rewritten since the version verified) and not waiting for a
    retry (it changed while it was read)."""
    if not settle:
        return []
    v, a = ArtifactVerification, Artifact
    due = and_(
        or_(
            v.due_at <= now,
            and_(v.verified_at.is_not(None), or_(v.size != a.size, v.mtime != a.mtime)),
        ),
        or_(v.retry_at.is_(None), v.retry_at <= now),
    )
    rank = func.row_number().over(partition_by=a.job_id, order_by=(a.mtime.desc(), a.id.desc()))
    ranked = (
        select(a.id, a.job_id, a.path, a.size, a.mtime, rank.label("rank"))
        .join(v, v.artifact_id == a.id)
        .where(a.job_id.in_(settle), a.gone_since.is_(None), due, _free(now))
        .where(~_job_busy(now, v.artifact_id))
        .subquery()
    )
    rows = (
        await session.execute(
            select(ranked)
            .where(ranked.c.rank <= CANDIDATES_PER_JOB)
            .order_by(ranked.c.mtime.desc(), ranked.c.id.desc())
        )
    ).all()
    chosen: dict[int, DueArtifact] = {}
    for row in rows:
        if row.job_id in chosen or row.mtime > now - timedelta(seconds=settle[row.job_id]):
            continue
        chosen[row.job_id] = DueArtifact(row.id, row.job_id, row.path, row.size, row.mtime)
        if len(chosen) >= limit:
            break
    return list(chosen.values())


# The class of the per-job advisory locks a claim takes on PostgreSQL ("bm" and a counter, as
# the keys of service.db.engine; the job id is the lock's second key).
JOB_CLAIM_LOCK = 0x626D_0003


async def claim(
    session: AsyncSession, job_id: int, artifact_id: int, now: datetime, lease_until: datetime
) -> bool:
    """Lease the artifact until `lease_until`: True when this caller won it. The claims of one
    job are serialized (PostgreSQL: a transaction-level advisory lock on the job; SQLite: the
    caller holds the write lock), so that no two verifiers, on any replica, read two artifacts
    of one job at a time: each sees the other's lease in its condition."""
    if is_postgresql(session):
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:class, :job)"),
            {"class": JOB_CLAIM_LOCK, "job": job_id},
        )
    v = ArtifactVerification
    return await claimed(
        session,
        update(v)
        .where(v.artifact_id == artifact_id, _free(now), ~_job_busy(now, artifact_id))
        .values(lease_until=lease_until),
    )


async def extend(
    session: AsyncSession, artifact_id: int, held: datetime, lease_until: datetime
) -> bool:
    """Move the lease held (`held`) on to `lease_until`; False when it is no longer ours."""
    v = ArtifactVerification
    return await claimed(
        session,
        update(v)
        .where(v.artifact_id == artifact_id, v.lease_until == held)
        .values(lease_until=lease_until),
    )


async def record(
    session: AsyncSession,
    artifact: DueArtifact,
    held: datetime,
    result: Result,
    *,
    verified_at: datetime,
    due_at: datetime,
) -> bool:
    """Record the verification of the version `artifact` describes and free the lease held;
    False (nothing written) when the lease was lost."""
    v = ArtifactVerification
    return await claimed(
        session,
        update(v)
        .where(v.artifact_id == artifact.artifact_id, v.lease_until == held)
        .values(
            size=artifact.size,
            mtime=artifact.mtime,
            verified_at=verified_at,
            outcome=result.outcome,
            detail=result.detail,
            sidecar=result.sidecar,
            bytes_read=result.bytes_read,
            seconds=result.seconds,
            digest=result.digest,
            due_at=due_at,
            retry_at=None,
            lease_until=None,
        ),
    )


async def release(
    session: AsyncSession, artifact_id: int, held: datetime, retry_at: datetime | None
) -> None:
    """Give the lease back without a result: the artifact is verified again when due, and not
    before `retry_at` (None: at once)."""
    v = ArtifactVerification
    await session.execute(
        update(v)
        .where(v.artifact_id == artifact_id, v.lease_until == held)
        .values(lease_until=None, retry_at=retry_at)
    )


NOT_YET = "not_yet"


def state_of(row: ArtifactVerification | None, size: int, mtime: datetime) -> str:
    """An artifact's verification as shown (API, page): the outcome of its last verification
    when that was of the version present (same size and time), else NOT_YET."""
    if row is None or row.verified_at is None or row.outcome is None:
        return NOT_YET
    if row.size != size or row.mtime != mtime:
        return NOT_YET  # rewritten since: the result was of another version
    return row.outcome


async def results_of(
    session: AsyncSession, artifact_ids: Collection[int]
) -> dict[int, ArtifactVerification]:
    """The verification rows of these artifacts, by artifact id (none for an artifact never
    picked up)."""
    if not artifact_ids:
        return {}
    rows = await session.scalars(
        select(ArtifactVerification).where(ArtifactVerification.artifact_id.in_(artifact_ids))
    )
    return {row.artifact_id: row for row in rows}


async def among_newest(session: AsyncSession, artifact: DueArtifact) -> bool:
    """Whether the artifact is one of its job's FACTS_PER_JOB newest present ones: the ones
    whose results a judgement reads (an older one's result changes no verdict)."""
    a = Artifact
    newer = await session.scalar(
        select(func.count())
        .select_from(a)
        .where(a.job_id == artifact.job_id, a.gone_since.is_(None))
        .where(
            or_(
                a.mtime > artifact.mtime,
                and_(a.mtime == artifact.mtime, a.id > artifact.artifact_id),
            )
        )
    )
    return int(newer or 0) < FACTS_PER_JOB


async def facts_of(session: AsyncSession, job_ids: Collection[int]) -> dict[int, VerificationFacts]:
    """What verification recorded for each job, as its judgement reads it: its newest present
    artifacts' results (FACTS_PER_JOB, by path) and its repository's last check."""
    if not job_ids:
        return {}
    a, v = Artifact, ArtifactVerification
    rank = func.row_number().over(partition_by=a.job_id, order_by=(a.mtime.desc(), a.id.desc()))
    newest = (
        select(a.id, a.job_id, a.path, a.first_seen, rank.label("rank"))
        .where(a.job_id.in_(job_ids), a.gone_since.is_(None))
        .subquery()
    )
    rows = (
        await session.execute(
            select(
                newest.c.job_id,
                newest.c.path,
                newest.c.first_seen,
                v.size,
                v.mtime,
                v.verified_at,
                v.outcome,
                v.detail,
                v.sidecar,
            )
            .outerjoin(v, v.artifact_id == newest.c.id)
            .where(newest.c.rank <= FACTS_PER_JOB)
        )
    ).all()
    artifacts: dict[int, dict[str, VerifiedFact]] = {}
    for row in rows:
        artifacts.setdefault(row.job_id, {})[row.path] = VerifiedFact(
            path=row.path,
            size=row.size,
            mtime=row.mtime,
            verified_at=row.verified_at,
            outcome=row.outcome,
            detail=row.detail or "",
            sidecar=row.sidecar,
            first_seen=row.first_seen,
        )
    checks = {
        row.job_id: RepositoryFact(row.checked_at, row.ok, row.detail, row.damaged)
        for row in await session.scalars(
            select(RepositoryCheck).where(RepositoryCheck.job_id.in_(job_ids))
        )
    }
    return {
        job_id: VerificationFacts(artifacts.get(job_id, {}), checks.get(job_id))
        for job_id in job_ids
        if job_id in artifacts or job_id in checks
    }


# --- repository checks ----------------------------------------------------------------------


def _check_free(now: datetime) -> Any:
    return or_(RepositoryCheck.lease_until.is_(None), RepositoryCheck.lease_until < now)


async def due_checks(session: AsyncSession, job_ids: Collection[int], now: datetime) -> list[int]:
    """The jobs (of these) whose repository check is due now and not leased: a job without a
    row is given one, due at once."""
    if not job_ids:
        return []
    missing = select(
        Job.id, literal(""), literal(0.0), literal(False), literal(now, RepositoryCheck.due_at.type)
    )
    missing = missing.where(Job.id.in_(job_ids)).where(
        ~exists().where(RepositoryCheck.job_id == Job.id)
    )
    statement = _insert(session, RepositoryCheck).from_select(
        ["job_id", "detail", "seconds", "damaged", "due_at"], missing
    )
    await session.execute(statement.on_conflict_do_nothing())
    rows = await session.scalars(
        select(RepositoryCheck.job_id)
        .where(RepositoryCheck.job_id.in_(job_ids), RepositoryCheck.due_at <= now)
        .where(_check_free(now))
        .order_by(RepositoryCheck.due_at)
    )
    return list(rows)


async def claim_check(
    session: AsyncSession, job_id: int, now: datetime, lease_until: datetime
) -> bool:
    """Lease the job's repository check until `lease_until`: True when this caller won it."""
    check = RepositoryCheck
    return await claimed(
        session,
        update(check)
        .where(check.job_id == job_id, check.due_at <= now, _check_free(now))
        .values(lease_until=lease_until),
    )


async def record_check(
    session: AsyncSession,
    job_id: int,
    held: datetime,
    *,
    ok: bool,
    damaged: bool,
    detail: str,
    seconds: float,
    checked_at: datetime,
    due_at: datetime,
) -> bool:
    """Record a repository check and free the lease held; False when the lease was lost."""
    check = RepositoryCheck
    return await claimed(
        session,
        update(check)
        .where(check.job_id == job_id, check.lease_until == held)
        .values(
            ok=ok,
            damaged=damaged,
            detail=detail,
            seconds=seconds,
            checked_at=checked_at,
            due_at=due_at,
            lease_until=None,
        ),
    )


async def release_check(session: AsyncSession, job_id: int, held: datetime) -> None:
    """Give the lease back without a result: the check is due again at once."""
    check = RepositoryCheck
    await session.execute(
        update(check)
        .where(check.job_id == job_id, check.lease_until == held)
        .values(lease_until=None)
    )


async def check_of(session: AsyncSession, job_id: int) -> RepositoryCheck | None:
    """The job's repository check row (None: never due yet)."""
    return await session.get(RepositoryCheck, job_id)
