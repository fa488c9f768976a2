"""The inventory diff, pure: the artifacts a job is known to have vs a listing of its source
-> the files new, changed and gone.

No I/O and no database: the writer reads the known artifacts and writes the diff. May import
the standard library and service.scanner.sources.base (the listing's types) only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from service.scanner.sources.base import FileEntry, Listing


class Known(NamedTuple):
    """An artifact the job is known to have (not gone), as stored."""

    id: int
    size: int
    mtime_us: int  # microseconds since the epoch, as a listing gives it


class InventoryDiff:
    """The artifacts new, changed and gone, between the known ones and one listing.

    Feed the listing's entries with compare(), in as many pieces as you like (the writer
    lets the event loop run between two), then call finish() once with the listing: the
    result is the same however the entries were cut.

    Invariants: a path is new (not known), changed (known, another size or mtime) or
    unchanged; a known artifact is gone only when the listing is complete (no warnings: an
    incomplete listing may hide files that still exist) and shows it neither among its
    entries nor among its undated files (they exist; no date can hold their time)."""

    __slots__ = ("_present", "changed", "gone", "new")

    def __init__(self, known: Mapping[str, Known]) -> None:
        self._present = dict(known)
        self.new: list[FileEntry] = []
        self.changed: list[tuple[int, FileEntry]] = []  # (artifact id, the entry now)
        self.gone: list[int] = []  # artifact ids

    def compare(self, entries: Iterable[FileEntry]) -> None:
        """Sort these listed entries into new and changed."""
        present, new, changed = self._present, self.new, self.changed
        for entry in entries:
            known = present.pop(entry[0], None)
            if known is None:
                new.append(entry)
            elif known.size != entry[1] or known.mtime_us != entry[2]:
                changed.append((known.id, entry))

    def finish(self, listing: Listing) -> InventoryDiff:
        """The known artifacts the listing does not show are gone (if it is complete)."""
        if listing.summarized:  # never so: a summary is of the listing synced last (judge)
            raise ValueError("a summary of a listing cannot be synced: it holds the newest only")
        for undated in listing.undated:
            self._present.pop(undated[0], None)
        if not listing.warnings:
            self.gone.extend(known.id for known in self._present.values())
        self._present = {}
        return self


def diff(known: Mapping[str, Known], listing: Listing) -> InventoryDiff:
    """The diff between the known artifacts and the whole listing, in one go."""
    inventory = InventoryDiff(known)
    inventory.compare(listing.entries)
    return inventory.finish(listing)
