"""The port every source implements: list the files (blocking, in a worker thread), or raise
SourceError."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol


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

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The modification times a date can hold wherever it goes: Python's datetime ends at years 1 and
# 9999, and a day inside them leaves room to show the time in any zone. tmpfs, btrfs, XFS
# (bigtime) and network filesystems keep times far beyond (`touch -d @9999999999999`).
MTIME_MIN_US = (datetime(1, 1, 2, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
MTIME_MAX_US = (datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)


@dataclass(slots=True)
class Listing:
    entries: list[FileEntry] = field(default_factory=list)
    # Parts that could not be read (an unreadable subdirectory): the listing is incomplete.
    warnings: list[str] = field(default_factory=list)
    # Entries passed over on purpose (a symlink out of the source, a loop): for the log only.
    skipped: list[str] = field(default_factory=list)
    # Files whose modification time is outside [MTIME_MIN_US, MTIME_MAX_US], left out of
    # `entries` by the walker: they exist, but no date can say when they were written.
    undated: list[FileEntry] = field(default_factory=list)
    # Set by the walker once the entries are ordered oldest first by (mtime, path): a digest of
    # them, or None for an incomplete listing.
    fingerprint: str | None = None


class Source(Protocol):
    label: str  # what people call it in messages (a path, a URL)

    def walk(self, cancel: threading.Event) -> Listing:
        """List the files; blocking. Stop with Cancelled soon after `cancel` is set."""
        ...
