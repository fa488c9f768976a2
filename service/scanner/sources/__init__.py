"""Where backup files are listed from. Sources know nothing of the database."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from service.jobspec import LocalSource as LocalSourceSpec
from service.scanner.sources.base import FileEntry, Listing, Source, SourceError
from service.scanner.sources.local import LocalSource

__all__ = ["FileEntry", "Listing", "LocalSource", "Source", "SourceError", "open_source"]


def open_source(
    spec: LocalSourceSpec, *, timeout: float, scan_roots: Sequence[Path] = ()
) -> Source:
    """The source implementation for a job's declared source."""
    return LocalSource(
        spec.path, spec.pattern, recursive=spec.recursive, timeout=timeout, scan_roots=scan_roots
    )
