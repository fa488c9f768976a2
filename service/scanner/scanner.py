"""BackupScanner: list each job's source, sync the artifact inventory, judge the job.

One transaction per job, so one broken job never rolls back the others. A listing identical to
the last one committed (same digest) reads and writes no artifact row at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import describe_error
from service.jobspec import JobSpec, error_details, parse_job
from service.models import Artifact, Job, JobCheck, ScanRun
from service.scanner.rules import ArtifactFact, Evaluation, evaluate
from service.scanner.sources import FileEntry, Listing, SourceError, open_source

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Unchanged jobs only need their checked_at moved; they are written together, this many at once.
TOUCH_BATCH = 500


def utcnow() -> datetime:
    return datetime.now(UTC)


def entry_time(entry: FileEntry) -> datetime:
    return EPOCH + timedelta(microseconds=entry.mtime_us)


def listing_digest(source: dict[str, Any] | None, entries: Sequence[FileEntry]) -> str:
    """A fingerprint of what was listed, and from where (a changed source changes it)."""
    digest = hashlib.sha256(json.dumps(source, sort_keys=True).encode())
    for entry in sorted(entries, key=lambda e: e.path):
        digest.update(f"\0{entry.path}\0{entry.size}\0{entry.mtime_us}".encode("utf-8", "replace"))
    return digest.hexdigest()


def artifact_summary(fact: ArtifactFact | None) -> dict[str, Any] | None:
    if fact is None:
        return None
    return {"path": fact.path, "size": fact.size, "mtime": fact.mtime.isoformat()}


@dataclass(frozen=True, slots=True)
class JobRow:
    """What the scanner reads of a job: a plain snapshot, safe to use after a rollback."""

    id: int
    name: str
    declaration: dict[str, Any]
    created_at: datetime
    status: str
    reasons: list[dict[str, str]]
    next_check_at: datetime | None
    checked_at: datetime | None
    latest_artifact: dict[str, Any] | None
    artifact_count: int
    listing_digest: str | None


_JOB_COLUMNS = (
    Job.id, Job.name, Job.description, Job.tags, Job.source, Job.schedule, Job.grace, Job.rules,
    Job.paused, Job.created_at, Job.status, Job.reasons, Job.next_check_at, Job.checked_at,
    Job.latest_artifact,
    Job.artifact_count, Job.listing_digest,
)  # fmt: skip


def _job_row(row: Any) -> JobRow:
    return JobRow(
        id=row.id,
        name=row.name,
        declaration={
            "name": row.name,
            "description": row.description,
            "tags": row.tags,
            "source": row.source,
            "schedule": row.schedule,
            "grace": row.grace,
            "rules": row.rules,
            "paused": row.paused,
        },
        created_at=row.created_at,
        status=row.status,
        reasons=row.reasons,
        next_check_at=row.next_check_at,
        checked_at=row.checked_at,
        latest_artifact=row.latest_artifact,
        artifact_count=row.artifact_count,
        listing_digest=row.listing_digest,
    )


@dataclass(slots=True)
class JobResult:
    """The outcome of one job's scan, as the CLI and the API report it."""

    name: str
    status: str
    reasons: list[dict[str, str]]
    latest_artifact: dict[str, Any] | None
    artifact_count: int
    new: int = 0
    changed: int = 0
    gone: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        latest = self.latest_artifact
        return {
            "name": self.name,
            "status": self.status,
            "reasons": self.reasons,
            "latest_artifact": (
                {"path": latest["path"], "size": latest["size"], "mtime": latest["mtime"]}
                if latest
                else None
            ),
            "artifact_count": self.artifact_count,
        }


@dataclass(slots=True)
class ScanReport:
    scan_id: int
    status: str
    jobs: list[JobResult] = field(default_factory=list)


