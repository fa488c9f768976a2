"""The SQL of a scan's judgements: read the jobs, claim them, sync their artifacts, record
their new state with its history row (job_checks) and its notice (the outbox), and touch the
jobs whose state did not change.

Claims: the jobs' rows are locked for the transaction (PostgreSQL: FOR UPDATE SKIP LOCKED, so
a job another scan holds is skipped, not waited for; SQLite: the database write lock), and a
job already judged from a later look, or declared anew since ours, is left out. What a
judgement means (news, reminder, run of bad judgements) is weighed again on the claimed row,
so a change is recorded, and notified, once. The outbox rows commit with the change they tell
of, or not at all.

May import SQLAlchemy, service.db.engine, service.db.models, service.db.errors,
service.notify.events (event_row and its pure helpers) and the scanner's pure modules (state,
judge, inventory); no source, no clock, no settings.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import suppress
from dataclasses import dataclass, fields
from datetime import datetime
from json.encoder import encode_basestring_ascii as _quoted  # json.dumps's own, for a str
from typing import Any

from sqlalchemy import JSON, Table, Text, bindparam, cast, func, or_, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.core.jobspec import DECLARATION_FIELDS
from service.core.kinds import status_of
from service.core.rules import Reason
from service.db.engine import is_postgresql, lock_for_write
from service.db.errors import database_unavailable, describe_error
from service.db.models import Artifact, Job, JobCheck, NotificationEvent
from service.notify.events import event_row, located, problem_codes, reason_changes
from service.scanner.inventory import InventoryDiff, Known
from service.scanner.judge import Aftermath, Judgement, aftermath
from service.scanner.state import JobResult, JobRow, entry_time, to_microseconds

logger = logging.getLogger(__name__)

# Entries diffed, or rows copied, between two chances for the event loop to run other tasks.
YIELD_EVERY = 5_000
INSERT_PIECE = 10_000  # rows per INSERT on PostgreSQL: the loop answers between them
# Unchanged jobs only need their checked_at moved; they are written together, this many at once.
TOUCH_BATCH = 500
# Job names looked up by one statement at most.
NAMES_PIECE = 10_000
JOBS_PIECE = 500  # job rows decoded at a time: a few milliseconds of the event loop each
# The columns of a job's state, as the scanner writes them (see state.JobState).
STATE_FIELDS = ("status", "reasons", "next_check_at", "latest_artifact", "artifact_count",
                "listing_digest")  # fmt: skip
_STATE_COLUMNS = (*STATE_FIELDS, "checked_at")

_jobs: Table = Job.__table__  # type: ignore[assignment]
_artifacts: Table = Artifact.__table__  # type: ignore[assignment]
_job_checks: Table = JobCheck.__table__  # type: ignore[assignment]
_events: Table = NotificationEvent.__table__  # type: ignore[assignment]
_UPDATE_JOB = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("job_id"))
    # Parameters may not carry a column's own name in an UPDATE's SET clause: prefix them.
    .values(
        {
            name: bindparam(f"new_{name}")
            for name in (
                *_STATE_COLUMNS,
                "status_changed_at",
                "renotify_at",
                "notified_status",
                "notified_reasons",
                "bad_since",
                "bad_count",
            )
        }
    )
)
_TOUCH_JOB = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("job_id"))
    .where(or_(_jobs.c.checked_at.is_(None), _jobs.c.checked_at < bindparam("checked")))
    .values(checked_at=bindparam("checked"))
)
_UPDATE_CHANGED = (
    update(_artifacts)
    .where(_artifacts.c.id == bindparam("artifact_id"))
    .values(
        size=bindparam("size"),
        mtime=bindparam("mtime"),
        last_seen=bindparam("last_seen"),
        details=bindparam("details"),
    )
)
_MARK_GONE = (
    update(_artifacts)
    .where(_artifacts.c.id == bindparam("artifact_id"))
    .values(gone_since=bindparam("gone_since"), last_seen=bindparam("last_seen"))
)

# The declaration's JSON columns are read as their text: decoding them (7 documents a job) and
# encoding them again as the key of the job's validated JobSpec was about a quarter of a job's
# CPU in a rescan (timeit: 45 of ~230 µs); the text is the key, decoded only when the key is new
# (pipeline.job_spec).
_JSON_FIELDS = frozenset(
    name for name in DECLARATION_FIELDS if isinstance(_jobs.c[name].type, JSON)
)
_JOB_COLUMNS = (
    Job.id, Job.name,
    *(
        cast(getattr(Job, name), Text).label(name) if name in _JSON_FIELDS
        else getattr(Job, name)
        for name in DECLARATION_FIELDS
    ),
    Job.created_at, Job.status, Job.reasons, Job.next_check_at, Job.checked_at,
    Job.status_changed_at, Job.latest_artifact, Job.artifact_count, Job.listing_digest,
    Job.renotify_at, Job.notified_status, Job.notified_reasons, Job.bad_since, Job.bad_count,
)  # fmt: skip
# A row is read by position (a tuple), not by name: naming its columns one by one (0.28 µs a
# name, 28 of them) was half of a job row's decoding. Its columns are: id, name, the
# declaration's fields, then JobRow's own fields after declaration_json, in JobRow's order
# (checked here).
_DECLARED_END = 2 + len(DECLARATION_FIELDS)
_MEMBERS = tuple((f",{json.dumps(name)}:", name in _JSON_FIELDS) for name in DECLARATION_FIELDS)
if [c.name for c in _JOB_COLUMNS[_DECLARED_END:]] != [f.name for f in fields(JobRow)[3:]]:
    raise RuntimeError("writer._JOB_COLUMNS and state.JobRow list a job's state differently")


def _json_scalar(value: Any) -> str:
    """json.dumps of a plain column's value (text, integer, boolean, null), without its
    function call and encoder set-up for each value: the same text."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is str:
        return _quoted(value)
    if type(value) is int:
        return int.__repr__(value)
    return json.dumps(value)


