"""Leases: a row of a table held by one holder (a replica) until a moment, the one primitive
every fleet lease uses (a job's listing).

The verifier's leases (service/store/verifications.py) are not these: each is one row claimed
by its key under a per-job condition (one artifact of a job at a time, serialized by an
advisory lock), holds no holder column, and is fenced by its own expiry (`lease_until ==
held`), with no renewal of everything a replica holds. What the two share, a conditional
UPDATE checked by its rowcount, has its one home in service.db.engine (`claimed`,
`rows_changed`).

A leased table has three columns: its key, the holder, and the lease's expiry. A lease is free
when it has no expiry, when its expiry is past (its holder died, or let it lapse) or when the
claimer already holds it. `claim` takes the free rows that also meet the caller's condition in
one statement:

    UPDATE t SET holder = :me, until = :now + :seconds [, more]
    WHERE key IN (SELECT key FROM t WHERE <free> AND <condition> ORDER BY key [LIMIT n]
                  FOR UPDATE SKIP LOCKED)
    RETURNING key

PostgreSQL: a row another claimer has locked is skipped, not waited for (no deadlock between
replicas claiming overlapping sets), and a row locked is checked again against the condition
as last committed, so of several claimers exactly one gets each row. SQLite (one process) runs
the same statement under its database write lock.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from service.db.engine import rows_changed

# IN lists longer than this are cut in pieces (asyncpg takes at most 32 767 parameters).
IN_PIECE = 10_000


@dataclass(frozen=True, slots=True)
class Leased:
    """A table whose rows are leased: its key, holder and expiry columns (ORM attributes)."""

    key: InstrumentedAttribute[Any]
    holder: InstrumentedAttribute[Any]
    until: InstrumentedAttribute[Any]

    @property
    def table(self) -> Any:
        """The mapped class the columns belong to."""
        return self.key.class_

    def free(self, holder: str, now: datetime) -> ColumnElement[bool]:
        """The rows `holder` may claim at `now`: nobody's, lapsed, or already its own."""
        return or_(self.until.is_(None), self.until < now, self.holder == holder)


async def claim(
    session: AsyncSession,
    leased: Leased,
    *,
    holder: str,
    now: datetime,
    seconds: float,
    where: ColumnElement[bool] | None = None,
    limit: int | None = None,
    values: Mapping[str, Any] | None = None,
    returning: Sequence[InstrumentedAttribute[Any]] = (),
) -> list[Any]:
    """Lease to `holder` for `seconds` the free rows that meet `where` (at most `limit`, by key);
    `values` are set on them too. Returns the keys claimed, in order (with `returning`: a row
    of the key and those columns for each). The caller commits."""
    chosen = select(leased.key).where(leased.free(holder, now))
    if where is not None:
        chosen = chosen.where(where)
    chosen = chosen.order_by(leased.key).with_for_update(skip_locked=True)
    if limit is not None:
        chosen = chosen.limit(limit)
    statement = (
        update(leased.table)
        .where(leased.key.in_(chosen.scalar_subquery()))
        .values(
            {
                leased.holder: holder,
                leased.until: now + timedelta(seconds=seconds),
                **{getattr(leased.table, name): value for name, value in (values or {}).items()},
            }
        )
        .returning(leased.key, *returning)
        .execution_options(synchronize_session=False)
    )
    if returning:
        return sorted(tuple(row) for row in (await session.execute(statement)).all())
    return sorted((await session.scalars(statement)).all())


async def renew(
    session: AsyncSession, leased: Leased, *, holder: str, now: datetime, seconds: float
) -> int:
    """Move on the expiry of every lease `holder` holds and has not let lapse: how many. The
    caller commits."""
    statement = (
        update(leased.table)
        .where(leased.holder == holder, leased.until.is_not(None), leased.until >= now)
        .values({leased.until: now + timedelta(seconds=seconds)})
        .execution_options(synchronize_session=False)
    )
    return await rows_changed(session, statement)


async def release(
    session: AsyncSession,
    leased: Leased,
    *,
    holder: str,
    keys: Collection[Any] | None = None,
    values: Mapping[str, Any] | None = None,
) -> int:
    """Give back `holder`'s leases (those of `keys`, or all), setting `values` on them too: free
    at once for another claimer, instead of at their expiry. How many. The caller commits."""
    base = (
        update(leased.table)
        .where(leased.holder == holder)
        .values(
            {
                leased.holder: None,
                leased.until: None,
                **{getattr(leased.table, name): value for name, value in (values or {}).items()},
            }
        )
        .execution_options(synchronize_session=False)
    )
    if keys is None:
        return await rows_changed(session, base)
    pieces = list(keys)
    released = 0
    for start in range(0, len(pieces), IN_PIECE):
        piece = pieces[start : start + IN_PIECE]
        released += await rows_changed(session, base.where(leased.key.in_(piece)))
    return released
