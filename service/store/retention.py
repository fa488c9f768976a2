"""Retention: pings and finished notifications older than RETENTION_DAYS are deleted.

Each job keeps its newest PINGS_JUDGED pings however old they are, since its status is judged
from them: a retention pass never changes a verdict. Deletes go in bounded pieces, each its
own transaction, so a large backlog never holds long locks against the ping writer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, exists, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.engine import database_url_of
from service.db.errors import log_failure
from service.db.models import NotificationDelivery, NotificationEvent, Ping
from service.store.pings import PINGS_JUDGED

logger = logging.getLogger(__name__)

PIECE = 5_000  # rows deleted per transaction


@dataclass(frozen=True, slots=True)
class Pruned:
    pings: int
    events: int


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
        await session.commit()
    if pings or events:
        logger.info("retention", extra={"pings_deleted": pings, "events_deleted": events})
    return Pruned(pings, events)


async def _delete_in_pieces(
    session: AsyncSession, ids: Select[Any], model: type[Ping] | type[NotificationEvent]
) -> int:
    """Delete the rows whose ids `ids` selects, PIECE at a time, committing each piece."""
    total = 0
    while True:
        piece = (await session.scalars(ids.limit(PIECE))).all()
        if not piece:
            return total
        await session.execute(delete(model).where(model.id.in_(piece)))
        await session.commit()
        total += len(piece)


async def run_retention(sessions: async_sessionmaker[AsyncSession], *, days: float) -> None:
    """The scheduler's hourly retention job: log, never raise."""
    try:
        await prune(sessions, days)
    except Exception as exc:
        log_failure(
            logger, "Error while pruning old pings and notifications", exc,
            database_url_of(sessions),
        )  # fmt: skip
