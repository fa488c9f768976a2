"""What a listing is made of: its entries, the Listing that holds them, and the errors a
listing ends with. The walker processes import it at start-up, so it imports nothing: no
dataclasses, no datetime (with them, a walker process took 50 ms to start instead of 24)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is a sixth of a walker's start-up
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any


class SourceError(Exception):
    """The source cannot be listed at all; the message is shown to people as is."""


class Cancelled(Exception):
    """The walk was abandoned (its time ran out); raised inside the worker thread."""


# One listed file: (path, size, mtime_us). A plain tuple, not a class: listings hold hundreds
# of thousands of them, and tuples are the cheapest to build, sort, fingerprint and pickle.
# path: relative to the source root, '/'-separated; bytes that are not UTF-8 as \xNN.
# mtime_us: modification time in microseconds since the epoch (exact, comparable); in a finished
# listing's entries always within [MTIME_MIN_US, MTIME_MAX_US].
FileEntry = tuple[str, int, int]

# The modification times a date can hold wherever it goes: Python's datetime ends at years 1 and
# 9999, and a day inside them leaves room to show the time in any zone (0001-01-02 and
# 9999-12-30, midnight UTC; their day numbers are date.toordinal's, 1970-01-01 is 719 163;
# tests/unit/test_walker.py checks them against datetime). tmpfs, btrfs, XFS (bigtime) and
# network filesystems keep times far beyond (`touch -d @9999999999999`).
_DAY_US = 86_400 * 1_000_000
MTIME_MIN_US = (2 - 719_163) * _DAY_US
MTIME_MAX_US = (3_652_058 - 719_163) * _DAY_US


class Listing:
    """What a source listed (a plain class: see the module's docstring)."""

    __slots__ = ("details", "entries", "fingerprint", "skipped", "times", "undated", "warnings")

    def __init__(
        self,
        entries: list[FileEntry] | None = None,
        warnings: list[str] | None = None,
        skipped: list[str] | None = None,
        undated: list[FileEntry] | None = None,
        fingerprint: str | None = None,
        details: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.entries = [] if entries is None else entries
        # Parts that could not be read (an unreadable subdirectory): the listing is incomplete.
        self.warnings = [] if warnings is None else warnings
        # Entries passed over on purpose (a symlink out of the source, a loop): for the log only.
        self.skipped = [] if skipped is None else skipped
        # Files whose modification time is outside [MTIME_MIN_US, MTIME_MAX_US], left out of
        # `entries` by the walker: they exist, but no date can say when they were written.
        self.undated = [] if undated is None else undated
        # Set by the walker once the entries are ordered oldest first by (mtime, path): a digest
        # of them, or None for an incomplete listing.
        self.fingerprint = fingerprint
        # What else a remote source knows of an artifact, by path (an object's ETag, a
        # snapshot's host, tags and paths, an archive's sizes): JSON-ready, stored with the
        # artifact and shown. Never a secret.
        self.details = {} if details is None else details
        # A summary in place of the entries (see summarized): the modification times of every
        # file listed, oldest first; None for a whole listing.
        self.times: Sequence[int] | None = None

    @classmethod
    def summary(
        cls, newest: list[FileEntry], times: Sequence[int], fingerprint: str,
        skipped: list[str] | None = None, undated: list[FileEntry] | None = None,
    ) -> Listing:  # fmt: skip
        """A complete listing told by its newest entries and the times of all: what a walker
        process sends of a listing that is still the one synced last (its entries are stored
        already, and only the newest few are judged)."""
        listing = cls(newest, None, skipped, undated, fingerprint)
        listing.times = times
        return listing

    @property
    def summarized(self) -> bool:
        """`entries` holds only the newest of the files listed (never to be synced)."""
        return self.times is not None

    @property
    def count(self) -> int:
        """How many files were listed (those no date can hold left aside)."""
        return len(self.entries) if self.times is None else len(self.times)

    def __repr__(self) -> str:
        shown = f"{len(self.entries)} entries" + (f" of {self.count}" if self.summarized else "")
        return (
            f"Listing({shown}, warnings={self.warnings!r}, "
            f"skipped={self.skipped!r}, {len(self.undated)} undated, "
            f"fingerprint={self.fingerprint!r})"
        )


async def nothing_known() -> Mapping[str, int]:
    """The sizes known of a source's artifacts when none are (see base.KnownSizes)."""
    return {}
