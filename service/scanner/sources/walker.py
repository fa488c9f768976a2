"""Listing many sources off the event loop: several per trip to a worker thread, each with its
own time limit.

A trip to a thread costs about a tenth of a millisecond; for 2 000 small directories that is
as much as walking them. So sources are listed in chunks, in order, by one thread; a watchdog
on the loop gives each source `limit` seconds. A source that hangs (a dead NFS mount blocks
in the kernel and cannot be interrupted) is reported as timed out, its thread is abandoned, and
the sources after it are listed by a new one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from service.scanner.sources.base import Cancelled, Listing, Source, SourceError

CHUNK = 32


@dataclass(slots=True)
class _Progress:
    """Shared by the walking thread and the watchdog, under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    cancel: threading.Event = field(default_factory=threading.Event)
    done: list[Listing | SourceError] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)  # when the current source began


def _walk_chunk(sources: Sequence[Source], progress: _Progress) -> None:
    for source in sources:
        try:
            result: Listing | SourceError = source.walk(progress.cancel)
        except SourceError as exc:
            result = exc
        except Cancelled:
            return
        with progress.lock:
            if progress.cancel.is_set():
                return  # the watchdog gave up on this source: its result is no longer wanted
            progress.done.append(result)
            progress.started = time.monotonic()


async def list_sources(
    sources: Sequence[Source], limit: float, chunk: int = CHUNK
) -> AsyncIterator[Listing | SourceError]:
    """Yield one result per source, in order: its listing, or the SourceError that stopped it.
    Each source may take `limit` seconds."""
    index = 0
    while index < len(sources):
        part = sources[index : index + chunk]
        progress = _Progress()
        walking = asyncio.ensure_future(asyncio.to_thread(_walk_chunk, part, progress))
        while True:
            with progress.lock:
                started = progress.started
            left = started + limit - time.monotonic()
            finished, _ = await asyncio.wait({walking}, timeout=max(left, 0.001))
            if finished:
                walking.result()  # a bug in a source surfaces here
                results = progress.done
                break
            with progress.lock:
                if progress.started != started or len(progress.done) == len(part):
                    continue  # the slow source finished meanwhile: keep watching
                progress.cancel.set()
                results = [*progress.done, _timed_out(part[len(progress.done)], limit)]
            break
        for result in results:
            yield result
        index += len(results)


def _timed_out(source: Source, timeout: float) -> SourceError:
    return SourceError(
        f"listing {source.label} took longer than {timeout:g} s (SOURCE_TIMEOUT_SECONDS); "
        "is the storage hung?"
    )
