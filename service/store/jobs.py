"""Operations on jobs, shared by the HTTP API and the jobs file: find, list, create, change,
delete, and read a job's artifacts and history. No HTTP here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    delete,
    exists,
    func,
    or_,
    select,
    tuple_,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.jobspec import DECLARATION_FIELDS, JobSpec, parse_job
from service.core.rules import STATUSES
from service.core.scan_options import ScanOptions
from service.core.visible import quote
from service.db.engine import is_postgresql, lock_for_write
from service.db.errors import database_unavailable
from service.db.models import (
    MAX_INT_ID,
    Artifact,
    Job,
    JobCheck,
    NotificationDelivery,
    NotificationEvent,
    ScanRun,
    new_ping_key,
)
from service.notify.events import (
    Hold,
    NoticeRule,
    NoticeState,
    Streak,
    owed_notice,
    renotify_at,
)
from service.notify.outbox import JOB_DELETED, cancel_notices_of
from service.notify.silences import SilenceLookup
from service.scanner.scanner import run_scanner
from service.store.silences import load_current

logger = logging.getLogger(__name__)

MAX_REF = 100  # a job's name is at most 100 characters, its id fewer digits


class JobNameTaken(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"a job named {quote(name)} already exists")
        self.name = name


@dataclass(frozen=True, slots=True)
class JobFilter:
    status: str | None = None
    tag: str | None = None
    q: str | None = None


def stored_declaration(job: Job) -> dict[str, Any]:
    return {name: getattr(job, name) for name in DECLARATION_FIELDS}


def first_report_at(spec: JobSpec, now: datetime) -> datetime | None:
    """When a job's first digest is due: one `report.every` from its declaration (None: no
    report declared)."""
    return None if spec.report is None else now + timedelta(seconds=spec.report.every)


def new_job(spec: JobSpec, now: datetime) -> Job:
    """A Job row for a fresh declaration, in the `pending` state."""
    return Job(
        name=spec.name,
        ping_key=new_ping_key(),
        **spec.declaration(),
        report_due_at=first_report_at(spec, now),
        created_at=now,
        updated_at=now,
        status="pending",
        reasons=[],
        artifact_count=0,
    )


def apply_declaration(job: Job, spec: JobSpec, now: datetime) -> bool:
    """Give `job` the declaration `spec`; False (and nothing touched) when it already has it."""
    declared = spec.declaration()
    if job.name == spec.name and stored_declaration(job) == declared:
        return False
    every = spec.notify.renotify_every
    if every != (job.notify or {}).get("renotify_every"):
        # A new reminder interval counts from now (the scanner keeps a running one).
        job.renotify_at = renotify_at(job.status, None, None, every, now)
    if declared["report"] != job.report:
        # A new digest cadence (or channel) counts from now.
        job.report_due_at = first_report_at(spec, now)
    job.name = spec.name
    for name, value in declared.items():
        setattr(job, name, value)
    job.updated_at = now
    job.next_check_at = now  # judge it again soon under the new declaration
    return True


def notice_rule(notify: Mapping[str, Any] | None) -> NoticeRule:
    """A stored declaration's notify.after and notify.for (validated when written; the
    defaults for one stored before they existed)."""
    notify = notify or {}
    return NoticeRule(int(notify.get("after") or 1), int(notify.get("for") or 0))


class JudgedJob(NoticeState, Protocol):
    """What held_notice reads of a job: a Job, or a row of its HELD_NOTICE_COLUMNS."""

    @property
    def checked_at(self) -> datetime | None: ...
    @property
    def notify(self) -> dict[str, Any]: ...


HELD_NOTICE_COLUMNS = tuple(
    dict.fromkeys(
        name
        for protocol in reversed(JudgedJob.__mro__)
        for name, member in vars(protocol).items()
        if isinstance(member, property)
    )
)  # what JudgedJob (and the NoticeState it extends) reads: never a list kept by hand


def held_notice(job: JudgedJob, silenced_until: datetime | None = None) -> Hold | None:
    """The notice the job owes and holds back, as its last judgement left it (pure rule:
    service.notify.events.owed_notice), `silenced_until` the end of the silence covering it
    now; None when nothing is held."""
    if job.checked_at is None:
        return None
    return owed_notice(
        status=job.status, reasons=job.reasons or [], notified=job.notified_status,
        notified_reasons=job.notified_reasons, streak=Streak(job.bad_since, job.bad_count or 0),
        rule=notice_rule(job.notify), judged_at=job.checked_at, silenced_until=silenced_until,
    )  # fmt: skip


async def silences_now(session: AsyncSession, now: datetime) -> SilenceLookup:
    """The silences as they stand at `now`, to ask for many jobs (one query)."""
    return SilenceLookup(await load_current(session, now), now)


def merge_patch(job: Job, changes: Mapping[str, Any]) -> dict[str, Any]:
    """The declaration after a PATCH: each given field replaces the stored one, and `null`
    brings back the field's default."""
    merged = {"name": job.name, **stored_declaration(job)}
    for name, value in changes.items():
        if value is None and name in JobSpec.model_fields and name != "name":
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def job_ref(ref: str) -> ColumnElement[bool]:
    """A job by id (all digits) or by name (names start with a letter)."""
    if not possible_ref(ref):
        return Job.id.is_(None)
    if ref.isdigit() and ref.isascii():
        return Job.id == int(ref) if int(ref) <= MAX_INT_ID else Job.id.is_(None)
    return Job.name == ref