class BackupScanner:
    """Scans every job (or the named ones) and records the run in scan_runs."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        clock: Clock = utcnow,
        scan_roots: Sequence[Path] = (),
        source_timeout: float = 300.0,
        trigger: str = "schedule",
        stop: asyncio.Event | None = None,
    ) -> None:
        self.session = session
        self.clock = clock
        self.scan_roots = tuple(scan_roots)
        self.source_timeout = source_timeout
        self.trigger = trigger
        self.stop = stop or asyncio.Event()
        self._touched: list[int] = []
        self._touched_at = clock()

    async def scan_all_jobs(self, names: Sequence[str] | None = None) -> ScanReport:
        """Scan every job (or those named); each job commits on its own."""
        session = self.session
        run = ScanRun(
            trigger=self.trigger,
            status="running",
            started_at=self.clock(),
            jobs_scanned=0,
            artifacts_new=0,
            artifacts_changed=0,
            artifacts_gone=0,
            errors=0,
            error_details=[],
        )
        session.add(run)
        await session.commit()
        run_id = run.id
        logger.info("scan started", extra={"scan_id": run_id, "trigger": self.trigger})

        query = select(*_JOB_COLUMNS).order_by(Job.name)
        if names is not None:
            query = query.where(Job.name.in_(names))
        jobs = [_job_row(row) for row in (await session.execute(query)).all()]
        await session.commit()  # end the read transaction: each job gets its own

        report = ScanReport(scan_id=run_id, status="finished")
        totals = {"jobs_scanned": 0, "artifacts_new": 0, "artifacts_changed": 0,
                  "artifacts_gone": 0, "errors": 0}  # fmt: skip
        errors: list[dict[str, str]] = []
        for job in jobs:
            if self.stop.is_set():
                report.status = "interrupted"
                logger.warning("scan interrupted", extra={"scan_id": run_id})
                break
            try:
                result = await self.scan_job(job)
            except Exception as exc:
                await session.rollback()
                logger.exception("job scan failed", extra={"job": job.name, "scan_id": run_id})
                message = f"internal error while scanning: {describe_error(exc)}"
                reason = {"code": "scan_error", "severity": "unknown", "message": message}
                result = JobResult(
                    job.name, "unknown", [reason], job.latest_artifact, job.artifact_count,
                    error=message,
                )  # fmt: skip
            report.jobs.append(result)
            totals["jobs_scanned"] += 1
            totals["artifacts_new"] += result.new
            totals["artifacts_changed"] += result.changed
            totals["artifacts_gone"] += result.gone
            if result.error:
                totals["errors"] += 1
                errors.append({"job": job.name, "message": result.error})
        await self._flush_touched()

        values: dict[str, Any] = dict(totals, error_details=errors[:100])
        values.update(status=report.status, finished_at=self.clock())
        await session.execute(update(ScanRun).where(ScanRun.id == run_id).values(**values))
        await session.commit()
        logger.info("scan finished", extra={"scan_id": run_id, "status": report.status, **totals})
        return report

    async def scan_job(self, job: JobRow) -> JobResult:
        """List one job's source, sync its artifacts and record its evaluation."""
        try:
            spec = parse_job(job.declaration, self.scan_roots)
        except ValidationError as exc:
            # A stored declaration that no longer validates (e.g. its path now resolves
            # outside SCAN_ROOTS): report it on the job instead of scanning.
            problems = "; ".join(f"{d['field']}: {d['message']}" for d in error_details(exc))
            return await self._record(job, None, None, source_error=problems)

        listing: Listing | None = None
        source_error: str | None = None
        if spec.source is not None:
            source = open_source(
                spec.source, timeout=self.source_timeout, scan_roots=self.scan_roots
            )
            try:
                listing = await source.list_files()
            except SourceError as exc:
                source_error = str(exc)
            else:
                for note in listing.skipped:
                    logger.info("entry skipped", extra={"job": job.name, "detail": note})
        return await self._record(job, spec, listing, source_error=source_error)

    async def _record(
        self,
        job: JobRow,
        spec: JobSpec | None,
        listing: Listing | None,
        *,
        source_error: str | None,
    ) -> JobResult:
        now = self.clock()
        entries = listing.entries if listing else []
        facts = [ArtifactFact(e.path, e.size, entry_time(e)) for e in entries]
        warnings = listing.warnings if listing else []
        if spec is None:
            evaluation = Evaluation("unknown", (), None, None)
            message = source_error or "the stored declaration is invalid"
            reasons = [{"code": "source_error", "severity": "unknown", "message": message}]
        else:
            evaluation = evaluate(
                spec, facts, now=now, created_at=job.created_at,
                source_error=source_error, listing_warnings=warnings,
            )  # fmt: skip
            reasons = [reason.as_dict() for reason in evaluation.reasons]

        # An incomplete listing may hide files that still exist: never mark anything gone from
        # it, and do not remember it as the last good listing.
        digest = None
        if listing is not None and not warnings:
            digest = listing_digest(spec.declaration()["source"] if spec else None, entries)
        if listing is not None or (spec is not None and spec.source is None):
            latest = artifact_summary(evaluation.newest)
            count = len(entries)
        else:  # the source could not be read: keep what we knew
            latest, count = job.latest_artifact, job.artifact_count
        state = {
            "status": evaluation.status,
            "reasons": reasons,
            "next_check_at": evaluation.deadline,
            "latest_artifact": latest,
            "artifact_count": count,
            "listing_digest": digest,
        }
        needs_sync = listing is not None and (digest is None or digest != job.listing_digest)
        counts = (0, 0, 0)
        if not needs_sync and all(getattr(job, key) == value for key, value in state.items()):
            # Nothing to write but checked_at, which unchanged jobs share in one statement.
            self._touched.append(job.id)
            if len(self._touched) >= TOUCH_BATCH:
                await self._flush_touched()
        elif not await self._claim(job):
            await self.session.rollback()
            logger.info("job skipped: another scan is writing it", extra={"job": job.name})
            return JobResult(
                job.name, job.status, job.reasons, job.latest_artifact, job.artifact_count
            )
        else:
            if needs_sync:
                counts = await self._sync_artifacts(job, entries, now, mark_gone=not warnings)
            await self._write_state(job, state, now)

        if evaluation.status != job.status or source_error:
            logger.log(
                logging.WARNING if evaluation.status in ("critical", "unknown") else logging.INFO,
                "job evaluated",
                extra={
                    "job": job.name,
                    "status": evaluation.status,
                    "previous": job.status,
                    "reason": ",".join(r["code"] for r in reasons) or "-",
                },
            )
        return JobResult(
            job.name, evaluation.status, reasons, latest, count, *counts,
            error=source_error,
        )  # fmt: skip

    async def _claim(self, job: JobRow) -> bool:
        """Lock the job's row for this transaction; False when another scan holds it (or the
        job was deleted meanwhile). SQLite has a single writer and needs no claim."""
        query = select(Job.id).where(Job.id == job.id)
        if self.session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return await self.session.scalar(query) is not None

    async def _write_state(self, job: JobRow, state: dict[str, Any], now: datetime) -> None:
        session = self.session
        values = dict(state, checked_at=now)
        if state["status"] != job.status:
            values["status_changed_at"] = now
            await session.execute(
                insert(JobCheck).values(
                    job_id=job.id,
                    checked_at=now,
                    status=state["status"],
                    previous_status=job.status,
                    reasons=state["reasons"],
                    latest_artifact=state["latest_artifact"],
                )
            )
        await session.execute(update(Job).where(Job.id == job.id).values(**values))
        await session.commit()

    async def _flush_touched(self) -> None:
        """Move checked_at on jobs whose state did not change, in one statement."""
        if not self._touched:
            return
        ids, self._touched = self._touched, []
        await self.session.execute(
            update(Job).where(Job.id.in_(ids)).values(checked_at=self.clock())
        )
        await self.session.commit()

    def _insert_artifacts(self) -> Any:
        """INSERT that skips a path already present (a concurrent writer got there first)."""
        dialect = self.session.get_bind().dialect.name
        insert_for = postgresql.insert if dialect == "postgresql" else sqlite.insert
        return insert_for(Artifact).on_conflict_do_nothing(
            index_elements=["job_id", "path"], index_where=Artifact.gone_since.is_(None)
        )

    async def _sync_artifacts(
        self, job: JobRow, entries: Sequence[FileEntry], now: datetime, *, mark_gone: bool
    ) -> tuple[int, int, int]:
        """Insert new artifacts, update changed ones, mark vanished ones; return the counts."""
        session = self.session
        rows = await session.execute(
            select(Artifact.id, Artifact.path, Artifact.size, Artifact.mtime).where(
                Artifact.job_id == job.id, Artifact.gone_since.is_(None)
            )
        )
        known = {row.path: row for row in rows}
        new: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        for entry in entries:
            mtime = entry_time(entry)
            row = known.pop(entry.path, None)
            if row is None:
                new.append({"job_id": job.id, "path": entry.path, "size": entry.size,
                            "mtime": mtime, "first_seen": now, "last_seen": now})  # fmt: skip
            elif row.size != entry.size or row.mtime != mtime:
                changed.append({"id": row.id, "size": entry.size, "mtime": mtime,
                                "last_seen": now})  # fmt: skip
        gone_ids = [row.id for row in known.values()] if mark_gone else []

        if new:
            await session.execute(self._insert_artifacts(), new)
        if changed:
            await session.execute(update(Artifact), changed)
        if gone_ids:
            # Present artifacts are confirmed by every scan without a write; the last scan
            # that saw this one is the job's previous check.
            await session.execute(
                update(Artifact)
                .where(Artifact.id.in_(gone_ids))
                .values(gone_since=now, last_seen=job.checked_at or now)
            )
        return len(new), len(changed), len(gone_ids)


async def run_scanner(session: AsyncSession, **options: Any) -> ScanReport:
    """Entry point for the scheduler and the CLI: scan every job with this session."""
    from service.settings import get_settings

    settings = get_settings()
    options.setdefault("scan_roots", settings.scan_roots)
    options.setdefault("source_timeout", settings.source_timeout_seconds)
    names = options.pop("names", None)
    return await BackupScanner(session, **options).scan_all_jobs(names)