def declaration_json(name: str, declared: Sequence[Any]) -> str:
    """The declaration (its fields' values in DECLARATION_FIELDS order, the JSON ones as their
    text) as one JSON object's text, with the name."""
    parts = ['{"name":', _quoted(name)]
    for (member, is_json), value in zip(_MEMBERS, declared, strict=True):
        parts += (member, "null" if value is None else value if is_json else _json_scalar(value))
    parts.append("}")
    return "".join(parts)


def _job_row(row: Any) -> JobRow:
    values = tuple(row)
    name = values[1]
    return JobRow(
        values[0], name, declaration_json(name, values[2:_DECLARED_END]),
        *values[_DECLARED_END:],
    )  # fmt: skip


async def count_jobs(session: AsyncSession) -> int:
    return (await session.execute(select(func.count()).select_from(Job))).scalar_one()


async def job_pieces(
    session: AsyncSession, names: Sequence[str] | None = None
) -> AsyncGenerator[list[JobRow], None]:
    """Every job (or those named), by name, a piece at a time as read: a scan starts listing
    the first piece's sources while the others are read."""
    query = select(*_JOB_COLUMNS).order_by(Job.name)
    if names is None:
        # In pieces too: decoding 10 000 jobs' rows at once would hold the event loop. (A job
        # renamed between two pieces may come twice: once.)
        seen: set[int] = set()
        after: str | None = None  # the last name read
        while rows := (
            await session.execute(
                query.limit(JOBS_PIECE)
                if after is None
                else query.where(Job.name > after).limit(JOBS_PIECE)
            )
        ).all():
            yield [_job_row(row) for row in rows if row.id not in seen]
            seen.update(row.id for row in rows)
            after = rows[-1].name
        return
    # In pieces: a replica's share of a large fleet names more jobs than a statement may carry
    # parameters (asyncpg: 32 767).
    wanted = sorted(set(names))
    for start in range(0, len(wanted), NAMES_PIECE):
        piece = query.where(Job.name.in_(wanted[start : start + NAMES_PIECE]))
        yield [_job_row(row) for row in (await session.execute(piece)).all()]


@dataclass(slots=True)
class Change:
    """A judgement to write, and the result that reports it (the writer fills in the
    artifacts' counts, or says the job was skipped or failed)."""

    judgement: Judgement
    result: JobResult

    @property
    def job(self) -> JobRow:
        return self.judgement.observation.job


@dataclass(frozen=True, slots=True)
class _Claimed:
    """A job's state as stored when the writer claimed it (a service.scanner.state.StoredState)."""

    status: str
    reasons: list[dict[str, str]]
    status_changed_at: datetime | None
    renotify_at: datetime | None
    notified_status: str | None
    notified_reasons: list[dict[str, str]] | None
    bad_since: datetime | None
    bad_count: int


def _claimed(row: Any) -> _Claimed:
    return _Claimed(
        row.status, row.reasons, row.status_changed_at, row.renotify_at,
        row.notified_status, row.notified_reasons, row.bad_since, row.bad_count,
    )  # fmt: skip