def possible_ref(ref: str) -> bool:
    """Whether `ref` could be a job's id or name at all (no job has a NUL, PostgreSQL refuses
    it, and a name is at most MAX_REF characters)."""
    return len(ref) <= MAX_REF and "\0" not in ref


async def find_job(session: AsyncSession, ref: str, *, for_update: bool = False) -> Job | None:
    query = select(Job).where(job_ref(ref))
    if for_update:
        await lock_for_write(session)
        # The locked row as it is now, not a copy this session loaded before.
        query = query.with_for_update().execution_options(populate_existing=True)
    job: Job | None = await session.scalar(query)
    return job


def filtered(query: Select[Any], postgresql: bool, where: JobFilter) -> Select[Any]:
    if where.status is not None:
        query = query.where(Job.status == where.status)
    if where.tag is not None:
        if postgresql:
            query = query.where(type_coerce(Job.tags, JSONB).contains([where.tag]))
        else:
            each = func.json_each(Job.tags).table_valued("value")
            query = query.where(exists().where(each.c.value == where.tag))
    if where.q:
        pattern = "%" + where.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                Job.name.ilike(pattern, escape="\\"),
                Job.description.ilike(pattern, escape="\\"),
            )
        )
    return query


async def job_statuses(session: AsyncSession, where: JobFilter) -> list[tuple[str, str, list[str]]]:
    """(name, status, tags) of the jobs matching `where`, by name: what a badge or a public
    status page may tell of a job, and nothing else."""
    columns: tuple[Any, ...] = (Job.name, Job.status, Job.tags)
    query = filtered(select(*columns), is_postgresql(session), where)
    rows = await session.execute(query.order_by(Job.name))
    return [(name, status, list(tags or ())) for name, status, tags in rows]


TRIGRAM = 3  # pg_trgm finds a text of at least this many characters by its index


def by_name(postgresql: bool, where: JobFilter) -> ColumnElement[str]:
    """The order by name. A text search on PostgreSQL sorts its matches (found by the trigram
    indexes, migration 0015) instead of walking the name index until `limit` of them came by:
    matches often share a prefix ("mysql-..."), so that walk read thousands of rows before the
    first one (27 ms against 8 at 10 000 jobs). `name || ''` sorts as `name` does (same text,
    same collation) but no index gives it in order."""
    if postgresql and where.q and len(where.q) >= TRIGRAM:
        return Job.name + ""
    return Job.name.expression


async def list_jobs(
    session: AsyncSession,
    where: JobFilter,
    columns: Sequence[ColumnElement[Any]],
    *,
    limit: int,
    offset: int,
) -> tuple[list[Row[Any]], int]:
    """A page of jobs (by name) matching `where`, as rows of `columns` (plain rows, not ORM
    entities: the API reads a page for every request, and loading a whole Job costs several
    times what its columns do), and how many match in all."""
    postgresql = is_postgresql(session)
    count = filtered(select(func.count()).select_from(Job), postgresql, where)
    # One statement, one round trip: the count is computed once (an uncorrelated subquery)
    # and rides on each row of the page; only a page past the end needs it asked apart.
    page = filtered(select(*columns, count.scalar_subquery()), postgresql, where)
    rows = (
        await session.execute(page.order_by(by_name(postgresql, where)).limit(limit).offset(offset))
    ).all()
    if rows:
        return list(rows), rows[0][-1]
    return [], (await session.scalar(count) or 0) if offset else 0


