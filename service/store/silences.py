"""Silences in the database: create, end, list, and load those that may apply now.

The rules (which job is silenced when) are pure, in service.notify.silences; this module only
reads and writes rows and turns them into those rules' values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from service.core.silencespec import RecurringSilenceSpec
from service.db.models import MAX_INT_ID, Job
from service.db.models import Silence as SilenceRow
from service.notify import silences as rules

State = Literal["active", "upcoming", "expired"]


def rule_of(row: SilenceRow) -> rules.Silence:
    """The row as the pure rules take it."""
    recurring = None
    if row.cron is not None and row.timezone is not None and row.duration is not None:
        recurring = rules.Recurrence(cron=row.cron, timezone=row.timezone, duration=row.duration)
    return rules.Silence(
        id=row.id,
        comment=row.comment,
        jobs=frozenset(row.jobs),
        tags=frozenset(row.tags),
        starts_at=row.starts_at if recurring is None else None,
        ends_at=row.ends_at if recurring is None else None,
        recurring=recurring,
        ended_at=row.ended_at,
        name=row.name,
        created_by=row.created_by,
    )


def _not_over(now: datetime) -> ColumnElement[bool]:
    """Rows whose windows are not all behind `now`: not ended early, and recurring or ending
    later. (An upcoming one-off, not begun yet, is among them.)"""
    return (SilenceRow.ended_at.is_(None) | (SilenceRow.ended_at > now)) & (
        SilenceRow.cron.is_not(None) | (SilenceRow.ends_at > now)
    )


async def load_current(session: AsyncSession, now: datetime) -> list[rules.Silence]:
    """Every silence that covers some job now or will later (one query): what
    `silenced_until` and `next_boundary` need to answer for any job at `now`."""
    rows = await session.scalars(select(SilenceRow).where(_not_over(now)).order_by(SilenceRow.id))
    return [rule_of(row) for row in rows]


@dataclass(frozen=True, slots=True)
class SilenceView:
    """A silence with what it means at one moment: shown by the API and the dashboard."""

    row: SilenceRow
    state: State
    # The end of the window covering now (active), the next window's start (upcoming).
    active_until: datetime | None
    next_start: datetime | None


def view_of(row: SilenceRow, now: datetime) -> SilenceView:
    rule = rule_of(row)
    current = rules.window_now(rule, now)
    upcoming = rules.next_window(rule, now)
    if current is not None:
        state: State = "active"
    elif upcoming is not None:
        state = "upcoming"
    else:
        state = "expired"
    return SilenceView(
        row=row,
        state=state,
        active_until=current[1] if current is not None else None,
        next_start=upcoming[0] if upcoming is not None else None,
    )


async def create_silence(
    session: AsyncSession,
    *,
    jobs: Sequence[str],
    tags: Sequence[str],
    starts_at: datetime,
    ends_at: datetime,
    comment: str,
    created_by: str,
    now: datetime,
) -> SilenceRow:
    """Store a one-off silence (made through the API) and commit."""
    row = SilenceRow(
        name=None, origin="api", comment=comment, created_by=created_by, created_at=now,
        updated_at=now, jobs=list(jobs), tags=list(tags), starts_at=starts_at, ends_at=ends_at,
    )  # fmt: skip
    session.add(row)
    await session.commit()
    return row


async def get_silence(session: AsyncSession, silence_id: int) -> SilenceRow | None:
    return await session.get(SilenceRow, silence_id) if silence_id <= MAX_INT_ID else None


async def end_silence(session: AsyncSession, silence_id: int, now: datetime) -> SilenceRow | None:
    """End a silence at `now` (kept as history); one already over is left as it is. None when
    there is no such silence.

    A notice it held is due at the end of its window (jobs.renotify_at, see
    service.notify.events.notice_due): that moment becomes `now`, so the deadline tick tells it
    within seconds, as at the window's natural end, not at the next full scan."""
    if silence_id > MAX_INT_ID:
        return None
    row = await session.get(SilenceRow, silence_id)
    if row is None:
        return None
    window = rules.window_now(rule_of(row), now)
    await session.execute(
        update(SilenceRow)
        .where(SilenceRow.id == silence_id, _not_over(now))
        .values(ended_at=now, updated_at=now)
    )
    if window is not None:
        await session.execute(
            update(Job)
            .where(Job.paused.is_(False), Job.renotify_at == window[1])
            .values(renotify_at=now)
        )
    await session.commit()
    return await session.get(SilenceRow, silence_id, populate_existing=True)


async def silences_page(
    session: AsyncSession, now: datetime, *, limit: int, offset: int
) -> tuple[list[SilenceRow], int]:
    """Silences not over yet first (soonest start first, recurring ones by creation), then the
    others as history (latest end first); and how many there are in all."""
    over = case((_not_over(now), 0), else_=1)
    start = func.coalesce(SilenceRow.starts_at, SilenceRow.created_at)
    finish = func.coalesce(SilenceRow.ended_at, SilenceRow.ends_at, SilenceRow.updated_at)
    rows = await session.scalars(
        select(SilenceRow)
        .order_by(
            over,
            case((over == 0, start)).asc(),  # the same NULL in every row of the history
            case((over == 1, finish)).desc(),
            SilenceRow.id.desc(),
        )
        .limit(limit)
        .offset(offset)
    )
    total = await session.scalar(select(func.count()).select_from(SilenceRow))
    return list(rows), int(total or 0)


async def silences_for_job(
    session: AsyncSession, job_name: str, job_tags: Sequence[str], now: datetime
) -> list[tuple[rules.Silence, datetime]]:
    """The silences covering this job now, each with the end of its window, latest first."""
    return rules.covering(job_name, job_tags, await load_current(session, now), now)


@dataclass(slots=True)
class DeclaredResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"silences: {len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed"
        )


def _declared_values(spec: RecurringSilenceSpec) -> dict[str, object]:
    return {
        "jobs": list(spec.jobs),
        "tags": list(spec.tags),
        "cron": spec.cron,
        "timezone": spec.timezone,
        "duration": spec.duration,
        "comment": spec.comment,
    }


async def apply_declared(
    session: AsyncSession,
    specs: Sequence[RecurringSilenceSpec],
    *,
    prune: bool,
    now: datetime,
    created_by: str = "jobs file",
) -> DeclaredResult:
    """Create or update the jobs file's silences by name (and, with `prune`, end those of the
    file that it no longer declares; silences made through the API are never touched). Does
    not commit: the caller applies jobs and silences in one transaction."""
    result = DeclaredResult()
    live = {
        row.name: row
        for row in await session.scalars(
            select(SilenceRow).where(
                SilenceRow.origin == "file",
                SilenceRow.ended_at.is_(None),
                SilenceRow.name.is_not(None),
            )
        )
        if row.name is not None
    }
    for spec in specs:
        values = _declared_values(spec)
        row = live.get(spec.name)
        if row is None:
            session.add(
                SilenceRow(
                    name=spec.name,
                    origin="file",
                    created_by=created_by,
                    created_at=now,
                    updated_at=now,
                    **values,
                )
            )
            result.created.append(spec.name)
        elif any(getattr(row, key) != value for key, value in values.items()):
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = now
            result.updated.append(spec.name)
        else:
            result.unchanged.append(spec.name)
    if prune:
        declared = {spec.name for spec in specs}
        for name, row in sorted(live.items()):
            if name not in declared:
                row.ended_at = now
                row.updated_at = now
                result.removed.append(name)
    await session.flush()
    return result
