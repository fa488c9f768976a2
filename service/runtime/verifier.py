"""The verifier: reads the backups of the jobs that declare `verify:` and records what it found.

- What: each present artifact once it has settled (its time `settle` old), then again every
  `verify.every`, and again when it was rewritten since the version verified; the newest first;
  one artifact per job at a time; and the repository of a restic or borg job every
  `verify.repository.every`.
- Where: a local file is read in a worker process of the lowest priority (service.runtime.
  local_verify: scans, pings and the API get the cores first); an S3 object or an SFTP
  file is streamed (service.runtime.remote_verify: read on the loop, each piece checked in a
  worker thread, never on disk); at most VERIFY_WORKERS artifacts at once, under one byte
  budget shared by all of them (VERIFY_BYTES_PER_SECOND); the event loop only claims, records
  and re-judges.
- Several replicas: each artifact (and each repository check) is leased in the database by a
  conditional UPDATE checked by its rowcount (service.store.verifications); the lease is renewed
  while the file is read, and what is recorded is fenced by it.
- A file that changed while it was read (size or time before and after differ, or differ from
  the listing) is not judged: it is tried again VERIFY_RETRY_SECONDS later.
- Stopping: the readers are told to stop (they stop at their next read), the leases are given
  back with no result: the artifacts are verified again by the next start (or another replica).
- After each result, the job is judged again through the scanner (trigger "verify"), as the
  watcher and the deadline tick do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.clock import Clock, utcnow
from service.core.jobspec import (
    DECLARATION_FIELDS,
    BorgSource,
    JobSpec,
    LocalSource,
    ResticSource,
    S3Source,
    SftpSource,
    Verify,
    parse_job,
)
from service.core.scan_options import ScanOptions
from service.db.engine import database_url_of, lock_for_write
from service.db.errors import describe_error, log_failure
from service.db.models import Job
from service.runtime.lifecycle import drain
from service.runtime.local_verify import WorkerDied, verify_local_file
from service.runtime.remote_verify import verify_s3_object, verify_sftp_file
from service.scanner.scanner import run_scanner
from service.scanner.sources import borg, restic
from service.scanner.sources.process import RepositoryCheck
from service.scanner.sources.s3 import S3Listing
from service.scanner.sources.sftp import SftpListing
from service.settings import Settings
from service.store import verifications
from service.store.verifications import DueArtifact, Result
from service.verify.budget import Budget
from service.verify.formats import Limits

logger = logging.getLogger(__name__)

# How long a stop waits, after its grace, for cancelled work to unwind and give its leases back
# (a reader's end waits up to 5 s for a worker process, then 1 s for its last words).
UNWIND_SECONDS = 8.0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    """How one app verifies (from the VERIFY_* settings)."""

    bytes_per_second: int = 200_000_000
    workers: int = 2
    poll_seconds: float = 5.0
    lease_seconds: float = 300.0
    retry_seconds: float = 300.0
    limits: Limits = field(default_factory=Limits)
    check_timeout: float = 3600.0


@dataclass(frozen=True, slots=True)
class _Declared:
    """A job that declares verification, as the verifier needs it."""

    id: int
    name: str
    spec: JobSpec
    verify: Verify


@dataclass(slots=True)
class VerifierStats:
    """What this process's verifier did since it started (for /metrics)."""

    bytes_read: int = 0
    verified: int = 0
    changed: int = 0
    checks: int = 0