async def status_counts(session: AsyncSession) -> dict[str, int]:
    """How many jobs are in each status (every status present, zeros included)."""
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for status, count in await session.execute(
        select(Job.status, func.count()).group_by(Job.status)
    ):
        counts[status] = count
    return counts


async def scan_job(
    session_factory: async_sessionmaker[AsyncSession],
    job_id: int,
    options: ScanOptions,
) -> Job | None:
    """Scan one job right now; the job as stored afterwards (None if it was deleted)."""
    async with session_factory() as session:
        job = await session.get(Job, job_id)
        if job is None:
            return None
        try:
            await run_scanner(session, options, trigger="api", names=[job.name])
        except Exception as exc:
            if database_unavailable(exc):
                raise  # a 503: the client may retry
            # A bug in the scanner, recorded on the scan run: the pause (or the request) still
            # happened, and the job is answered as it stands.
            logger.error("job scan failed", extra={"job": job.name}, exc_info=exc)
            await session.rollback()
        session.expunge_all()
        return await session.get(Job, job_id)


Action = Literal["pause", "resume", "scan"]


async def act_on_job(
    session_factory: async_sessionmaker[AsyncSession],
    ref: str,
    action: Action,
    now: datetime,
    options: ScanOptions,
) -> Job | None:
    """Pause, resume or scan a job, then judge it at once; the job as stored afterwards
    (None: there is no such job, or it was deleted meanwhile). The API and the dashboard's
    buttons both come here."""
    async with session_factory() as session:
        if action == "scan":
            job = await find_job(session, ref)
        else:
            job = await set_paused(session, ref, action == "pause", now)
    if job is None:
        return None
    return await scan_job(session_factory, job.id, options)


async def create_job(session: AsyncSession, spec: JobSpec, now: datetime) -> Job:
    job = new_job(spec, now)
    job.next_check_at = now
    session.add(job)
    await _commit_name(session, spec.name)
    return job


async def _commit_name(session: AsyncSession, name: str) -> None:
    """Commit a job's creation or change; its name taken meanwhile is JobNameTaken."""
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise JobNameTaken(name) from None


async def update_job(
    session: AsyncSession,
    ref: str,
    changes: Mapping[str, Any],
    *,
    scan_roots: Sequence[Path],
    channels: Collection[str] | None = None,
    now: datetime,
) -> tuple[Job, bool] | None:
    """Apply a PATCH in one transaction, the row locked so that concurrent PATCHes queue up
    instead of overwriting each other: the job, and whether anything changed. Raises
    pydantic.ValidationError (nothing written) or JobNameTaken; None when there is no such
    job."""
    job = await find_job(session, ref, for_update=True)
    if job is None:
        await session.rollback()
        return None
    try:
        # SCAN_ROOTS resolves the path on the filesystem: off the event loop.
        spec = await asyncio.to_thread(parse_job, merge_patch(job, changes), scan_roots, channels)
    except Exception:
        await session.rollback()
        raise
    changed = apply_declaration(job, spec, now)
    await _commit_name(session, spec.name)
    return job, changed


async def patch_job(
    session_factory: async_sessionmaker[AsyncSession],
    ref: str,
    changes: Mapping[str, Any],
    *,
    channels: Collection[str] | None = None,
    now: datetime,
    options: ScanOptions,
) -> Job | None:
    """Apply a PATCH (see update_job), then judge the job at once under its new declaration,
    as resume does: the answer, and the dashboard, never show the status the old declaration
    earned (a bigger min_size is critical too_small in the answer itself). A PATCH that
    changes nothing scans nothing. A local path must lie in `options.scan_roots`."""
    async with session_factory() as session:
        updated = await update_job(
            session, ref, changes, scan_roots=options.scan_roots or (), channels=channels, now=now
        )
    if updated is None:
        return None
    job, changed = updated
    if not changed:
        return job
    # One listing of this job's source, like POST .../scan (bounded by SOURCE_TIMEOUT_SECONDS):
    # the artifacts a new pattern or path selects are not stored yet, so judging from the
    # stored ones would be wrong for exactly the changes people check at once.
    return await scan_job(session_factory, job.id, options)


async def delete_job(session: AsyncSession, ref: str) -> bool:
    """Delete the job with its artifacts and history (foreign keys cascade); its notices not
    delivered yet are cancelled in the same transaction."""
    job = await find_job(session, ref, for_update=True)
    if job is None:
        await session.rollback()
        return False
    await delete_jobs(session, {job.id: job.name})
    await session.commit()
    return True


