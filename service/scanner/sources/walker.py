"""Listing many sources off the event loop: several per trip to a worker thread, each with its
own time limit.

A trip to a thread costs about a tenth of a millisecond; for 2 000 small directories that is
as much as walking them. So sources are listed in chunks, in order, by one thread; a watchdog
on the loop gives each source `limit` seconds. A source that hangs (a dead NFS mount blocks in
the kernel and cannot be interrupted) is reported as timed out and its thread abandoned; the
sources after it are listed by a new thread. Until the hung walk returns, that source is
reported at once as still hung instead of tying up another thread.

The threads are our own daemon threads, not the loop's shared executor: abandoned walks can
neither starve other work of threads nor keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from operator import itemgetter

from service.scanner.sources.base import Cancelled, Listing, Source, SourceError

logger = logging.getLogger(__name__)

CHUNK = 32
_oldest_first = itemgetter(2, 0)  # (mtime_us, path)

# Sources whose walk timed out and has not returned yet: label -> time.monotonic() of the start.
_hung: dict[str, float] = {}
_hung_lock = threading.Lock()


@dataclass(slots=True)
class _Progress:
    """Shared by the walking thread and the watchdog, under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    cancel: threading.Event = field(default_factory=threading.Event)
    done: list[Listing | SourceError] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)  # when the current source began


def finish(listing: Listing) -> Listing:
    """Order the entries oldest first by (mtime, path) and fingerprint them (in the thread:
    on a job of 200 000 files this is half a second the event loop does not wait for)."""
    listing.entries.sort(key=_oldest_first)
    if not listing.warnings:  # an incomplete listing is never remembered as the last good one
        digest = hashlib.blake2b(digest_size=20)
        entries = listing.entries
        # In slices: one repr() of 100 000 entries would hold the GIL, and so the event loop.
        for start in range(0, len(entries), 4096):
            digest.update(repr(entries[start : start + 4096]).encode())
        listing.fingerprint = digest.hexdigest()
    return listing


def _walk_one(source: Source, cancel: threading.Event) -> Listing | SourceError:
    try:
        return finish(source.walk(cancel))
    except (SourceError, Cancelled):
        raise
    except Exception as exc:  # a bug or an unexpected OS error: this source only
        logger.error("listing failed", extra={"source": source.label}, exc_info=exc)
        return SourceError(f"internal error listing {source.label}: {type(exc).__name__}: {exc}")
    finally:
        with _hung_lock:
            _hung.pop(source.label, None)  # it answered, however late


def _walk_chunk(sources: Sequence[Source], progress: _Progress) -> None:
    for source in sources:
        try:
            result = _walk_one(source, progress.cancel)
        except SourceError as exc:
            result = exc
        except Cancelled:
            return
        with progress.lock:
            if progress.cancel.is_set():
                return  # the watchdog gave up on this source: its result is no longer wanted
            progress.done.append(result)
            progress.started = time.monotonic()


def _in_own_thread(sources: Sequence[Source], progress: _Progress) -> asyncio.Future[None]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def report(error: BaseException | None) -> None:
        if not future.done():
            future.set_exception(error) if error else future.set_result(None)

    def run() -> None:
        error: BaseException | None = None
        try:
            _walk_chunk(sources, progress)
        except BaseException as exc:
            error = exc
        with suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            loop.call_soon_threadsafe(report, error)

    threading.Thread(target=run, name="backup-monitor-walk", daemon=True).start()
    return future


async def list_sources(
    sources: Sequence[Source], limit: float, chunk: int = CHUNK
) -> AsyncIterator[Listing | SourceError]:
    """Yield one result per source, in order: its listing, or the SourceError that stopped it.
    Each source may take `limit` seconds."""
    for start in range(0, len(sources), chunk):
        part = sources[start : start + chunk]
        with _hung_lock:
            hung = {source.label: _hung[source.label] for source in part if source.label in _hung}
        walked = iter(
            [r async for r in _list_part([s for s in part if s.label not in hung], limit)]
        )
        for source in part:
            if source.label in hung:
                since = time.monotonic() - hung[source.label]
                yield SourceError(
                    f"listing {source.label} is still blocked since {since:.0f} s ago (an earlier "
                    "listing never returned); is the storage hung?"
                )
            else:
                yield next(walked)


async def _list_part(part: Sequence[Source], limit: float) -> AsyncIterator[Listing | SourceError]:
    index = 0
    while index < len(part):
        progress = _Progress()
        walking = _in_own_thread(part[index:], progress)
        try:
            while True:
                with progress.lock:
                    started = progress.started
                left = started + limit - time.monotonic()
                finished, _ = await asyncio.wait({walking}, timeout=max(left, 0.001))
                if finished:
                    walking.result()  # a failure outside any source surfaces here
                    results = progress.done
                    break
                with progress.lock:
                    if progress.started != started or len(progress.done) == len(part) - index:
                        continue  # the slow source finished meanwhile: keep watching
                    progress.cancel.set()
                    stuck = part[index + len(progress.done)]
                    results = [*progress.done, _timed_out(stuck, limit)]
                with _hung_lock:
                    _hung[stuck.label] = started
                break
        finally:
            progress.cancel.set()  # stops the thread if our caller stopped listening
        for result in results:
            yield result
        index += len(results)


def _timed_out(source: Source, limit: float) -> SourceError:
    return SourceError(
        f"listing {source.label} took longer than {limit:g} s (SOURCE_TIMEOUT_SECONDS); "
        "is the storage hung?"
    )
