"""The walker: sources listed in order, in chunks, each with its own time limit."""

from __future__ import annotations

import asyncio
import random
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


class Exploding:
    label = "/mnt/stale"

    def walk(self, cancel: threading.Event) -> Listing:
        raise OSError(116, "Stale file handle")


async def test_an_unexpected_error_fails_that_source_only():
    results = await collect([Quick("a"), Exploding(), Quick("b"), Quick("c")], 5, chunk=4)
    assert isinstance(results[1], SourceError)
    assert "internal error listing /mnt/stale: OSError" in str(results[1])
    assert [r.entries[0][0] for r in (results[0], results[2], results[3])] == [
        "a.tar", "b.tar", "c.tar",
    ]  # fmt: skip


async def test_a_source_still_hung_is_reported_at_once_until_it_answers():
    hung = Hung()
    try:
        first = await collect([hung], 0.2)
        assert "took longer than 0.2 s" in str(first[0])
        started = time.monotonic()
        second = await collect([hung, Quick("a")], 5)
        assert time.monotonic() - started < 1  # no new thread waits on the dead mount
        assert "still blocked" in str(second[0])
        assert isinstance(second[1], Listing)
    finally:
        hung.release.set()
    for _ in range(100):  # the abandoned walk returns: the source is walked normally again
        third = await collect([hung], 5)
        if isinstance(third[0], Listing):
            break
        await asyncio.sleep(0.02)
    assert isinstance(third[0], Listing)


async def test_listings_come_ordered_and_fingerprinted():
    class Unordered:
        label = "/mnt/u"

        def walk(self, cancel: threading.Event) -> Listing:
            return Listing(entries=[("b", 1, 20), ("a", 1, 20), ("c", 1, 10)])

    class Partial(Unordered):
        def walk(self, cancel: threading.Event) -> Listing:
            listing = super().walk(cancel)
            listing.warnings.append("cannot read sub: [Errno 13] Permission denied")
            return listing

    full, partial = await collect([Unordered(), Partial()], 5)
    assert [entry[0] for entry in full.entries] == ["c", "a", "b"]  # oldest first, then path
    assert full.fingerprint is not None
    assert partial.fingerprint is None  # an incomplete listing is never remembered


async def test_timeouts_racing_completion_never_leave_a_source_marked_hung():
    """Sources that finish right at their limit: whichever side wins, nothing stays 'blocked'."""
    from service.scanner.sources import walker

    sources = [Slow(0.05) for _ in range(20)]
    for source in sources:
        source.label = f"/mnt/edge-{id(source)}"
    await collect(sources, 0.05, chunk=20)
    for _ in range(200):  # the abandoned walks return within a few tenths of a second
        if not any(s.label in walker._hung for s in sources):
            break
        await asyncio.sleep(0.01)
    assert not any(s.label in walker._hung for s in sources)
    again = await collect(sources, 5, chunk=20)
    assert all(isinstance(result, Listing) for result in again)


async def test_jobs_sharing_a_hung_path_wait_once():
    first, second = Hung(), Hung()  # two jobs, one dead mount
    try:
        started = time.monotonic()
        results = await collect([first, second, Quick("a")], 0.3, chunk=3)
        elapsed = time.monotonic() - started
    finally:
        first.release.set()
        second.release.set()
    assert "took longer than 0.3 s" in str(results[0])
    assert "still blocked" in str(results[1])  # no second thread, no second wait
    assert isinstance(results[2], Listing)
    assert elapsed < 0.6 + 0.3


async def test_results_are_handed_on_before_the_chunk_is_done():
    sources = [Slow(0.1) for _ in range(10)]
    started = time.monotonic()
    listings = list_sources(sources, 5, chunk=10)
    first = await anext(listings)
    assert isinstance(first, Listing)
    assert time.monotonic() - started < 0.6  # not the 1 s the whole chunk takes
    await listings.aclose()  # the consumer stops: the walk is told to stop too


def test_the_bounds_of_a_datable_time_are_days_inside_those_of_datetime() -> None:
    """listing.py counts them in days (it imports no datetime): the same instants."""
    from datetime import UTC, datetime, timedelta

    from service.scanner.sources.base import MTIME_MAX_US, MTIME_MIN_US

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    micro = timedelta(microseconds=1)
    assert (datetime(1, 1, 2, tzinfo=UTC) - epoch) // micro == MTIME_MIN_US
    assert (datetime(9999, 12, 30, tzinfo=UTC) - epoch) // micro == MTIME_MAX_US


def test_finish_sets_aside_the_files_no_date_can_hold() -> None:
    from service.scanner.sources.base import MTIME_MAX_US, MTIME_MIN_US
    from service.scanner.sources.fingerprint import finish

    far = 9_999_999_999_999_000_000
    entries = [
        ("future", 1, far), ("max", 1, MTIME_MAX_US), ("epoch", 1, 0), ("min", 1, MTIME_MIN_US),
        ("before", 1, MTIME_MIN_US - 1), ("past", 1, -far),
    ]  # fmt: skip
    listing = finish(Listing(entries=list(entries)))
    assert [entry[0] for entry in listing.entries] == ["min", "epoch", "max"]
    assert sorted(entry[0] for entry in listing.undated) == ["before", "future", "past"]
    assert listing.fingerprint is not None
    # The same dated files without the undated ones are another listing.
    plain = finish(Listing(entries=[e for e in entries if e[0] in ("min", "epoch", "max")]))
    assert plain.fingerprint != listing.fingerprint and not plain.undated


def test_listings_that_differ_never_share_a_fingerprint():
    """A path holding a NUL (an S3 key may) cannot pass for two paths, nor sizes for paths."""
    from service.scanner.sources.fingerprint import finish

    def fingerprint(*entries: tuple[str, int, int]) -> str | None:
        return finish(Listing(entries=list(entries))).fingerprint

    when = 1_700_000_000_000_000
    assert fingerprint(("a\0b", 1, when), ("c", 1, when)) != fingerprint(
        ("a", 1, when), ("b\0c", 1, when)
    )
    assert fingerprint(("a", 1, when)) != fingerprint(("a", 2, when))
    assert fingerprint(("a", 1, when)) == fingerprint(("a", 1, when))


def test_finish_orders_by_time_then_path() -> None:
    """Two plain sorts give exactly the order of one sort on (mtime, path), ties included."""
    from service.scanner.sources.fingerprint import finish

    rng = random.Random(16)
    entries = [
        (f"f{rng.randrange(10**6):07d}-{i}", i, rng.choice([5, 7, 7, 9]) * 10**15)
        for i in range(5000)
    ]
    rng.shuffle(entries)
    listing = finish(Listing(entries=list(entries)))
    assert listing.entries == sorted(entries, key=lambda e: (e[2], e[0]))