class ScanWriter:
    """Writes one scan's judgements with its session; holds the touched jobs not written yet."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._touched: list[dict[str, Any]] = []

    def touch(self, judgement: Judgement) -> None:
        """Move the job's checked_at only (at the next flush_touched): its state is unchanged."""
        self._touched.append({"job_id": judgement.observation.job.id, "checked": judgement.seen_at})

    @property
    def touched(self) -> int:
        """Jobs touched and not written yet."""
        return len(self._touched)

    async def flush_touched(self) -> None:
        """Move checked_at on jobs whose state did not change, together; each gets the time it
        was looked at, and never moves back (another scan may have looked later)."""
        if not self._touched:
            return
        touched, self._touched = self._touched, []
        await self.session.execute(_TOUCH_JOB, touched)
        await self.session.commit()

    async def write_isolated(self, changes: Sequence[Change]) -> None:
        """Write the changes in one transaction; if that fails, one transaction per job (one
        broken job never rolls back the others). A database that is away ends the scan: the
        error is raised."""
        try:
            await self._write(changes)
            return
        except Exception as exc:
            await self._rollback()
            if database_unavailable(exc):
                raise  # every job would fail the same way: end the scan, marked failed
            if len(changes) == 1:
                self._failed(changes[0], exc)
                return
        for change in changes:
            try:
                await self._write([change])
            except Exception as exc:
                await self._rollback()
                if database_unavailable(exc):
                    raise
                self._failed(change, exc)

    async def _rollback(self) -> None:
        # On a dead connection the rollback fails too; the error that matters is the first.
        with suppress(Exception):
            await self.session.rollback()

    @staticmethod
    def _failed(change: Change, exc: Exception) -> None:
        job = change.job
        logger.error("job scan failed", extra={"job": job.name}, exc_info=exc)
        message = f"internal error while scanning: {describe_error(exc)}"
        result = change.result
        result.keep_stored(job)
        result.status = "unknown"
        result.reasons = [Reason("scan_error", "unknown", message).as_dict()]
        result.error = message

    async def _write(self, changes: Sequence[Change]) -> None:
        """One transaction: claim the jobs, sync their artifacts, record their state."""
        session = self.session
        current = await self._claim(changes)
        mine = [change for change in changes if change.job.id in current]
        await self._sync_artifacts([change for change in mine if change.judgement.sync])
        # Weighed on the state stored now (another scan may have written since this one read
        # the job), so a change is recorded, and notified, once.
        decided = [
            (change, stored, aftermath(change.judgement, stored))
            for change in mine
            for stored in [current[change.job.id]]
        ]
        checks = [
            {
                "job_id": change.job.id, "checked_at": change.judgement.checked_at,
                "status": change.judgement.state.status, "previous_status": stored.status,
                "reasons": change.judgement.state.stored_reasons(),
                "latest_artifact": change.judgement.state.latest_artifact,
            }
            for change, stored, after in decided
            if after.news.recorded
        ]  # fmt: skip
        if checks:
            await session.execute(_job_checks.insert(), checks)
        # The outbox: the notices commit with the change they tell of, or not at all.
        notices = [
            _event(change.judgement, stored, after.news.kind)
            for change, stored, after in decided
            if after.news.kind is not None
        ]
        if notices:
            await session.execute(_events.insert(), notices)
        if mine:
            values = [_job_values(change.judgement, after) for change, _, after in decided]
            await session.execute(_UPDATE_JOB, values)
        await session.commit()
        for change in changes:
            if change.job.id not in current:
                job = change.job
                logger.info("job skipped: another scan wrote it", extra={"job": job.name})
                change.result.keep_stored(job)
                change.result.status, change.result.reasons = job.status, job.reasons
                change.result.skipped = True

    async def _claim(self, changes: Sequence[Change]) -> dict[int, _Claimed]:
        """Lock the jobs' rows for this transaction; return their stored state by job id.

        Left out: a job another scan holds right now (SKIP LOCKED), one already judged from a
        later look at its files than ours (its checked_at is after our observation), one
        deleted meanwhile, one whose declaration changed after our look.
        """
        session = self.session
        await lock_for_write(session)
        observed = {change.job.id: change.judgement.seen_at for change in changes}
        query = select(
            Job.id, Job.status, Job.reasons, Job.status_changed_at, Job.checked_at,
            Job.updated_at, Job.renotify_at, Job.notified_status, Job.notified_reasons,
            Job.bad_since, Job.bad_count,
        ).where(Job.id.in_(list(observed)))  # fmt: skip
        if is_postgresql(session):
            query = query.with_for_update(skip_locked=True)
        rows = await session.execute(query)
        return {
            row.id: _claimed(row)
            for row in rows
            # A declaration changed since we looked (an API PATCH) makes our verdict stale too.
            if (row.checked_at is None or row.checked_at <= observed[row.id])
            and row.updated_at <= observed[row.id]
        }

    async def _sync_artifacts(self, changes: Sequence[Change]) -> None:
        """Insert new artifacts, update changed ones, mark vanished ones; count them."""
        if not changes:
            return
        session = self.session
        known: dict[int, dict[str, Known]] = {change.job.id: {} for change in changes}
        rows = await session.execute(
            select(
                _artifacts.c.id, _artifacts.c.job_id, _artifacts.c.path, _artifacts.c.size,
                _artifacts.c.mtime,
            ).where(_artifacts.c.job_id.in_(list(known)), _artifacts.c.gone_since.is_(None))
        )  # fmt: skip
        for row in rows:
            known[row.job_id][row.path] = Known(row.id, row.size, to_microseconds(row.mtime))

        new: list[_NewArtifacts] = []
        changed: list[dict[str, Any]] = []
        gone: list[dict[str, Any]] = []
        # Entries compared since the loop last ran other tasks: one job of 200 000 files, or a
        # batch of 64 jobs of 500 files each, must not stall it.
        compared = 0
        for change in changes:
            judgement = change.judgement
            observation, now, job = judgement.observation, judgement.checked_at, change.job
            listing = observation.listing
            if listing is None:  # never so: a judgement syncs only with a listing
                continue
            inventory = InventoryDiff(known[job.id])
            entries = listing.entries
            for start in range(0, len(entries), YIELD_EVERY):
                if compared >= YIELD_EVERY:
                    await asyncio.sleep(0)
                    compared = 0
                piece = entries[start : start + YIELD_EVERY]
                inventory.compare(piece)
                compared += len(piece)
            inventory.finish(listing)
            details = listing.details
            if inventory.new:
                new.append(_NewArtifacts(job.id, now, inventory.new, details))
            changed += [{"artifact_id": artifact_id, "size": entry[1], "mtime": entry_time(entry),
                         "last_seen": now, "details": details.get(entry[0])}
                        for artifact_id, entry in inventory.changed]  # fmt: skip
            # Present artifacts are confirmed by every scan without a write; the last scan that
            # saw these is the job's previous check.
            last_seen = job.checked_at or now
            gone += [{"artifact_id": artifact_id, "gone_since": now, "last_seen": last_seen}
                     for artifact_id in inventory.gone]  # fmt: skip
            result = change.result
            result.new, result.changed = len(inventory.new), len(inventory.changed)
            result.gone = len(inventory.gone)

        if new:
            await self._insert_artifacts(new)
        if changed:
            await session.execute(_UPDATE_CHANGED, changed)
        if gone:
            await session.execute(_MARK_GONE, gone)

    async def _insert_artifacts(self, new: list[_NewArtifacts]) -> None:
        """On PostgreSQL, one INSERT from arrays per INSERT_PIECE rows (the jobs are claimed: no
        concurrent writer); elsewhere an INSERT that skips a path already present."""
        session = self.session
        if not is_postgresql(session):
            rows = [
                {"job_id": part.job_id, "path": path, "size": size,
                 "mtime": entry_time((path, size, mtime_us)), "first_seen": part.now,
                 "last_seen": part.now, "details": part.details.get(path)}
                for part in new for path, size, mtime_us in part.entries
            ]  # fmt: skip
            statement = sqlite.insert(Artifact).on_conflict_do_nothing(
                index_elements=["job_id", "path"], index_where=Artifact.gone_since.is_(None)
            )
            await session.execute(statement, rows)
            return
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
        jobs, paths, sizes, times, seen, extra = columns
        for part in new:
            details = part.details
            for start in range(0, len(part.entries), INSERT_PIECE):  # a job of a million files
                piece = part.entries[start : start + INSERT_PIECE]
                names, piece_sizes, piece_times = zip(*piece, strict=True)
                jobs += [part.job_id] * len(piece)
                paths += names
                sizes += piece_sizes
                times += piece_times
                seen += [to_microseconds(part.now)] * len(piece)
                # jsonb travels as its text (a remote source's details; local files have none).
                extra += (
                    [json.dumps(details[name]) if name in details else None for name in names]
                    if details
                    else [None] * len(piece)
                )
                if len(jobs) >= INSERT_PIECE:
                    await driver.execute(_INSERT_ARTIFACTS, *map(as_matrix, columns), len(jobs))
                    await asyncio.sleep(0)
                    for column in columns:
                        column.clear()
        if jobs:
            await driver.execute(_INSERT_ARTIFACTS, *map(as_matrix, columns), len(jobs))


