"""The port every source implements: list the files (blocking, in a worker thread), or raise
SourceError."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol


class SourceError(Exception):
    """The source cannot be listed at all; the message is shown to people as is."""


class Cancelled(Exception):
    """The walk was abandoned (its time ran out); raised inside the worker thread."""


class FileEntry(NamedTuple):
    """One listed file. A tuple: a listing holds hundreds of thousands of them."""

    path: str  # relative to the source root, '/'-separated; bytes that are not UTF-8 as \xNN
    size: int
    mtime_us: int  # modification time, microseconds since the epoch (exact, comparable)


@dataclass(slots=True)
class Listing:
    entries: list[FileEntry] = field(default_factory=list)
    # Parts that could not be read (an unreadable subdirectory): the listing is incomplete.
    warnings: list[str] = field(default_factory=list)
    # Entries passed over on purpose (a symlink out of the source, a loop): for the log only.
    skipped: list[str] = field(default_factory=list)


class Source(Protocol):
    label: str  # what people call it in messages (a path, a URL)

    def walk(self, cancel: threading.Event) -> Listing:
        """List the files; blocking. Stop with Cancelled soon after `cancel` is set."""
        ...
