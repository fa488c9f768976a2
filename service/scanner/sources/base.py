"""The port every source implements: list the artifacts, or raise SourceError.

Two shapes: a `Source` walks a local tree (blocking, in a worker thread); a `RemoteSource`
awaits a remote API or a backup tool's process on the event loop (never blocking it). Both give
a `Listing`. An artifact's "path" is its identity within the source, as data: a file's path
below the root, an object's key below the prefix, a snapshot's or an archive's id or name."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

# The data of the port, in a module of their own that the walker processes import lean.
from service.scanner.sources.listing import (
    MTIME_MAX_US,
    MTIME_MIN_US,
    Cancelled,
    FileEntry,
    Listing,
    SourceError,
    nothing_known,
)

__all__ = [
    "MTIME_MAX_US", "MTIME_MIN_US", "Cancelled", "FileEntry", "KnownSizes", "Listing",
    "RemoteSource", "Source", "SourceError", "nothing_known",
]  # fmt: skip


class Source(Protocol):
    label: str  # what people call it in messages (a path, a URL)

    def walk(self, cancel: threading.Event) -> Listing:
        """List the files; blocking. Stop with Cancelled soon after `cancel` is set."""
        ...


# The sizes already stored for a job's present artifacts, by path: read when a remote source
# asks (a snapshot's restore size costs a run of restic; it is computed once, then read back).
KnownSizes = Callable[[], Awaitable[Mapping[str, int]]]


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