@dataclass(frozen=True, slots=True)
class _NewArtifacts:
    """A job's artifacts to insert: its listing's new entries, seen first at `now`."""

    job_id: int
    now: datetime
    entries: list[tuple[str, int, int]]  # FileEntry: (path, size, mtime_us)
    details: dict[str, dict[str, Any]]


def _instant(microseconds: str) -> str:
    """SQL of the instant `microseconds` (a bigint expression) after the epoch, exact over the
    whole range of datetime (interval arithmetic on whole seconds and microseconds: a float
    product would round the far-future times a filesystem keeps)."""
    return (
        f"timestamptz 'epoch' + ({microseconds} / 1000000) * interval '1 second'"
        f" + ({microseconds} % 1000000) * interval '1 microsecond'"
    )


# Values a row of an array parameter holds (see as_matrix).
MATRIX_WIDTH = 256


def as_matrix(values: list[Any]) -> list[list[Any]]:
    """`values` as a two-dimensional array parameter: rows of MATRIX_WIDTH, the last one
    padded with None (NULL). asyncpg checks each element of an array for being a sub-array
    (isinstance against collections.abc's ABCs, two calls for a text), but in a
    two-dimensional array only each row and the first row's elements. As plain lists: 1.4
    million such calls in a first scan of 200 000 files, a fifth of its CPU in this process
    (a third at 1M files). PostgreSQL's unnest reads the rows' values in order, the padding
    last."""
    rows = [values[start : start + MATRIX_WIDTH] for start in range(0, len(values), MATRIX_WIDTH)]
    if rows and len(rows[-1]) < MATRIX_WIDTH:
        rows[-1] += [None] * (MATRIX_WIDTH - len(rows[-1]))
    return rows


