"""Listing a mix of sources: local walks in a worker thread (walker.list_sources), remote
listings as tasks on the event loop, each under its own time limit and its kind's concurrency
limit, so one slow bucket or repository holds one slot, never the others. Results come back in
the sources' order, each a Listing or the SourceError that stopped it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from service.scanner.sources.base import Listing, RemoteSource, Source, SourceError
from service.scanner.sources.walker import finish, list_sources

logger = logging.getLogger(__name__)

# Listings of one kind (s3, sftp, restic, borg) under way at once, in one scan.
REMOTE_CONCURRENCY = 4
AnySource = Source | RemoteSource


def is_remote(source: AnySource) -> bool:
    return hasattr(source, "kind")


async def list_any(
    sources: Sequence[AnySource], limit: float
) -> AsyncGenerator[Listing | SourceError, None]:
    """One result per source, in order. `limit`: seconds a source may take, unless it has its
    own `timeout`; a remote source's time starts once it has a slot of its kind."""
    local: list[Source] = [source for source in sources if not is_remote(source)]  # type: ignore[misc]
    slots: dict[str, asyncio.Semaphore] = {}
    tasks: dict[int, asyncio.Task[Listing | SourceError]] = {}
    for index, source in enumerate(sources):
        if is_remote(source):
            remote: RemoteSource = source  # type: ignore[assignment]
            slot = slots.setdefault(remote.kind, asyncio.Semaphore(REMOTE_CONCURRENCY))
            tasks[index] = asyncio.create_task(list_remote(remote, slot, limit))
    try:
        async with aclosing(list_sources(local, limit)) as walked:
            for index in range(len(sources)):
                task = tasks.get(index)
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
