"""The scan pipeline: list the jobs' sources ahead while the observations ready are settled.

A producer lists the sources in job order (Observer.observe), the jobs' pieces as they are read
(the first piece is listed while the next are read), and queues what it saw, up to WALK_AHEAD
observations ahead; the consumer takes what is ready, waiting up to BATCH_WAIT for WALK_AHEAD
of them, as one batch and hands it to `settle` (judge and write: the caller's business).
Listing and writing overlap, and a slow database never lets the listings pile up beyond
WALK_AHEAD.

Sources stay behind their port (service.scanner.sources): the observer only awaits one result
per source, in order, from a lister (local walks run in a worker thread, or in walker processes
for a big scan; a remote source's lister awaits its API on the event loop instead). Nothing here
blocks the loop.

May import: the standard library, pydantic's ValidationError, service.core.jobspec,
service.db.errors (describe_error), service.scanner.sources and service.scanner.state; never
SQLAlchemy or the database models.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Coroutine, Sequence
from contextlib import aclosing, suppress
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from service.core.jobspec import JobSpec, error_details, parse_job
from service.db.errors import describe_error
from service.scanner.sources import (
    KnownSizes,
    Listing,
    RemoteSource,
    Source,
    SourceError,
    open_source,
)  # fmt: skip
from service.scanner.sources.fingerprint import listing_digest
from service.scanner.sources.lister import list_any
from service.scanner.sources.local import LocalSource
from service.scanner.state import NEWEST_JUDGED, JobResult, JobRow, Observation

logger = logging.getLogger(__name__)

# Listings walked ahead of the writer; the writer commits up to this many changed jobs at once.
WALK_AHEAD = 64
# Jobs whose sources are handed to the lister at once. Walker processes walk all of them while
# the writer settles what is ready (with a few dozen, they would wait for each next handful).
OBSERVED_AT_ONCE = 256
# How long the writer waits for a batch to fill before settling what it has. Each batch costs a
# few round trips to the database, and while the walking thread holds the GIL every round trip
# waits up to a switch interval (5 ms) for it on its way back: settling the two or three jobs
# ready at each turn (800 batches for 2 000 jobs) made the database's waits most of a rescan.
BATCH_WAIT = 0.2

# One result per source, in order, as each is ready: its listing or the SourceError that
# stopped it; each source may take `limit` seconds (see sources.list_sources).
Lister = Callable[
    [Sequence[Source | RemoteSource], float], AsyncGenerator[Listing | SourceError, None]
]
# The sizes stored for a job's present artifacts (see sources.KnownSizes), read from the database
# by the scanner when a source asks.
KnownOf = Callable[[JobRow], KnownSizes]
Observe = Callable[[Sequence[JobRow]], AsyncGenerator[Observation, None]]
# Settle a batch on one of the writer's lanes (its number: lanes are used one batch at a time).
Settle = Callable[[Sequence[Observation], int], Coroutine[Any, Any, list[JobResult]]]
Outcome = Literal["finished", "interrupted"]

# Validated declarations by their JSON text as read (JobRow.declaration_json), each with its
# source's JSON (part of a listing's digest): validating a declaration costs a lot more than
# keeping it, and a JobSpec is frozen data. SCAN_ROOTS are not part of it: the walk checks them,
# with symlinks resolved at that moment.
_specs: dict[str, tuple[JobSpec, str]] = {}
_SPECS_KEPT = 50_000


def job_spec(job: JobRow) -> JobSpec:
    """The job's validated declaration (raises pydantic.ValidationError)."""
    return _parsed(job)[0]


def _parsed(job: JobRow) -> tuple[JobSpec, str]:
    """The job's validated declaration and its source's JSON (sorted keys)."""
    parsed = _specs.get(job.declaration_json)
    if parsed is None:
        if len(_specs) >= _SPECS_KEPT:
            _specs.clear()
        spec = parse_job(job.declaration)
        source = json.dumps(spec.declaration()["source"], sort_keys=True)
        parsed = _specs[job.declaration_json] = (spec, source)
    return parsed


async def run_pipeline(
    jobs: AsyncIterable[Sequence[JobRow]],
    observe: Observe,
    settle: Settle,
    results: list[JobResult],
    stop: asyncio.Event,
    lanes: int = 1,
) -> Outcome:
    """Observe the jobs (their pieces as they come: the first piece is listed while the next
    are read), OBSERVED_AT_ONCE at a time, while settling the batches ready, up to `lanes`
    batches at once (each on a lane of its own: one batch is written while the next is judged
    and written beside it); each batch's results are appended to `results`, in job order.
    "interrupted" when `stop` was set before every job was settled, else "finished". A failure
    of the observer (a bug) or of `jobs` is raised once the observations made are settled; a
    failure of `settle` is raised once the batches before it are settled."""
    ready: asyncio.Queue[Observation | None] = asyncio.Queue(maxsize=WALK_AHEAD)
    failure: list[BaseException] = []
    total, every_piece = 0, False  # jobs received so far; all of them

    def complete() -> bool:
        """Every job of every piece is settled."""
        return every_piece and len(results) == total

    async def produce() -> None:
        nonlocal total, every_piece
        try:
            async for piece in jobs:
                # Counted even once stopped (then not observed): the scan is "finished" only
                # when every job of every piece was settled.
                total += len(piece)
                for start in range(0, len(piece), OBSERVED_AT_ONCE):
                    if stop.is_set():
                        break
                    chunk = piece[start : start + OBSERVED_AT_ONCE]
                    async with aclosing(observe(chunk)) as seen:
                        async for observation in seen:
                            await ready.put(observation)
                            if stop.is_set():
                                break
            every_piece = True
        except Exception as exc:  # a bug: the writer finishes what it has, then re-raises
            failure.append(exc)
        # Not in a `finally`: a cancelled producer must not wait on a full queue.
        await ready.put(None)

    producer = asyncio.create_task(produce())
    settling: deque[tuple[int, asyncio.Task[list[JobResult]]]] = deque()  # in job order
    try:
        while (first := await ready.get()) is not None:
            batch = await _fill([first], ready)
            if len(settling) == lanes:  # every lane busy: the oldest batch first
                _, oldest = settling.popleft()
                results.extend(await oldest)
                if stop.is_set():
                    break
            busy = {lane for lane, _ in settling}
            lane = min(set(range(lanes)) - busy)
            settling.append((lane, asyncio.create_task(settle(batch, lane))))
        while settling:
            _, oldest = settling.popleft()
            results.extend(await oldest)
        if stop.is_set() and not complete():
            return "interrupted"
    finally:
        for _, task in settling:  # a batch failed, or we were cancelled: the others end too
            task.cancel()
        await asyncio.gather(*(task for _, task in settling), return_exceptions=True)
        if not producer.done():
            producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
    if failure:
        raise failure[0]
    return "finished" if complete() else "interrupted"


