"""Outbox operations shared by the job operations and the dispatcher: a deleted job's notices
are cancelled, recorded as such, never sent (their page would be a 404)."""

from __future__ import annotations

import logging
from collections.abc import Collection

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.engine import rows_changed
from service.db.models import NotificationDelivery, NotificationEvent

logger = logging.getLogger(__name__)

CANCELLED = "cancelled"
JOB_DELETED = "the job was deleted"


async def cancel_notices_of(session: AsyncSession, job_ids: Collection[int]) -> int:
    """Cancel the undelivered deliveries of these jobs' notices, in the caller's transaction
    (the one that deletes the jobs, before it does: afterwards their events no longer name
    them). Returns how many. A notice not routed yet is cancelled when it is routed (its job
    is gone then), and the dispatcher checks at each claim that the job still exists."""
    if not job_ids:
        return 0
    events = select(NotificationEvent.id).where(NotificationEvent.job_id.in_(list(job_ids)))
    return await rows_changed(
        session,
        update(NotificationDelivery)
        .where(
            NotificationDelivery.state == "pending",
            NotificationDelivery.event_id.in_(events),
        )
        .values(state=CANCELLED, last_error=JOB_DELETED, lease_until=None)
        .execution_options(synchronize_session=False),
    )