async def delete_jobs(session: AsyncSession, jobs: Mapping[int, str]) -> None:
    """Delete these jobs (id: name), in the caller's transaction, and cancel their notices not
    delivered yet: they are kept as `cancelled`, not sent (their page is gone)."""
    if not jobs:
        return
    cancelled = await cancel_notices_of(session, list(jobs))
    await session.execute(delete(Job).where(Job.id.in_(list(jobs))))
    if cancelled:
        names = sorted(jobs.values())
        logger.info(
            "%d notices cancelled: %s", cancelled, JOB_DELETED,
            extra={"job": ",".join(names[:10]) + (",…" if len(names) > 10 else "")},
        )  # fmt: skip


async def set_paused(session: AsyncSession, ref: str, paused: bool, now: datetime) -> Job | None:
    job = await find_job(session, ref, for_update=True)
    if job is None:
        await session.rollback()
        return None
    if job.paused != paused:
        job.paused = paused
        job.updated_at = now
        job.next_check_at = now
    await session.commit()
    return job


def _page(
    query: Select[Any], when: Any, key: Any, owner: Any, before: int | None, limit: int
) -> Select[Any]:
    """Newest first by (when, key), continuing after the row `before` (keyset pagination).
    `owner` is the job condition: a cursor taken from another job's rows finds no anchor."""
    if before is not None:
        anchor = select(when, key).where(key == before, owner).subquery()
        query = query.where(tuple_(when, key) < tuple_(*anchor.c))
    return query.order_by(when.desc(), key.desc()).limit(limit + 1)


async def artifacts_page(
    session: AsyncSession, job_id: int, *, limit: int, before: int | None, include_gone: bool
) -> tuple[list[Artifact], int | None]:
    query = select(Artifact).where(Artifact.job_id == job_id)
    if not include_gone:
        query = query.where(Artifact.gone_since.is_(None))
    return _split(
        list(
            await session.scalars(
                _page(query, Artifact.mtime, Artifact.id, Artifact.job_id == job_id, before, limit)
            )
        ),
        limit,
    )


async def history_page(
    session: AsyncSession, job_id: int, *, limit: int, before: int | None
) -> tuple[list[JobCheck], int | None]:
    query = select(JobCheck).where(JobCheck.job_id == job_id)
    return _split(
        list(
            await session.scalars(
                _page(
                    query,
                    JobCheck.checked_at,
                    JobCheck.id,
                    JobCheck.job_id == job_id,
                    before,
                    limit,
                )
            )
        ),
        limit,
    )


async def notifications_page(
    session: AsyncSession, job_id: int, *, limit: int, before: int | None
) -> tuple[list[dict[str, Any]], int | None]:
    """The job's notices, newest first, each with its deliveries (one per channel)."""
    event = NotificationEvent
    owner = event.job_id == job_id
    events, next_before = _split(
        list(
            await session.scalars(
                _page(select(event).where(owner), event.created_at, event.id, owner, before, limit)
            )
        ),
        limit,
    )
    deliveries: dict[int, list[NotificationDelivery]] = {row.id: [] for row in events}
    if events:
        rows = await session.scalars(
            select(NotificationDelivery)
            .where(NotificationDelivery.event_id.in_(list(deliveries)))
            .order_by(NotificationDelivery.channel)
        )
        for row in rows:
            deliveries[row.event_id].append(row)
    items = [
        {
            "id": row.id, "event_id": row.event_id, "kind": row.kind,
            "created_at": row.created_at, "status": row.payload["status"],
            "previous_status": row.payload.get("previous_status"),
            "reasons": row.payload.get("reasons") or [], "changes": row.payload.get("changes"),
            "routed": row.routed_at is not None,
            "deliveries": deliveries[row.id],
        }
        for row in events
    ]  # fmt: skip
    return items, next_before


async def scans_page(
    session: AsyncSession, *, limit: int, before: int | None
) -> tuple[list[ScanRun], int | None]:
    query = select(ScanRun)
    if before is not None and before <= MAX_INT_ID:  # larger: every scan id is below it
        query = query.where(ScanRun.id < before)
    rows = await session.scalars(query.order_by(ScanRun.id.desc()).limit(limit + 1))
    return _split(list(rows), limit)


def _split(rows: list[Any], limit: int) -> tuple[list[Any], int | None]:
    """The page, and the cursor of the next one (None on the last page)."""
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None
