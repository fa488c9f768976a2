"""One lifecycle for every background component, and a helper to wait on a condition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Component(Protocol):
    """A background component an app runs between its start and its cleanup.

    `start()` returns once the component runs (its tasks created, its baseline taken).
    `stop(grace)` lets the work in hand finish for up to `grace` seconds, cancels what is left,
    and returns once nothing of it runs; stopping one that does not run is a no-op.
    """

    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None: ...


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