class Verifier:
    """Verifies the artifacts of one app's jobs (see the module docstring)."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        options: VerifyOptions | None = None,
        *,
        scan_options: ScanOptions | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.sessions = session_factory
        self.options = options or VerifyOptions()
        self.scan_options = scan_options or ScanOptions()
        self.clock = clock or self.scan_options.clock or utcnow
        self.stats = VerifierStats()
        self._budget: Budget | None = None  # made at the start, shared by the readers
        self._stop = asyncio.Event()
        self._halt = threading.Event()  # the readers' stop signal (they run in threads)
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._work: set[asyncio.Task[None]] = set()
        # Leases being given back (or results recorded) by work that was cancelled: see _hand_in.
        self._handing_in: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start looking for due work (at once, then every VERIFY_POLL_SECONDS)."""
        if self._loop_task is not None:
            return
        if self._budget is None:
            self._budget = Budget(self.options.bytes_per_second)
        self._stop.clear()
        self._halt.clear()
        self._loop_task = asyncio.create_task(self._run(), name="verifier")

    def wake(self) -> None:
        """Look for due work now (a test, or a scan that found new files)."""
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """Stop: the readers stop at their next read; their leases are given back."""
        if self._loop_task is None:
            return
        self._stop.set()
        self._halt.set()
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # The look for work first: one under way still claims what it found, and starts it
        # (the readers halted: its leases are given back at once). Work started meanwhile was
        # not waited for: its leases were given back, if at all, after the service had stopped.
        await drain([self._loop_task], grace)
        if left := self._work | self._handing_in:
            _, pending = await asyncio.wait(left, timeout=max(0.0, deadline - loop.time()))
            for task in pending:
                task.cancel()
        # Cancelled work still hands in its lease (_hand_in) once it has unwound: a reader's
        # end may take 6 s (a worker stuck in the kernel). Waited for, within UNWIND_SECONDS.
        end = loop.time() + UNWIND_SECONDS
        while (left := self._work | self._handing_in) and loop.time() < end:
            await asyncio.wait(left, timeout=end - loop.time())
        for task in self._work | self._handing_in:
            task.cancel()
        self._loop_task = None

    @property
    def bytes_taken(self) -> int:
        """The bytes read so far by this verifier's readers (live: counted as they read)."""
        return self._budget.taken if self._budget is not None else 0

    @property
    def busy(self) -> int:
        """Artifacts and repositories being verified now."""
        return len(self._work)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # the database is away, or a bug: log, try again later
                log_failure(
                    logger, "verifier: looking for work failed", exc, database_url_of(self.sessions)
                )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.poll_seconds):
                    await self._wake.wait()

    async def run_once(self) -> int:
        """Claim the work due now (as many as free workers) and start it; how many started."""
        free = self.options.workers - len(self._work)
        if free <= 0 or self._stop.is_set():
            return 0
        now = self.clock()
        lease = now + timedelta(seconds=self.options.lease_seconds)
        started = 0
        async with self.sessions() as session:
            declared = await _declared_jobs(session)
            files = {job.id: job for job in declared if job.verify.files}
            repos = {job.id: job for job in declared if job.verify.repository is not None}
            settle = {job.id: job.spec.source.settle for job in files.values() if job.spec.source}
            # Each read is committed before the next write: on SQLite, a read turned into a
            # write fails when another connection wrote in between.
            await session.commit()
            if files:
                await lock_for_write(session)
                await verifications.add_missing(session, list(files))
                await session.commit()
            due_now = await verifications.due_artifacts(session, settle, now, free)
            await session.commit()
            for due in due_now:
                await lock_for_write(session)
                won = await verifications.claim(session, due.job_id, due.artifact_id, now, lease)
                await session.commit()
                if won:
                    self._spawn(self._verify(files[due.job_id], due, lease))
                    started += 1
            free -= started
            if repos and free > 0:
                await lock_for_write(session)
                due_jobs = await verifications.due_checks(session, list(repos), now)
                await session.commit()
                for job_id in due_jobs[:free]:
                    await lock_for_write(session)
                    won = await verifications.claim_check(session, job_id, now, lease)
                    await session.commit()
                    if won:
                        self._spawn(self._check(repos[job_id], lease))
                        started += 1
        return started

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._work.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._work.discard(finished)
            self._wake.set()  # a worker is free: look for more

        task.add_done_callback(done)

    async def _hand_in(self, finish: Coroutine[Any, Any, None]) -> None:
        """Run `finish` (a result recorded, a lease given back) to its end even when the work
        awaiting it is cancelled by a stop; stop() waits for it."""
        task = asyncio.ensure_future(finish)
        self._handing_in.add(task)
        task.add_done_callback(self._handing_in.discard)
        await asyncio.shield(task)

    # --- one artifact ---------------------------------------------------------------------

    async def _verify(self, job: _Declared, due: DueArtifact, lease: datetime) -> None:
        source = job.spec.source
        assert isinstance(source, LocalSource | S3Source | SftpSource)
        held = [lease]
        renewer = asyncio.create_task(self._renew(due.artifact_id, held))
        outcome: Result | None = None
        assert self._budget is not None
        try:
            if isinstance(source, S3Source):  # streamed: never on disk
                read = await verify_s3_object(
                    S3Listing(source), due, job.verify, self._budget, self.options.limits,
                    self._halt,
                )  # fmt: skip
            elif isinstance(source, SftpSource):
                read = await verify_sftp_file(
                    SftpListing(source), due, job.verify, self._budget, self.options.limits,
                    self._halt,
                )  # fmt: skip
            else:
                path = os.path.join(source.path, due.path)
                read = await verify_local_file(
                    path, due, job.verify, self._budget, self.options.limits, self._halt
                )
            self.stats.bytes_read += read.bytes_read
            if read.result == "changed":
                self.stats.changed += 1
                logger.info(
                    "verify: artifact changed while read, again later",
                    extra={"job": job.name, "path": due.path, "detail": read.detail},
                )
            elif read.result != "stopped":
                outcome = Result(
                    read.result,
                    read.detail,
                    read.sidecar,
                    read.bytes_read,
                    read.seconds,
                    read.digest,
                )
        except WorkerDied as exc:  # killed: by the service's stop (systemd stops them all)?
            stopping = self._halt.is_set()
            logger.log(
                logging.INFO if stopping else logging.ERROR,
                "verify: reading failed",
                extra={"job": job.name, "path": due.path, "error": str(exc)},
            )
        except Exception as exc:  # a bug in a reader: given back, tried again later
            logger.error(
                "verify: reading failed", extra={"job": job.name, "path": due.path}, exc_info=exc
            )
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            await self._hand_in(self._finish(job, due, held[0], outcome))

    async def _finish(
        self, job: _Declared, due: DueArtifact, held: datetime, outcome: Result | None
    ) -> None:
        now = self.clock()
        try:
            async with self.sessions() as session:
                await lock_for_write(session)
                if outcome is None:  # changed, or stopped: again later, nothing recorded
                    retry = None  # stopped: at once, by the next verifier
                    if not self._halt.is_set():
                        retry = now + timedelta(seconds=self.options.retry_seconds)
                    await verifications.release(session, due.artifact_id, held, retry)
                    await session.commit()
                    return
                every = job.verify.every
                if outcome.outcome == "unreadable":  # a permission fixed soon: try sooner
                    every = min(every, 3600)
                recorded = await verifications.record(
                    session,
                    due,
                    held,
                    outcome,
                    verified_at=now,
                    due_at=now + timedelta(seconds=every),
                )
                await session.commit()
                # Only a result of the newest artifacts can change the job's verdict: the
                # first verification of a thousand old files judges the job a few times only.
                matters = recorded and await verifications.among_newest(session, due)
            if not recorded:
                logger.warning(
                    "verify: lease lost, result dropped", extra={"job": job.name, "path": due.path}
                )
                return
            self.stats.verified += 1
            logger.log(
                logging.INFO if outcome.outcome == "ok" else logging.WARNING,
                "artifact verified",
                extra={
                    "job": job.name,
                    "path": due.path,
                    "outcome": outcome.outcome,
                    "bytes": outcome.bytes_read,
                    "seconds": round(outcome.seconds, 3),
                },
            )
            if matters and not self._stop.is_set():
                await self._judge(job.name)
        except Exception as exc:
            log_failure(
                logger,
                "verify: recording the result failed",
                exc,
                database_url_of(self.sessions),
                job=job.name,
            )

    async def _renew(self, artifact_id: int, held: list[datetime]) -> None:
        """Move the lease on every third of its length while the file is read."""
        seconds = self.options.lease_seconds
        while True:
            await asyncio.sleep(seconds / 3)
            lease = self.clock() + timedelta(seconds=seconds)
            try:
                async with self.sessions() as session:
                    await lock_for_write(session)
                    kept = await verifications.extend(session, artifact_id, held[0], lease)
                    await session.commit()
            except Exception as exc:
                log_failure(
                    logger, "verify: renewing a lease failed", exc, database_url_of(self.sessions)
                )
                continue
            if not kept:
                return
            held[0] = lease

    # --- one repository ---------------------------------------------------------------------

    async def _check(self, job: _Declared, lease: datetime) -> None:
        source = job.spec.source
        assert isinstance(source, ResticSource | BorgSource)
        repository = job.verify.repository
        assert repository is not None
        started = time.monotonic()
        result: RepositoryCheck | None = None
        timeout = self.options.check_timeout
        try:
            if isinstance(source, ResticSource):
                subset = repository.read_data_subset
                check = await restic.check_repository(
                    source,
                    read_data_subset=f"{subset:g}%" if subset else None,
                    timeout=timeout,
                )
            else:
                check = await borg.check_repository(source, timeout=timeout)
            result = check
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a check: recorded as a failure to run it
            logger.error(
                "verify: repository check failed to run", extra={"job": job.name}, exc_info=exc
            )
            detail = f"the check could not run: {describe_error(exc)}"
            result = RepositoryCheck(False, detail, time.monotonic() - started)
        finally:
            await self._hand_in(self._finish_check(job, lease, result))

    async def _finish_check(
        self, job: _Declared, held: datetime, result: RepositoryCheck | None
    ) -> None:
        now = self.clock()
        repository = job.verify.repository
        assert repository is not None
        try:
            async with self.sessions() as session:
                await lock_for_write(session)
                if result is None:
                    await verifications.release_check(session, job.id, held)
                    await session.commit()
                    return
                every = repository.every
                if not result.ok and not result.damaged:  # could not run: again sooner
                    every = min(every, max(1, int(self.options.retry_seconds)))
                recorded = await verifications.record_check(
                    session, job.id, held, ok=result.ok, damaged=result.damaged,
                    detail=result.detail, seconds=result.seconds, checked_at=now,
                    due_at=now + timedelta(seconds=every),
                )  # fmt: skip
                await session.commit()
            if recorded:
                self.stats.checks += 1
                logger.log(
                    logging.INFO if result.ok else logging.WARNING,
                    "repository checked",
                    extra={"job": job.name, "ok": result.ok, "damaged": result.damaged},
                )
                if not self._stop.is_set():
                    await self._judge(job.name)
        except Exception as exc:
            log_failure(
                logger,
                "verify: recording a repository check failed",
                exc,
                database_url_of(self.sessions),
                job=job.name,
            )

    async def _judge(self, name: str) -> None:
        """Judge the job again with what was just recorded (as the watcher does)."""
        try:
            async with self.sessions() as session:
                await run_scanner(session, self.scan_options, trigger="verify", names=[name])
        except Exception as exc:
            log_failure(
                logger,
                "verify: judging the job failed",
                exc,
                database_url_of(self.sessions),
                job=name,
            )