# New artifacts from arrays (as_matrix; $7 rows, the padding after them): asyncpg encodes a list
# of ints or texts in one C loop, where COPY took a datetime built for each row and encoded three
# per row (most of a first scan's CPU).
_INSERT_ARTIFACTS = f"""
INSERT INTO artifacts (job_id, path, size, mtime, first_seen, last_seen, details)
SELECT j, p, s, {_instant("m")}, {_instant("n")}, {_instant("n")}, d::jsonb
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[])
    WITH ORDINALITY AS u(j, p, s, m, n, d, i)
WHERE i <= $7
"""  # noqa: S608 (no outside text: the column expressions are ours)


def _event(judgement: Judgement, stored: _Claimed, kind: str) -> dict[str, Any]:
    """The outbox row of a judgement's notice, told against what people were last told."""
    state, reasons = judgement.state, judgement.state.stored_reasons()
    job, spec = judgement.observation.job, judgement.observation.spec
    changes = None
    if kind == "changed":
        # The problems told last (the rule is news's: problem_codes at each status).
        told = problem_codes(stored.notified_status, stored.notified_reasons or [])
        changes = reason_changes(told, problem_codes(state.status, reasons))
    return event_row(
        job_id=job.id, job_name=job.name, kind=kind, status=state.status,
        previous_status=None if stored.notified_status is None else status_of(
            stored.notified_status
        ),
        reasons=reasons,
        latest_artifact=located(state.latest_artifact, job.declaration["source"]),
        channels=spec.notify.channels if spec is not None else None, now=judgement.checked_at,
        changes=changes,
    )  # fmt: skip


def _job_values(judgement: Judgement, after: Aftermath) -> dict[str, Any]:
    """The parameters of _UPDATE_JOB for one judgement."""
    state = judgement.state
    return {
        "job_id": judgement.observation.job.id,
        "new_status": state.status,
        "new_reasons": state.stored_reasons(),
        "new_next_check_at": state.next_check_at,
        "new_latest_artifact": state.latest_artifact,
        "new_artifact_count": state.artifact_count,
        "new_listing_digest": state.listing_digest,
        "new_checked_at": judgement.seen_at,
        "new_status_changed_at": after.status_changed_at,
        "new_renotify_at": after.renotify_at,
        "new_notified_status": after.notified_status,
        "new_notified_reasons": after.notified_reasons,
        "new_bad_since": after.streak.since,
        "new_bad_count": after.streak.count,
    }


async def present_sizes(engine: AsyncEngine, job_id: int) -> dict[str, int]:
    """The sizes stored for a job's present artifacts, by path, read in a session of its own
    (the scan's session may be in the middle of a write)."""
    async with AsyncSession(engine) as session:
        rows = await session.execute(
            select(_artifacts.c.path, _artifacts.c.size).where(
                _artifacts.c.job_id == job_id, _artifacts.c.gone_since.is_(None)
            )
        )
        return {path: size for path, size in rows}
