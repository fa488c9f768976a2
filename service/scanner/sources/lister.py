"""Listing a mix of sources: local walks in a worker thread (walker.list_sources) or, given a
pool and enough of them, in walker processes (walk_process.list_in_processes), remote
listings as tasks on the event loop, each under its own time limit and its kind's concurrency
limit, so one slow bucket or repository holds one slot, never the others. Results come back in
the sources' order, each a Listing or the SourceError that stopped it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from service.scanner.sources.base import Listing, RemoteSource, Source, SourceError
from service.scanner.sources.fingerprint import finish
from service.scanner.sources.local import LocalSource
from service.scanner.sources.walk_process import WalkerPool, list_in_processes
from service.scanner.sources.walker import list_sources

logger = logging.getLogger(__name__)

# Listings of one kind (s3, sftp, restic, borg) under way at once, in one scan.
REMOTE_CONCURRENCY = 4
# Remote listings started ahead of the one being taken.
REMOTE_AHEAD = 32
AnySource = Source | RemoteSource


def is_remote(source: AnySource) -> bool:
    return hasattr(source, "kind")


async def list_any(
    sources: Sequence[AnySource], limit: float, pool: WalkerPool | None = None
) -> AsyncGenerator[Listing | SourceError, None]:
    """One result per source, in order. `limit`: seconds a source may take, unless it has its
    own `timeout`; a remote source's time starts once it has a slot of its kind. `pool`: the
    scan's walker processes (None: local sources are walked in a thread)."""
    local: list[Source] = [source for source in sources if not is_remote(source)]  # type: ignore[misc]
    slots: dict[str, asyncio.Semaphore] = {}
    tasks: dict[int, asyncio.Task[Listing | SourceError]] = {}
    remotes = iter([index for index, source in enumerate(sources) if is_remote(source)])
    upcoming = next(remotes, None)

    def start_until(end: int) -> None:
        """Start listing the remote sources before `end` (at most REMOTE_AHEAD beyond what
        has been taken: their listings wait in memory until then)."""
        nonlocal upcoming
        while upcoming is not None and upcoming < end:
            remote: RemoteSource = sources[upcoming]  # type: ignore[assignment]
            slot = slots.setdefault(remote.kind, asyncio.Semaphore(REMOTE_CONCURRENCY))
            tasks[upcoming] = asyncio.create_task(list_remote(remote, slot, limit))
            upcoming = next(remotes, None)

    try:
        walking = (
            list_in_processes(local, limit, pool)  # type: ignore[arg-type]
            if pool is not None
            and local
            and all(isinstance(source, LocalSource) for source in local)
            else list_sources(local, limit)
        )
        async with aclosing(walking) as walked:
            for index in range(len(sources)):
                start_until(index + REMOTE_AHEAD)
                task = tasks.pop(index, None)
                yield await task if task is not None else await anext(walked)
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def list_remote(
    source: RemoteSource, slot: asyncio.Semaphore, limit: float
) -> Listing | SourceError:
    """The source's finished listing (ordered, fingerprinted off the loop) or why not."""
    async with slot:
        seconds = source.timeout or limit
        try:
            async with asyncio.timeout(seconds):
                listing = await source.list()
        except SourceError as exc:
            return exc
        except TimeoutError:
            setting = "its timeout" if source.timeout else "SOURCE_TIMEOUT_SECONDS"
            return SourceError(
                f"listing {source.label} took longer than {seconds:g} s ({setting}); "
                "is it reachable, or does it need a longer timeout?"
            )
        except Exception as exc:  # a bug in an adapter: this source only
            logger.error("listing failed", extra={"source": source.label}, exc_info=exc)
            return SourceError(f"internal error listing {source.label}: {type(exc).__name__}")
    return await asyncio.to_thread(finish, listing)
