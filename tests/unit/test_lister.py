"""Listing a mix of local and remote sources (service/scanner/sources/lister.py): results in
order, each remote listing under its own time limit and its kind's concurrency limit, nothing
left running when the caller stops listening. The remote sources here are small classes of our
own that follow the port (the adapters' own tests run against real servers)."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path
from typing import ClassVar

import pytest

from service.scanner.sources import Listing, LocalSource, SourceError
from service.scanner.sources.lister import REMOTE_AHEAD, REMOTE_CONCURRENCY, AnySource, list_any


class Remote:
    """A remote source that answers `entries` after `delay` seconds, or raises `error`."""

    running: ClassVar[dict[str, int]] = {}
    most: ClassVar[dict[str, int]] = {}
    cancelled: ClassVar[list[str]] = []
    listed: ClassVar[list[str]] = []  # whose listing has begun

    def __init__(self, label: str, *, kind: str = "s3", delay: float = 0.0,
                 error: Exception | None = None, timeout: float | None = None) -> None:  # fmt: skip
        self.label, self.kind, self.delay, self.error, self.timeout = (
            label, kind, delay, error, timeout,
        )  # fmt: skip

    async def list(self) -> Listing:
        Remote.listed.append(self.label)
        running = Remote.running
        running[self.kind] = running.get(self.kind, 0) + 1
        Remote.most[self.kind] = max(Remote.most.get(self.kind, 0), running[self.kind])
        try:
            await asyncio.sleep(self.delay)
            if self.error is not None:
                raise self.error
            # Out of order on purpose: the lister orders and fingerprints.
            return Listing(entries=[(f"{self.label}/b", 2, 2_000_000), (f"{self.label}/a", 1, 1)])
        except asyncio.CancelledError:
            Remote.cancelled.append(self.label)
            raise
        finally:
            running[self.kind] -= 1


@pytest.fixture(autouse=True)
def fresh_counts() -> None:
    Remote.running, Remote.most, Remote.cancelled, Remote.listed = {}, {}, [], []


async def results(sources: list[AnySource], limit: float = 5.0) -> list[Listing | SourceError]:
    return [result async for result in list_any(sources, limit)]


async def test_results_come_in_the_sources_order_whatever_finishes_first(tmp_path: Path) -> None:
    (tmp_path / "dump.sql").write_text("x")
    sources: list[AnySource] = [
        Remote("slow", delay=0.3), LocalSource(str(tmp_path)), Remote("fast"),
        LocalSource(str(tmp_path / "missing")),
    ]  # fmt: skip
    found = await results(sources)
    assert isinstance(found[0], Listing)
    assert [entry[0] for entry in found[0].entries] == ["slow/a", "slow/b"]  # oldest first
    assert found[0].fingerprint is not None
    assert isinstance(found[1], Listing)
    assert [entry[0] for entry in found[1].entries] == ["dump.sql"]
    assert isinstance(found[2], Listing)
    assert [entry[0] for entry in found[2].entries] == ["fast/a", "fast/b"]
    assert isinstance(found[3], SourceError)
    assert "missing" in str(found[3])


async def test_a_remote_listing_past_its_time_is_a_source_error_and_is_stopped() -> None:
    found = await results(
        [Remote("hung", delay=30), Remote("own", delay=30, timeout=0.2), Remote("ok")], limit=0.4
    )
    assert isinstance(found[0], SourceError)
    assert str(found[0]) == (
        "listing hung took longer than 0.4 s (SOURCE_TIMEOUT_SECONDS); is it reachable, or "
        "does it need a longer timeout?"
    )
    assert isinstance(found[1], SourceError)
    assert "took longer than 0.2 s (its timeout)" in str(found[1])
    assert isinstance(found[2], Listing)
    assert sorted(Remote.cancelled) == ["hung", "own"]


async def test_a_failing_adapter_fails_its_source_only() -> None:
    found = await results([
        Remote("denied", error=SourceError("access denied to bucket x: check the key")),
        Remote("bug", error=KeyError("oops")), Remote("ok"),
    ])  # fmt: skip
    assert [str(result) if isinstance(result, SourceError) else "listed" for result in found] == [
        "access denied to bucket x: check the key",
        "internal error listing bug: KeyError",
        "listed",
    ]


async def test_one_kind_waits_for_its_own_slots_only() -> None:
    slow = [Remote(f"s3-{n}", delay=0.3) for n in range(REMOTE_CONCURRENCY * 2)]
    other = Remote("repo", kind="restic")
    started = asyncio.get_running_loop().time()
    found = await results([*slow, other])
    assert all(isinstance(result, Listing) for result in found)
    assert Remote.most == {"s3": REMOTE_CONCURRENCY, "restic": 1}
    # Two rounds of the slow kind (its limit), not one listing after another.
    assert asyncio.get_running_loop().time() - started < 0.3 * 2 + 0.5


async def test_a_slot_is_waited_for_without_counting_against_the_time_limit() -> None:
    sources: list[AnySource] = [Remote(f"s3-{n}", delay=0.3) for n in range(REMOTE_CONCURRENCY * 3)]
    found = await results(sources, limit=0.5)  # each takes 0.3 s, the last waits 0.6 s first
    assert all(isinstance(result, Listing) for result in found)


async def test_a_caller_that_stops_listening_leaves_nothing_running() -> None:
    sources: list[AnySource] = [Remote("first"), Remote("second", delay=30),
                                Remote("third", delay=30)]  # fmt: skip
    async with aclosing(list_any(sources, 60)) as listings:
        assert isinstance(await anext(listings), Listing)
    assert sorted(Remote.cancelled) == ["second", "third"]
    assert Remote.running == {"s3": 0}


async def test_remote_listings_run_at_most_remote_ahead_of_the_one_taken() -> None:
    """Their listings wait in memory until taken: a long run of buckets is not all listed at
    once."""
    sources: list[AnySource] = [Remote(f"r{n}") for n in range(REMOTE_AHEAD * 3)]
    async with aclosing(list_any(sources, 60)) as listings:
        assert isinstance(await anext(listings), Listing)
        await asyncio.sleep(0.1)  # what has begun has ended
        assert len(Remote.listed) == REMOTE_AHEAD
    found = await results(sources)
    assert [result.entries[0][0] for result in found if isinstance(result, Listing)] == [
        f"r{n}/a" for n in range(REMOTE_AHEAD * 3)
    ]
