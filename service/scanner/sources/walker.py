"""Listing many sources off the event loop: several per trip to a worker thread, each with its
own time limit.

A trip to a thread costs about a tenth of a millisecond; for 2 000 small directories that is
as much as walking them. So sources are listed in chunks, in order, by one thread; a watchdog
on the loop gives each source `limit` seconds and hands on each result as soon as it is there.
A source that hangs (a dead NFS mount blocks in the kernel and cannot be interrupted) is
reported as timed out and its thread abandoned; the sources after it are listed by a new
thread. Until the hung walk returns, that path is reported at once as still blocked instead of
tying up another thread.

The threads are our own daemon threads, not the loop's shared executor: abandoned walks can
neither starve other work of threads nor keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from service.scanner.sources.base import Cancelled, Listing, Source, SourceError
from service.scanner.sources.fingerprint import finish

logger = logging.getLogger(__name__)

CHUNK = 32
_POLL_SECONDS = 0.05  # how often finished results are handed on while a chunk is walked

# Walks that timed out and have not returned: label -> {walk token: time.monotonic() of start}.
# Several jobs may share a path; each walk removes only its own token.
_hung: dict[str, dict[int, float]] = {}
_hung_lock = threading.Lock()
_tokens = itertools.count()


@dataclass(slots=True)
class _Progress:
    """Shared by the walking thread and the watchdog; every field under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    cancel: threading.Event = field(default_factory=threading.Event)
    done: list[Listing | SourceError] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)  # when the current source began
    token: int = -1  # the current walk's token


def still_blocked(label: str) -> SourceError | None:
    """The error to report at once for a path whose earlier walk timed out and has not
    returned (None: nothing is blocked there)."""
    with _hung_lock:
        starts = _hung.get(label)
        if not starts:
            return None
        since = time.monotonic() - min(starts.values())
    return SourceError(
        f"listing {label} is still blocked since {since:.0f} s ago (an earlier listing never "
        "returned); is the storage hung?"
    )


def new_token() -> int:
    """A walk's token, unique in this process (threads and walker processes draw from one)."""
    return next(_tokens)


def register_hung(label: str, token: int, started: float) -> None:
    """A walk of `label` (its `token`, begun at `started`, time.monotonic) timed out and has
    not returned: until unregister_hung, the path is reported at once as still blocked."""
    with _hung_lock:
        _hung.setdefault(label, {})[token] = started


def unregister_hung(label: str, token: int) -> None:
    """The walk `token` of `label` has returned (or never hung: then nothing changes)."""
    with _hung_lock:
        starts = _hung.get(label, {})
        starts.pop(token, None)
        if not starts:
            _hung.pop(label, None)


def _walk_one(source: Source, cancel: threading.Event) -> Listing | SourceError:
    blocked = still_blocked(source.label)
    if blocked is not None:
        return blocked
    try:
        return finish(source.walk(cancel))
    except SourceError as exc:
        return exc
    except Cancelled:
        if cancel.is_set():
            raise
        return SourceError(f"listing {source.label} stopped by itself (Cancelled)")
    except Exception as exc:  # a bug or an unexpected OS error: this source only
        logger.error("listing failed", extra={"source": source.label}, exc_info=exc)
        return SourceError(f"internal error listing {source.label}: {type(exc).__name__}: {exc}")


def _walk_chunk(sources: Sequence[Source], progress: _Progress) -> None:
    for source in sources:
        with progress.lock:
            if progress.cancel.is_set():
                return
            token = progress.token = new_token()
            progress.started = time.monotonic()
        try:
            result: Listing | SourceError | None = _walk_one(source, progress.cancel)
        except Cancelled:
            result = None
        with progress.lock:
            # The watchdog registers a timed-out walk under this same lock: whichever comes
            # first, the registration is undone here once the walk has returned.
            unregister_hung(source.label, token)
            if progress.cancel.is_set() or result is None:
                return  # the watchdog gave up on this source: its result is no longer wanted
            progress.done.append(result)


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
) -> AsyncGenerator[Listing | SourceError, None]:
    """Yield one result per source, in order, as each is ready: its listing, or the SourceError
    that stopped it. Each source may take `limit` seconds."""
    for start in range(0, len(sources), chunk):
        part = sources[start : start + chunk]
        index = 0
        while index < len(part):
            progress = _Progress()
            walking = _in_own_thread(part[index:], progress)
            handed = 0
            try:
                while True:
                    finished, _ = await asyncio.wait({walking}, timeout=_POLL_SECONDS)
                    with progress.lock:
                        ready = progress.done[handed:]
                        started, timed_out = progress.started, None
                        waiting = len(progress.done) < len(part) - index  # a source in hand
                        overdue = time.monotonic() - started >= limit
                        if not finished and not ready and waiting and overdue:
                            progress.cancel.set()
                            stuck = part[index + len(progress.done)]
                            timed_out = timeout_error(stuck, limit)
                            register_hung(stuck.label, progress.token, started)
                    for result in ready:
                        yield result
                    handed += len(ready)
                    if timed_out is not None:
                        yield timed_out
                        handed += 1
                        break
                    if finished:
                        walking.result()  # a failure outside any source surfaces here
                        with progress.lock:
                            rest = progress.done[handed:]
                        for result in rest:
                            yield result
                        handed += len(rest)
                        break
            finally:
                progress.cancel.set()  # stops the thread if our caller stopped listening
            index += handed


def timeout_error(source: Source, limit: float) -> SourceError:
    return SourceError(
        f"listing {source.label} took longer than {limit:g} s (SOURCE_TIMEOUT_SECONDS); "
        "is the storage hung?"
    )
