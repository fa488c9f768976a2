"""The pure inventory diff (service/scanner/inventory.py): known artifacts vs a listing."""

from __future__ import annotations

import random

import pytest

from service.scanner.inventory import InventoryDiff, Known, diff
from service.scanner.sources.base import FileEntry, Listing

KNOWN = {
    "a.tar": Known(1, 100, 1_000),
    "b.tar": Known(2, 200, 2_000),
    "c.tar": Known(3, 300, 3_000),
}


def listing(
    entries: list[FileEntry],
    warnings: list[str] | None = None,
    undated: list[FileEntry] | None = None,
) -> Listing:
    return Listing(entries=entries, warnings=warnings or [], undated=undated or [])


def test_new_changed_and_gone() -> None:
    seen = listing([
        ("a.tar", 100, 1_000),  # unchanged
        ("b.tar", 201, 2_000),  # another size
        ("d.tar", 400, 4_000),  # new
    ])  # fmt: skip
    result = diff(KNOWN, seen)
    assert result.new == [("d.tar", 400, 4_000)]
    assert result.changed == [(2, ("b.tar", 201, 2_000))]
    assert result.gone == [3]


def test_a_file_touched_in_place_is_changed() -> None:
    result = diff(
        KNOWN, listing([("a.tar", 100, 1_001), ("b.tar", 200, 2_000), ("c.tar", 300, 3_000)])
    )
    assert (result.new, result.changed, result.gone) == ([], [(1, ("a.tar", 100, 1_001))], [])


def test_an_incomplete_listing_marks_nothing_gone() -> None:
    result = diff(KNOWN, listing([("d.tar", 1, 1)], warnings=["sub: permission denied"]))
    assert result.new == [("d.tar", 1, 1)]
    assert result.gone == []


def test_undated_files_are_still_there() -> None:
    result = diff(KNOWN, listing([("a.tar", 100, 1_000)], undated=[("c.tar", 300, 10**20)]))
    assert result.gone == [2]


def test_nothing_known_everything_new() -> None:
    entries: list[FileEntry] = [(f"{index}.tar", index, index) for index in range(10)]
    result = diff({}, listing(entries))
    assert (result.new, result.changed, result.gone) == (entries, [], [])


def test_the_known_artifacts_are_left_as_they_were() -> None:
    known = dict(KNOWN)
    diff(known, listing([]))
    assert known == KNOWN


@pytest.mark.parametrize("seed", range(5))
def test_the_result_is_the_same_however_the_entries_are_cut(seed: int) -> None:
    chance = random.Random(seed)
    known = {f"{i}.tar": Known(i, i, i) for i in range(0, 300, 2)}
    entries: list[FileEntry] = [(f"{i}.tar", i + (i % 3 == 0), i) for i in range(0, 300, 3)]
    whole = diff(known, listing(entries))
    pieces = InventoryDiff(known)
    start = 0
    while start < len(entries):
        stop = start + chance.randint(0, 20)
        pieces.compare(entries[start:stop])
        start = stop
    pieces.finish(listing(entries))
    assert (pieces.new, pieces.changed, pieces.gone) == (whole.new, whole.changed, whole.gone)
    assert whole.new and whole.changed and whole.gone


def test_a_summary_of_a_listing_is_never_synced() -> None:
    # A walker's summary holds only the newest entries: synced, the others would read as gone.
    summary = Listing.summary([("c.tar", 300, 3_000)], [1_000, 2_000, 3_000], "f")
    with pytest.raises(ValueError, match="summary"):
        diff(KNOWN, summary)
