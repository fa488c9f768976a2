"""Importing checks from Healthchecks: its Management API v3 list (`GET /api/v3/checks/`, from a
file or fetched), one heartbeat job per check.

Each check keeps its ping URL: the UUID at the end of its `ping_url` (or its `uuid` field)
becomes the job's ping key, so `curl https://hc.example/ping/<uuid>` lines keep working once the
host is pointed here. Only read-write API keys list ping URLs: a read-only key's list is refused.

Mapping (pure: `jobs_of_checks`): the check's slug (else its name, slugified) is the job's
name; `timeout` seconds become `schedule.every`, or `schedule` + `tz` a cron schedule; `grace`,
`desc` (description), `tags` (space-separated) carry over; a paused check is a paused job.

Import (`import_checks`) is idempotent: a job already holding the check's ping key is updated
(or left alone when equal), others are created; one transaction, and every problem (an
unusable check, a name held by another job) is told before anything is written.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.config.yamlfile import FileProblems
from service.core.jobspec import JOB_NAME_PATTERN, JobSpec, error_details, parse_job
from service.core.visible import quote, shorten
from service.db.engine import lock_jobs_file
from service.db.models import Job
from service.store.jobs import apply_declaration, new_job

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_PING_KEY = 64


class ImportProblems(FileProblems):
    """The checks cannot be imported; `problems` names each check and what is wrong."""


@dataclass(frozen=True, slots=True)
class ImportedCheck:
    spec: JobSpec
    ping_key: str


@dataclass(slots=True)
class ImportResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged"
        )


def slugify(name: str) -> str:
    """A job name from a check's name, as Healthchecks derives slugs ("Database Backup" ->
    "database-backup", accents dropped as Django's slugify does); prefixed with `hc-` when it
    would not start with a letter."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9_]+", "-", ascii_name.lower()).strip("-")
    if not slug or not slug[0].isalpha():
        slug = f"hc-{slug}".rstrip("-")
    return slug[:100].rstrip("-")


def ping_key_of(check: dict[str, Any]) -> str | None:
    """The check's UUID: its `uuid` field, or the last part of its `ping_url`."""
    uuid = check.get("uuid")
    if isinstance(uuid, str) and uuid:
        return uuid
    url = check.get("ping_url")
    if isinstance(url, str) and url.rstrip("/"):
        last = url.rstrip("/").rsplit("/", 1)[-1]
        return last or None
    return None


def _declaration(check: dict[str, Any], name: str) -> dict[str, Any]:
    declared: dict[str, Any] = {"name": name}
    if check.get("schedule") not in (None, ""):
        declared["schedule"] = {"cron": check["schedule"], "timezone": check.get("tz") or "UTC"}
    else:
        declared["schedule"] = {"every": check.get("timeout")}
    if check.get("grace") is not None:
        declared["grace"] = check["grace"]
    if check.get("desc"):
        declared["description"] = check["desc"]
    tags = check.get("tags")
    if isinstance(tags, str) and tags.strip():
        declared["tags"] = tags.split()
    declared["paused"] = check.get("status") == "paused"
    return declared


def jobs_of_checks(document: object, source: str) -> list[ImportedCheck]:
    """Validate a `{"checks": [...]}` document; ImportProblems lists every problem at once."""
    if not isinstance(document, dict) or not isinstance(document.get("checks"), list):
        raise ImportProblems(source, ['expected Healthchecks\' check list: {"checks": [...]}'])
    problems: list[str] = []
    imported: list[ImportedCheck] = []
    names: dict[str, int] = {}
    keys: dict[str, int] = {}
    for index, check in enumerate(document["checks"]):
        if not isinstance(check, dict):
            problems.append(f"checks[{index}]: not an object")
            continue
        title = check.get("name") if isinstance(check.get("name"), str) else ""
        label = f"checks[{index}] ({shorten(title)})" if title else f"checks[{index}]"
        slug = check.get("slug")
        name = slug if isinstance(slug, str) and re.fullmatch(JOB_NAME_PATTERN, slug) else ""
        name = name or slugify(title or f"check-{index}")
        key = ping_key_of(check)
        if key is None:
            problems.append(
                f"{label}: no ping URL (a read-only API key hides it: use a read-write key)"
            )
            continue
        if len(key) > MAX_PING_KEY or not re.fullmatch(r"[A-Za-z0-9_-]+", key):
            problems.append(f"{label}: ping key {quote(key)} is not a UUID-like key")
            continue
        try:
            spec = parse_job(_declaration(check, name))
        except ValidationError as exc:
            problems += [f"{label}: {d['field']}: {d['message']}" for d in error_details(exc)]
            continue
        if name in names:
            problems.append(f"{label}: job name {quote(name)} also for checks[{names[name]}]")
            continue
        if key in keys:
            problems.append(f"{label}: ping key also of checks[{keys[key]}]")
            continue
        names[name], keys[key] = index, index
        imported.append(ImportedCheck(spec, key))
    if problems:
        raise ImportProblems(source, problems)
    return imported


async def import_checks(
    session: AsyncSession, checks: Sequence[ImportedCheck], now: datetime, source: str
) -> ImportResult:
    """Create or update one job per check (found by its ping key); one commit. A check whose
    name another job holds (with another ping key) is a problem: nothing is written."""
    await lock_jobs_file(session)
    jobs = (await session.scalars(select(Job))).all()
    by_key = {job.ping_key: job for job in jobs}
    by_name = {job.name: job for job in jobs}
    problems = []
    for check in checks:
        holder = by_name.get(check.spec.name)
        if holder is not None and holder.ping_key != check.ping_key:
            problems.append(
                f"job {quote(check.spec.name)} exists with another ping key (not imported from "
                "this check): rename one of them"
            )
    if problems:
        await session.rollback()
        raise ImportProblems(source, problems)
    result = ImportResult()
    for check in checks:
        job = by_key.get(check.ping_key)
        if job is None:
            job = new_job(check.spec, now)
            job.ping_key = check.ping_key
            job.next_check_at = now
            session.add(job)
            result.created.append(check.spec.name)
        elif apply_declaration(job, check.spec, now):
            result.updated.append(check.spec.name)
        else:
            result.unchanged.append(check.spec.name)
    await session.commit()
    return result


FETCH_SECONDS = 30


async def fetch_checks(url: str, api_key: str) -> object:
    """GET `<url>/api/v3/checks/` with the API key (X-Api-Key); the decoded JSON. ValueError
    (one line) for an answer that is not a 200 with JSON, or no answer within FETCH_SECONDS."""
    import aiohttp

    endpoint = url.rstrip("/") + "/api/v3/checks/"
    client_timeout = aiohttp.ClientTimeout(total=FETCH_SECONDS)
    try:
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as http,
            http.get(endpoint, headers={"X-Api-Key": api_key}) as response,
        ):
            if response.status != 200:
                raise ValueError(f"{endpoint} answered {response.status} {response.reason}")
            try:
                return await response.json(content_type=None)
            except ValueError:
                raise ValueError(f"{endpoint} did not answer JSON") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ValueError(f"{endpoint}: {str(exc) or type(exc).__name__}") from None
