"""Helpers shared by the tests: declaring jobs, building backup trees."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.jobsfile import new_job
from service.jobspec import parse_job
from service.models import Job


async def add_job(
    sessionmaker: async_sessionmaker[AsyncSession], created_at: datetime, **declaration: Any
) -> int:
    """Declare one job (validated like the YAML file does) and return its id."""
    declaration.setdefault("schedule", {"every": "1d"})
    job = new_job(parse_job(declaration), created_at)
    async with sessionmaker() as session:
        session.add(job)
        await session.commit()
        return job.id


async def get_job(sessionmaker: async_sessionmaker[AsyncSession], name: str) -> Job:
    async with sessionmaker() as session:
        job = await session.scalar(select(Job).where(Job.name == name))
        assert job is not None, f"no job {name}"
        return job


def make_file(path: Path, size: int, mtime: datetime) -> Path:
    """A file of `size` bytes whose modification time is `mtime`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)
    stamp = mtime.timestamp()
    os.utime(path, (stamp, stamp))
    return path