async def _declared_jobs(session: AsyncSession) -> list[_Declared]:
    """The jobs, not paused, whose valid declaration has `verify`."""
    columns = [getattr(Job, name) for name in DECLARATION_FIELDS]
    rows = (
        await session.execute(
            select(Job.id, Job.name, *columns).where(Job.verify.is_not(None), Job.paused.is_(False))
        )
    ).all()
    declared = []
    for row in rows:
        try:
            spec = parse_job({"name": row.name, **{k: getattr(row, k) for k in DECLARATION_FIELDS}})
        except ValidationError:  # the scan reports it on the job
            continue
        if spec.verify is not None and spec.source is not None:
            declared.append(_Declared(row.id, row.name, spec, spec.verify))
    return declared


def options_of(settings: Settings) -> VerifyOptions:
    """The verifier's options from the VERIFY_* settings."""
    return VerifyOptions(
        bytes_per_second=settings.verify_bytes_per_second,
        workers=settings.verify_workers,
        poll_seconds=settings.verify_poll_seconds,
        lease_seconds=settings.verify_lease_seconds,
        retry_seconds=settings.verify_retry_seconds,
        limits=Limits(
            max_ratio=settings.verify_max_ratio,
            max_expanded_bytes=settings.verify_max_expanded,
        ),
        check_timeout=settings.verify_check_timeout_seconds,
    )
