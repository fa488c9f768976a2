"""Request coalescing for the hot read endpoints (job list, status).

When many clients ask the same question at once (dashboards, Grafana, scripts polling every
second), one computation answers all the requests that arrive while it runs, instead of each
running the same queries. No answer is kept after it is delivered, so a reader never sees data
older than a computation that started before its request arrived; and a write through this
process's API starts a new generation, so a client that changed something and then reads never
joins a computation started before its change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable

from aiohttp import web

from service.http.api.errors import Handler


class Coalescer:
    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[bytes]] = {}
        self._generation = 0

    def invalidate(self) -> None:
        """Something changed: later requests must not join a computation already running."""
        self._generation += 1

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[bytes]]) -> bytes:
        """The result of `compute()`, shared with identical requests made meanwhile."""
        slot = (key, self._generation)
        task = self._running.get(slot)
        if task is None:
            task = asyncio.ensure_future(compute())
            self._running[slot] = task
            task.add_done_callback(lambda _: self._running.pop(slot, None))
        # One caller hanging up must not cancel the others' answer.
        return await asyncio.shield(task)


coalescer_key = web.AppKey("coalescer", Coalescer)

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


@web.middleware
async def invalidate_on_write(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request that may change data starts a new generation, before and after it runs."""
    if request.method in _READS:
        return await handler(request)
    coalescer = request.app[coalescer_key]
    coalescer.invalidate()
    try:
        return await handler(request)
    finally:
        coalescer.invalidate()
