"""Declarative jobs (and recurring silences): read a YAML file, validate every entry, apply them
in one transaction."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.config.yamlfile import FileProblems, read_yaml
from service.core.clock import Clock, utcnow
from service.core.jobspec import JobSpec, error_details, parse_job
from service.core.silencespec import RecurringSilenceSpec
from service.core.visible import quote, shorten, visible
from service.db.engine import lock_jobs_file
from service.db.models import Job
from service.store.jobs import apply_declaration, delete_jobs, new_job, stored_declaration
from service.store.silences import DeclaredResult, apply_declared


class JobsFileError(FileProblems):
    """The file cannot be applied; `problems` lists every one, each naming job and field."""


TOP_LEVEL = ("jobs", "silences")


@dataclass(frozen=True, slots=True)
class Declarations:
    """What a jobs file declares. `silences` is None when the file has no `silences:` list."""

    jobs: list[JobSpec]
    silences: list[RecurringSilenceSpec] | None = None


def parse_jobs_document(
    document: object,
    source: str,
    scan_roots: Sequence[Path] = (),
    channels: Collection[str] | None = None,
) -> list[JobSpec]:
    """Validate a loaded `{"jobs": [...]}` document; all problems are reported at once."""
    return parse_declarations(document, source, scan_roots, channels).jobs


def parse_declarations(
    document: object,
    source: str,
    scan_roots: Sequence[Path] = (),
    channels: Collection[str] | None = None,
) -> Declarations:
    """Validate a loaded `{"jobs": [...], "silences": [...]}` document (silences optional);
    all problems are reported at once, each naming its entry and field."""
    if not isinstance(document, dict) or not isinstance(document.get("jobs"), list):
        raise JobsFileError(source, ["the file must be a mapping with a 'jobs' list"])
    problems = [f"unknown top-level field {quote(key)}" for key in document if key not in TOP_LEVEL]
    silences = _parse_silences(document.get("silences", None), "silences" in document, problems)
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
    return Declarations(specs, silences)


def _parse_silences(
    entries: object, present: bool, problems: list[str]
) -> list[RecurringSilenceSpec] | None:
    if not present:
        return None
    if entries is None:  # `silences:` with nothing under it
        return []
    if not isinstance(entries, list):
        problems.append("silences: must be a list of silences")
        return None
    silences: list[RecurringSilenceSpec] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(entries):
        label = f"silences[{index}]"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label += f" ({shorten(item['name'])})"
        try:
            spec = RecurringSilenceSpec.model_validate(item)
        except ValidationError as exc:
            for detail in error_details(exc):
                field = "(silence)" if detail["field"] == "(job)" else detail["field"]
                problems.append(f"{label}: {field}: {detail['message']}")
            continue
        if spec.name in first_index:
            problems.append(
                f"{label}: duplicate name {quote(spec.name)} "
                f"(also silences[{first_index[spec.name]}])"
            )
            continue
        first_index[spec.name] = index
        silences.append(spec)
    return silences


def load_declarations(
    path: str | Path, scan_roots: Sequence[Path] = (), channels: Collection[str] | None = None
) -> Declarations:
    """Read and validate a jobs file; raise JobsFileError naming every problem."""
    document = read_yaml(path, JobsFileError)
    return parse_declarations(document, str(path), scan_roots, channels)


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
    # None when the file declares no silences and none were removed.
    silences: DeclaredResult | None = None

    def summary(self) -> str:
        jobs = (
            f"{len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.deleted)} deleted"
        )
        return jobs if self.silences is None else f"{jobs}; {self.silences.summary()}"


@dataclass(frozen=True, slots=True)
class Change:
    """One field a declaration changes: its stored value and the declared one (JSON-ready)."""

    field: str
    old: Any
    new: Any


@dataclass(slots=True)
class JobsPlan:
    """What applying declarations would do to the jobs (silences aside), names sorted."""

    created: list[str] = field(default_factory=list)
    changed: dict[str, list[Change]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def render(self) -> str:
        """The plan as lines for a terminal (`+` created, `~` changed with each field's old and
        new value, `-` deleted), then a summary line; declared text shown escaped."""
        lines = [f"+ {visible(name)}" for name in self.created]
        for name, changes in self.changed.items():
            lines.append(f"~ {visible(name)}")
            lines.extend(
                f"    {change.field}: {visible(_json(change.old))} -> {visible(_json(change.new))}"
                for change in changes
            )
        lines += [f"- {visible(name)}" for name in self.deleted]
        lines.append(
            f"would create {len(self.created)}, change {len(self.changed)}, delete "
            f"{len(self.deleted)} (unchanged {len(self.unchanged)}); nothing was written"
        )
        return "\n".join(lines)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def plan_jobs(
    existing: Mapping[str, Mapping[str, Any]], specs: Sequence[JobSpec], *, prune: bool
) -> JobsPlan:
    """What `apply_jobs` would do, from the stored declarations by name (pure): the same
    comparison it makes (apply_declaration), field by field."""
    plan = JobsPlan()
    for spec in sorted(specs, key=lambda spec: spec.name):
        stored = existing.get(spec.name)
        if stored is None:
            plan.created.append(spec.name)
            continue
        declared = spec.declaration()
        changes = [
            Change(name, stored.get(name), value)
            for name, value in declared.items()
            if stored.get(name) != value
        ]
        if changes:
            plan.changed[spec.name] = changes
        else:
            plan.unchanged.append(spec.name)
    if prune:
        plan.deleted = sorted(set(existing) - {spec.name for spec in specs})
    return plan


async def dry_run_jobs(
    session: AsyncSession, specs: Sequence[JobSpec], *, prune: bool = False
) -> JobsPlan:
    """The plan of applying `specs` to the jobs as they are: reads, writes nothing."""
    jobs = (await session.scalars(select(Job))).all()
    plan = plan_jobs({job.name: stored_declaration(job) for job in jobs}, specs, prune=prune)
    await session.rollback()
    return plan


async def apply_jobs(
    session: AsyncSession,
    specs: Sequence[JobSpec],
    *,
    prune: bool = False,
    clock: Clock = utcnow,
    silences: Sequence[RecurringSilenceSpec] | None = None,
) -> ApplyResult:
    """Create or update the declared jobs (and delete the others with `prune`), and the
    file's recurring silences by name (with `prune`, the file's silences it no longer declares
    are ended; those made through the API are never touched); one commit.

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
    if silences is not None or prune:
        declared = await apply_declared(session, silences or (), prune=prune, now=now)
        if silences is not None or declared.removed:
            result.silences = declared
    await session.commit()
    return result


def exported_job(name: str, stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored job as a jobs file declares it: what differs from the defaults (so the file
    reads like one written by hand), the source's `type` always said. Applying it back gives
    the same stored declaration. A declaration this version cannot read is given as stored."""
    try:
        spec = parse_job({"name": name, **stored})
    except ValidationError:
        return {"name": name, **stored}
    exported = spec.model_dump(mode="json", exclude_defaults=True, by_alias=True)
    if spec.source is not None:
        exported["source"] = {"type": spec.source.type, **exported.get("source", {})}
    return exported


async def export_jobs(session: AsyncSession) -> str:
    """Every job of the database as a jobs file (YAML, by name): `jobs apply` of it changes
    nothing. Reads only; the ping keys, silences and state are not part of it."""
    jobs = (await session.scalars(select(Job).order_by(Job.name))).all()
    document = {"jobs": [exported_job(job.name, stored_declaration(job)) for job in jobs]}
    await session.rollback()
    header = f"# backup-monitor jobs export: {len(jobs)} job(s); apply with `jobs apply FILE`\n"
    return header + yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )
