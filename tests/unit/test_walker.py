"""The walker: sources listed in order, in chunks, each with its own time limit."""

from __future__ import annotations

import threading
import time

from service.scanner.sources import Listing, SourceError, list_sources


class Quick:
    def __init__(self, label: str) -> None:
        self.label = label

    def walk(self, cancel: threading.Event) -> Listing:
        return Listing(entries=[(f"{self.label}.tar", 1, 0)])


class Hung:
    """Blocks like a dead NFS mount: ignores `cancel` until released."""

    label = "/mnt/dead"

    def __init__(self) -> None:
        self.release = threading.Event()

    def walk(self, cancel: threading.Event) -> Listing:
        self.release.wait(30)
        return Listing()


class Slow:
    label = "/mnt/slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def walk(self, cancel: threading.Event) -> Listing:
        time.sleep(self.seconds)
        return Listing(entries=[("slow.tar", 1, 0)])


class Broken:
    label = "/mnt/broken"

    def walk(self, cancel: threading.Event) -> Listing:
        raise SourceError("cannot read /mnt/broken: [Errno 5] Input/output error")


async def collect(sources, limit, chunk=4):
    return [result async for result in list_sources(sources, limit, chunk)]


async def test_results_in_order_across_chunks():
    sources = [Quick(f"s{i}") for i in range(10)]
    results = await collect(sources, 5, chunk=3)
    assert [r.entries[0][0] for r in results] == [f"s{i}.tar" for i in range(10)]


async def test_source_error_is_a_result_not_an_exception():
    results = await collect([Quick("a"), Broken(), Quick("b")], 5)
    assert isinstance(results[1], SourceError)
    assert "Input/output error" in str(results[1])
    assert [r.entries[0][0] for r in (results[0], results[2])] == ["a.tar", "b.tar"]


async def test_a_hung_source_times_out_alone_and_the_rest_are_listed():
    hung = Hung()
    try:
        started = time.monotonic()
        results = await collect([Quick("a"), hung, Quick("b"), Quick("c")], 0.3, chunk=4)
        elapsed = time.monotonic() - started
    finally:
        hung.release.set()
    assert isinstance(results[1], SourceError)
    assert "listing /mnt/dead took longer than 0.3 s" in str(results[1])
    assert [r.entries[0][0] for r in results if not isinstance(r, SourceError)] == [
        "a.tar", "b.tar", "c.tar",
    ]  # fmt: skip
    assert elapsed < 5


async def test_the_limit_is_per_source_not_per_chunk():
    """Three sources of 0.2 s each with a 0.35 s limit: a chunk takes 0.6 s, none times out."""
    results = await collect([Slow(0.2), Slow(0.2), Slow(0.2)], 0.35, chunk=3)
    assert all(isinstance(r, Listing) for r in results)
