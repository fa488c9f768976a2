"""Declarative jobs: read a YAML file, validate every job, apply them in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import lock_jobs_file
from service.jobs import apply_declaration, delete_jobs, new_job
from service.jobspec import JobSpec, error_details, parse_job
from service.models import Job
from service.visible import quote, shorten
from service.yamlfile import FileProblems, read_yaml


class JobsFileError(FileProblems):
    """The file cannot be applied; `problems` lists every one, each naming job and field."""


def parse_jobs_document(
    document: object,
    source: str,
    scan_roots: Sequence[Path] = (),
    channels: Collection[str] | None = None,
) -> list[JobSpec]:
    """Validate a loaded `{"jobs": [...]}` document; all problems are reported at once."""
    if not isinstance(document, dict) or not isinstance(document.get("jobs"), list):
        raise JobsFileError(source, ["the file must be a mapping with a 'jobs' list"])
    problems = [f"unknown top-level field {quote(key)}" for key in document if key != "jobs"]
    specs: list[JobSpec] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(document["jobs"]):
        label = f"jobs[{index}]"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label += f" ({shorten(item['name'])})"
        try:
            spec = parse_job(item, scan_roots, channels)
        except ValidationError as exc:
            problems += [f"{label}: {d['field']}: {d['message']}" for d in error_details(exc)]
            continue
        if spec.name in first_index:
            problems.append(
                f"{label}: duplicate name {quote(spec.name)} (also jobs[{first_index[spec.name]}])"
            )
            continue
        first_index[spec.name] = index
        specs.append(spec)
    if problems:
        raise JobsFileError(source, problems)
    return specs


def load_jobs_file(
    path: str | Path, scan_roots: Sequence[Path] = (), channels: Collection[str] | None = None
) -> list[JobSpec]:
    """Read and validate a jobs file; raise JobsFileError naming every problem."""
    document = read_yaml(path, JobsFileError)
    return parse_jobs_document(document, str(path), scan_roots, channels)


@dataclass(slots=True)
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.deleted)} deleted"
        )


async def apply_jobs(
    session: AsyncSession,
    specs: Sequence[JobSpec],
    *,
    prune: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ApplyResult:
    """Create or update the declared jobs (and delete the others with `prune`); one commit.

    Applying the same file twice changes nothing the second time.
    """
    now = clock()
    result = ApplyResult()
    # Before reading what exists: a replica applying the same file at the same moment would
    # otherwise insert the same names (a unique violation for one of the two).
    await lock_jobs_file(session)
    existing = {job.name: job for job in (await session.scalars(select(Job))).all()}
    for spec in specs:
        job = existing.get(spec.name)
        if job is None:
            session.add(new_job(spec, now))
            result.created.append(spec.name)
        elif apply_declaration(job, spec, now):
            result.updated.append(spec.name)
        else:
            result.unchanged.append(spec.name)
    if prune:
        declared_names = {spec.name for spec in specs}
        result.deleted = sorted(set(existing) - declared_names)
        # Their notices not delivered yet are cancelled with them (see delete_jobs).
        await delete_jobs(session, {existing[name].id: name for name in result.deleted})
    await session.commit()
    return result
