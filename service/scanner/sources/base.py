"""The port every source implements: list the artifacts, or raise SourceError.

Two shapes: a `Source` walks a local tree (blocking, in a worker thread); a `RemoteSource`
awaits a remote API or a backup tool's process on the event loop (never blocking it). Both give
a `Listing`. An artifact's "path" is its identity within the source, as data: a file's path
below the root, an object's key below the prefix, a snapshot's or an archive's id or name."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


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
    # What else a remote source knows of an artifact, by path (an object's ETag, a snapshot's
    # host, tags and paths, an archive's sizes): JSON-ready, stored with the artifact and
    # shown. Never a secret.
    details: dict[str, dict[str, Any]] = field(default_factory=dict)


class Source(Protocol):
    label: str  # what people call it in messages (a path, a URL)

    def walk(self, cancel: threading.Event) -> Listing:
        """List the files; blocking. Stop with Cancelled soon after `cancel` is set."""
        ...


# The sizes already stored for a job's present artifacts, by path: read when a remote source
# asks (a snapshot's restore size costs a run of restic; it is computed once, then read back).
KnownSizes = Callable[[], Awaitable[Mapping[str, int]]]


async def nothing_known() -> Mapping[str, int]:
    return {}


class RemoteSource(Protocol):
    label: str  # where, as messages say it (never with a secret)
    kind: str  # "s3", "sftp", ...: sources of one kind share a concurrency limit
    timeout: float | None  # its own time limit (seconds), instead of SOURCE_TIMEOUT_SECONDS

    async def list(self) -> Listing:
        """List the artifacts, in any order (the lister orders and fingerprints them, in a
        thread); raise SourceError, with a message a person can act on and no secret in it,
        when the source cannot be read whole. Must not block the event loop; cancelled (its
        time is up), it leaves nothing behind: a process killed, a connection closed."""
        ...
