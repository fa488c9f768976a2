"""Secrets the servers share through the database: random, made once on first use, the same
for every replica and after every restart (nothing to configure, nothing to keep in sync)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import ServerSecret

BADGES = "badges"


async def shared_secret(session: AsyncSession, name: str) -> bytes:
    """The secret called `name`, made (256 random bits) and committed on first use. Of replicas
    making it at once, the first insert wins and the others read it back: all use one value."""
    stored = await session.scalar(select(ServerSecret.value).where(ServerSecret.name == name))
    if stored is not None:
        return bytes.fromhex(stored)
    session.add(ServerSecret(name=name, value=secrets.token_hex(32), created_at=datetime.now(UTC)))
    try:
        await session.commit()
    except IntegrityError:  # another replica made it first
        await session.rollback()
    stored = await session.scalar(select(ServerSecret.value).where(ServerSecret.name == name))
    if stored is None:  # pragma: no cover - just made or read
        raise RuntimeError(f"the server secret {name!r} could not be stored")
    return bytes.fromhex(stored)
