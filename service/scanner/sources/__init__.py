"""Where backups are listed from: the ports (base: `Source` for local walks, `RemoteSource` for
remote listings; listing: the `Listing` they give and its errors), the local filesystem (local;
walker: in a thread, walk_process: in walker processes), one adapter per remote kind (s3, sftp,
restic, borg: each its own module, imported only when a job uses it), the lister that lists a
mix of them in order (lister), and `open_source` for a job's declared source.

May import the pure core, service.config (secrets in files are read through its guarded reader),
service.children (how the walker processes start) and the standard library (an adapter: its own
client library); never the database, the models or the rest of the scanner (a test of the pure
core checks that the core does not import this).
"""

from __future__ import annotations

from collections.abc import Sequence

from service.scanner.sources.listing import (
    Cancelled,
    FileEntry,
    Listing,
    SourceError,
    nothing_known,
)
from service.scanner.sources.local import LocalSource

TYPE_CHECKING = False  # typing itself is a sixth of a walker process's start-up
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from service.core import jobspec
    from service.scanner.sources.base import KnownSizes, RemoteSource, Source
    from service.scanner.sources.walker import CHUNK, list_sources

__all__ = [
    "CHUNK", "Cancelled", "FileEntry", "KnownSizes", "Listing", "LocalSource", "RemoteSource",
    "Source", "SourceError", "list_sources", "nothing_known", "open_source",
]  # fmt: skip

# Names imported on first use, and from where: the walker processes import this package, and
# walker imports asyncio (a third of their start-up), base imports typing.
_LAZY = {"CHUNK": "walker", "list_sources": "walker", "KnownSizes": "base",
         "RemoteSource": "base", "Source": "base"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_source(
    spec: jobspec.LocalSource | jobspec.RemoteSource,
    *,
    scan_roots: Sequence[Path] = (),
    known: KnownSizes = nothing_known,
) -> Source | RemoteSource:
    """The source implementation for a job's declared source. `known`: the sizes stored for
    the job's present artifacts, for sources whose artifacts never change (sized once)."""
    from typing import assert_never

    from service.core import jobspec  # here: the walker processes import this package lean

    if isinstance(spec, jobspec.LocalSource):
        return LocalSource(
            spec.path, spec.pattern, recursive=spec.recursive, scan_roots=scan_roots,
            exclude=spec.excluded,
        )  # fmt: skip
    if isinstance(spec, jobspec.SftpSource):
        from service.scanner.sources.sftp import SftpListing

        return SftpListing(spec)
    if isinstance(spec, jobspec.ResticSource):
        from service.scanner.sources.restic import ResticListing  # lazy

        return ResticListing(spec, known)
    if isinstance(spec, jobspec.BorgSource):
        from service.scanner.sources.borg import BorgListing  # lazy

        return BorgListing(spec, known)
    if isinstance(spec, jobspec.S3Source):
        from service.scanner.sources.s3 import S3Listing  # botocore: only for S3 jobs

        return S3Listing(spec)
    assert_never(spec)
