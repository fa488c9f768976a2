"""One lifecycle for every background component, and a helper to wait on a condition."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any, Protocol, runtime_checkable

from aiohttp import web


@runtime_checkable
class Component(Protocol):
    """A background component an app runs between its start and its cleanup.

    `start()` returns once the component runs (its tasks created, its baseline taken).
    `stop(grace)` lets the work in hand finish for up to `grace` seconds, cancels what is left,
    and returns once nothing of it runs; stopping one that does not run is a no-op.
    """

    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None: ...


def component_ctx(
    build: Callable[[web.Application], Component | None], grace: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An app cleanup context for one component: `build(app)` (which holds it under its
    AppKeys; None when this app runs none), `start()` at the app's start, `stop(grace)` at its
    cleanup. aiohttp runs cleanups in reverse order, and only for contexts that started."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        component = build(app)
        if component is not None:
            await component.start()
        yield
        if component is not None:
            await component.stop(grace)

    return context


async def drain(tasks: Collection[asyncio.Task[Any]], grace: float) -> None:
    """Let `tasks` end within `grace` seconds; cancel those left, and give them 5 s to unwind."""
    if not tasks:
        return
    _, pending = await asyncio.wait(set(tasks), timeout=grace)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)


async def wait_for_condition(
    condition: Callable[[], bool], within: float, interval: float = 0.01
) -> bool:
    """Yield to the loop until `condition()` holds or `within` seconds pass; return the outcome."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True
