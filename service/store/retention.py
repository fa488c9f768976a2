"""Retention: pings, finished notifications, scans and status history older than
RETENTION_DAYS are deleted, so every table that grows with time stays the size of the window.

What a verdict, a notice or an endpoint still needs stays, however old:
- each job's newest PINGS_JUDGED pings (its status is judged from them);
- notification events with a delivery still pending;
- running scans, the newest closed scan of each trigger (/health, /api/v1/status), and the newest
  scan that did not fail with every scan since (the failure streak of /health/ready and
  /metrics);
  /metrics' scan counters live in scan_counters and do not move when scans go;
- each job's newest status change (the status it is in now, and since when);
- every artifact still present (only those gone from their source for longer go).
Deletes go in bounded pieces, each its own transaction, so a large backlog never holds long
locks against the ping writer or a scan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.engine import database_url_of
from service.db.errors import log_failure
from service.db.models import (
    Artifact,
    JobCheck,
    NotificationDelivery,
    NotificationEvent,
    Ping,
    ScanRun,
)
from service.store.pings import PINGS_JUDGED
from service.store.scans import SUCCEEDED

logger = logging.getLogger(__name__)

PIECE = 5_000  # rows deleted per transaction


@dataclass(frozen=True, slots=True)
class Pruned:
    pings: int
    events: int
    scans: int = 0
    checks: int = 0
    artifacts: int = 0


async def prune(
    sessions: async_sessionmaker[AsyncSession], days: float, *, now: datetime | None = None
) -> Pruned:
    """Delete what is older than `days`; returns how many pings and events went."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    pings = events = 0
    async with sessions() as session:
        jobs = (
            await session.scalars(
                select(Ping.job_id).where(Ping.received_at < cutoff).group_by(Ping.job_id)
            )
        ).all()
        for job_id in jobs:
            # The oldest ping this job must keep: its PINGS_JUDGED-th newest.
            keep_from = await session.scalar(
                select(Ping.id)
                .where(Ping.job_id == job_id)
                .order_by(Ping.id.desc())
                .offset(PINGS_JUDGED - 1)
                .limit(1)
            )
            if keep_from is None:
                continue
            pings += await _delete_in_pieces(
                session,
                select(Ping.id).where(
                    Ping.job_id == job_id, Ping.id < keep_from, Ping.received_at < cutoff
                ),
                Ping,
            )
        # An event goes once none of its deliveries is still pending (delivered, or given up),
        # or when it was never routed (no replica has CHANNELS_FILE: nothing will send it).
        pending = exists().where(
            NotificationDelivery.event_id == NotificationEvent.id,
            NotificationDelivery.state == "pending",
        )
        finished = select(NotificationEvent.id).where(
            NotificationEvent.created_at < cutoff, ~pending
        )
        events = await _delete_in_pieces(session, finished, NotificationEvent)
        scans = await _delete_in_pieces(session, await _old_scans(session, cutoff), ScanRun)
        checks = await _delete_in_pieces(session, _old_checks(cutoff), JobCheck)
        gone = select(Artifact.id).where(Artifact.gone_since < cutoff)
        artifacts = await _delete_in_pieces(session, gone, Artifact)
        await session.commit()
    if pings or events or scans or checks or artifacts:
        logger.info(
            "retention",
            extra={"pings_deleted": pings, "events_deleted": events, "scans_deleted": scans,
                   "checks_deleted": checks, "artifacts_deleted": artifacts},
        )  # fmt: skip
    return Pruned(pings, events, scans, checks, artifacts)


async def _old_scans(session: AsyncSession, cutoff: datetime) -> Select[Any]:
    """Closed scans started before `cutoff` and before the newest scan that did not fail (the
    failure streak since that one is a verdict: /health/ready), but the newest closed one of
    each trigger (a handful of ids, looked up once)."""
    closed = ScanRun.status != "running"
    kept = set(
        (
            await session.scalars(
                select(func.max(ScanRun.id)).where(closed).group_by(ScanRun.trigger)
            )
        ).all()
    )
    last_good = await session.scalar(
        select(func.max(ScanRun.id)).where(ScanRun.status.in_(SUCCEEDED))
    )
    return select(ScanRun.id).where(
        ScanRun.started_at < cutoff, closed, ScanRun.id < (last_good or 0),
        ScanRun.id.not_in(kept),
    )  # fmt: skip


def _old_checks(cutoff: datetime) -> Select[Any]:
    """Status changes recorded before `cutoff`, but each job's newest."""
    newer = JobCheck.__table__.alias("newer")
    has_newer = exists().where(newer.c.job_id == JobCheck.job_id, newer.c.id > JobCheck.id)
    return select(JobCheck.id).where(JobCheck.checked_at < cutoff, has_newer)


PrunedModel = type[Ping] | type[NotificationEvent] | type[ScanRun] | type[JobCheck] | type[Artifact]


async def _delete_in_pieces(session: AsyncSession, ids: Select[Any], model: PrunedModel) -> int:
    """Delete the rows whose ids `ids` selects, PIECE at a time in id order, committing each
    piece. Each piece starts after the last one's highest id: a query from the start again
    would step over every index entry deleted so far (dead until a vacuum), and a million rows
    took minutes instead of seconds."""
    total = 0
    after = 0
    while True:
        query = ids.where(model.id > after).order_by(model.id).limit(PIECE)
        piece = (await session.scalars(query)).all()
        if not piece:
            return total
        await session.execute(delete(model).where(model.id.in_(piece)))
        await session.commit()
        total += len(piece)
        after = piece[-1]


async def run_retention(sessions: async_sessionmaker[AsyncSession], *, days: float) -> None:
    """The scheduler's hourly retention job: log, never raise."""
    try:
        await prune(sessions, days)
    except Exception as exc:
        log_failure(
            logger, "Error while pruning old pings and notifications", exc,
            database_url_of(sessions),
        )  # fmt: skip
