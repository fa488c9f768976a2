"""The walker process itself (`python -m` this module; the service's side is walk_process):
walk each request's local sources in order, one answer each, until the input ends.

It runs LocalSource.walk and fingerprint.finish, the very code a walking thread runs, and
imports nothing else: no asyncio, no logging, no pydantic, not even typing, dataclasses or
datetime. Its start-up is paid by every big scan, twice on two cores: 24 ms of CPU each
(`python -X importtime`), against 50 ms with those three and 0.17-0.20 s when it imported
the service's scanner modules.

Frames, both ways: a 4-byte little-endian length, then a `marshal` payload. The request: a list
of (path, pattern, exclude, recursive, scan_roots, synced), one per source; `synced` is the
job's listing synced last, (source JSON, digest, newest), or None. Each answer, in order:
("ok", entries, warnings, skipped, undated, fingerprint), ("same", newest entries, times, skipped,
undated, fingerprint) for a listing still the one synced (times: every entry's, as int64
bytes), ("error", message) for a SourceError, or ("bug", message, traceback) for anything
else (logged by the service).

A rescan of an unchanged tree, most of them, then sends only the newest few entries of each
listing and its times: decoding files stored already was 29 % of the service's CPU in a rescan
of 1M files (0.27 of 0.92 s).

May import the standard library and this package's listing, local and fingerprint modules
(and service.core.paths).
"""

from __future__ import annotations

import marshal
import os
import signal
import struct
import sys
import threading
from array import array

from service.scanner.sources.fingerprint import finish, listing_digest
from service.scanner.sources.listing import SourceError
from service.scanner.sources.local import LocalSource

TYPE_CHECKING = False  # typing: a sixth of our start-up
if TYPE_CHECKING:
    from typing import Any, BinaryIO

HEADER = struct.Struct("<I")
NICE = 5  # a walker's niceness, added to the service's


def frame(payload: Any) -> bytes:
    data = marshal.dumps(payload)
    return HEADER.pack(len(data)) + data


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer every request of `requests`, until it ends."""
    never = threading.Event()  # a walk is stopped by killing the process
    while header := requests.read(HEADER.size):
        request = marshal.loads(requests.read(*HEADER.unpack(header)))  # noqa: S302 (the service's)
        for path, pattern, exclude, recursive, roots, synced in request:
            source = LocalSource(
                path, pattern, recursive=recursive, exclude=exclude, scan_roots=roots
            )
            source.synced = synced
            answers.write(frame(_walked(source, never)))
            answers.flush()


def _walked(source: LocalSource, never: threading.Event) -> tuple[Any, ...]:
    try:
        listing = finish(source.walk(never))
    except SourceError as exc:
        return ("error", str(exc))
    except Exception as exc:  # a bug or an unexpected OS error: this source only
        import traceback  # only then: the module costs start-up time

        message = f"internal error listing {source.label}: {type(exc).__name__}: {exc}"
        return ("bug", message, traceback.format_exc())
    entries, fingerprint = listing.entries, listing.fingerprint
    if source.synced is not None and fingerprint is not None:
        declared, digest, newest = source.synced
        if listing_digest(declared, fingerprint) == digest:
            times = array("q", [entry[2] for entry in entries]).tobytes()
            newest_entries = entries[max(0, len(entries) - newest) :]
            return ("same", newest_entries, times, listing.skipped, listing.undated, fingerprint)
    return ("ok", entries, listing.warnings, listing.skipped, listing.undated, fingerprint)


if __name__ == "__main__":
    # Ctrl-C in a terminal and systemd's stop reach the whole process group: the service
    # decides, and ends us (the end of our input, or SIGKILL).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Below the service: when its event loop has a request to answer, it goes first.
    os.nice(NICE)
    serve(sys.stdin.buffer, sys.stdout.buffer)
