"""Request coalescing: one computation for identical concurrent reads, never across a write."""

from __future__ import annotations

import asyncio

import pytest

from service.http.api.coalesce import Coalescer


class Slow:
    """A computation that waits until released, counting how often it ran."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self) -> bytes:
        self.calls += 1
        value = f"answer {self.calls}".encode()
        await self.release.wait()
        return value


async def test_identical_concurrent_requests_share_one_computation():
    coalescer, slow = Coalescer(), Slow()
    waiters = [asyncio.ensure_future(coalescer.run("jobs", slow)) for _ in range(50)]
    await asyncio.sleep(0)
    slow.release.set()
    assert await asyncio.gather(*waiters) == [b"answer 1"] * 50
    assert slow.calls == 1
    # Nothing is kept once delivered: the next request computes afresh.
    assert await coalescer.run("jobs", slow) == b"answer 2"


async def test_different_keys_do_not_share():
    coalescer, slow = Coalescer(), Slow()
    slow.release.set()
    assert await asyncio.gather(coalescer.run("a", slow), coalescer.run("b", slow)) == [
        b"answer 1",
        b"answer 2",
    ]


async def test_a_write_starts_a_new_generation():
    coalescer, slow = Coalescer(), Slow()
    before = asyncio.ensure_future(coalescer.run("jobs", slow))
    await asyncio.sleep(0)
    coalescer.invalidate()  # e.g. a PATCH committed meanwhile
    after = asyncio.ensure_future(coalescer.run("jobs", slow))
    await asyncio.sleep(0)
    slow.release.set()
    assert await before == b"answer 1"
    assert await after == b"answer 2"  # did not join the computation started before the write


async def test_errors_reach_every_waiter_and_are_not_kept():
    coalescer = Coalescer()
    calls = 0

    async def failing() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ConnectionError("database went away")

    results = await asyncio.gather(
        *(coalescer.run("status", failing) for _ in range(3)), return_exceptions=True
    )
    assert calls == 1 and all(isinstance(r, ConnectionError) for r in results)
    with pytest.raises(ConnectionError):
        await coalescer.run("status", failing)
    assert calls == 2


async def test_one_waiter_cancelled_does_not_cancel_the_others():
    coalescer, slow = Coalescer(), Slow()
    first = asyncio.ensure_future(coalescer.run("jobs", slow))
    second = asyncio.ensure_future(coalescer.run("jobs", slow))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    slow.release.set()
    assert await second == b"answer 1"
    assert first.cancelled()