async def _fill(
    batch: list[Observation], ready: asyncio.Queue[Observation | None]
) -> list[Observation]:
    """The batch with what else comes within BATCH_WAIT, up to WALK_AHEAD observations; the end
    of the observations (None) is left in the queue for the caller."""
    with suppress(TimeoutError):
        async with asyncio.timeout(BATCH_WAIT):
            while len(batch) < WALK_AHEAD:
                item = ready.get_nowait() if not ready.empty() else await ready.get()
                if item is None:
                    ready.put_nowait(None)  # seen again by the caller
                    break
                batch.append(item)
    return batch


class Observer:
    """Lists jobs' sources: one Observation per job, in order, whatever goes wrong with one."""

    def __init__(
        self,
        *,
        scan_roots: Sequence[Path] = (),
        source_timeout: float = 300.0,
        lister: Lister = list_any,
        known_of: KnownOf | None = None,
    ) -> None:
        self.scan_roots = tuple(scan_roots)
        self.source_timeout = source_timeout
        self.lister = lister
        self.known_of = known_of

    async def observe(self, jobs: Sequence[JobRow]) -> AsyncGenerator[Observation, None]:
        """List the jobs' sources, in order; never raises for a source or declaration problem."""
        specs: list[JobSpec | None] = []
        errors: list[str | None] = []
        sources: list[Source | RemoteSource] = []
        for job in jobs:
            spec, error = self._prepare(job, sources)
            specs.append(spec)
            errors.append(error)
        broken: SourceError | None = None  # the lister itself failed: a bug, not a source problem
        async with aclosing(self.lister(sources, self.source_timeout)) as listings:
            for job, spec, error in zip(jobs, specs, errors, strict=True):
                if error is not None or spec is None or spec.source is None:  # no listing
                    yield Observation(job, spec, source_error=error)
                    continue
                result: Listing | SourceError
                if broken is not None:
                    result = broken
                else:
                    try:
                        result = await anext(listings)
                    except Exception as exc:
                        logger.error("job listing failed", extra={"job": job.name}, exc_info=exc)
                        broken = SourceError(f"internal error while listing: {describe_error(exc)}")
                        result = broken
                if isinstance(result, SourceError):
                    yield Observation(job, spec, source_error=str(result))
                else:
                    yield observed(job, spec, result)

    def _prepare(
        self, job: JobRow, sources: list[Source | RemoteSource]
    ) -> tuple[JobSpec | None, str | None]:
        """The job's declaration, its source appended to `sources` (if it has one); or None and
        why not. Whatever fails here fails for this job only."""
        try:
            spec = job_spec(job)
            if spec.source is not None:
                known = {} if self.known_of is None else {"known": self.known_of(job)}
                source = open_source(spec.source, scan_roots=self.scan_roots, **known)
                if isinstance(source, LocalSource) and job.listing_digest is not None:
                    # A walker process then sends only a summary of a listing unchanged.
                    source.synced = (_parsed(job)[1], job.listing_digest, NEWEST_JUDGED)
                sources.append(source)
        except SourceError as exc:  # the source cannot even be set up (a secret file unread)
            return spec, str(exc)
        except ValidationError as exc:
            # A stored declaration that no longer validates (written by hand, or by an older
            # version): report it on the job instead of scanning.
            details = error_details(exc)
            return None, "; ".join(f"{d['field']}: {d['message']}" for d in details)
        except Exception as exc:  # a bug: this job's scan fails, not the whole scan
            logger.error("job declaration failed", extra={"job": job.name}, exc_info=exc)
            return None, f"internal error while reading the declaration: {describe_error(exc)}"
        return spec, None


def observed(job: JobRow, spec: JobSpec, listing: Listing) -> Observation:
    """The observation of a listed job, with the digest of its listing (None: the listing is
    incomplete). The same files seen through another source declaration are another listing."""
    for note in listing.skipped:
        logger.info("entry skipped", extra={"job": job.name, "detail": note})
    digest = None
    if listing.fingerprint is not None:
        source = _parsed(job)[1]  # kept with `spec`, made from the same declaration
        digest = listing_digest(source, listing.fingerprint)
    return Observation(job, spec, listing, digest=digest)
