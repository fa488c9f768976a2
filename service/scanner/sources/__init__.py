"""Where backup files are listed from: the `Source` protocol (base), the local filesystem
(local, walker), `open_source` for a job's declared source.

May import the job declaration and the standard library; never the database, the models or
the rest of the scanner (a test of the pure core checks that the core does not import this).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from service.core.jobspec import LocalSource as LocalSourceSpec
from service.scanner.sources.base import Cancelled, FileEntry, Listing, Source, SourceError
from service.scanner.sources.local import LocalSource
from service.scanner.sources.walker import CHUNK, list_sources

__all__ = [
    "CHUNK", "Cancelled", "FileEntry", "Listing", "LocalSource", "Source", "SourceError",
    "list_sources", "open_source",
]  # fmt: skip


def open_source(spec: LocalSourceSpec, *, scan_roots: Sequence[Path] = ()) -> Source:
    """The source implementation for a job's declared source."""
    return LocalSource(
        spec.path, spec.pattern, recursive=spec.recursive, scan_roots=scan_roots,
        exclude=spec.excluded,
    )  # fmt: skip
