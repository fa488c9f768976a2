"""A listing finished: its entries ordered oldest first, those no date can hold set aside, and
its fingerprint (a digest of the entries, for "nothing changed since the last scan").

Done where the listing was made (a walking thread, a walker process, a thread for a remote
listing): on a job of 200 000 files it is half a second the event loop does not wait for.

Standard library only, and light to import: the walker processes import it at start-up.
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
from operator import itemgetter

from service.scanner.sources.listing import MTIME_MAX_US, MTIME_MIN_US, FileEntry, Listing

TYPE_CHECKING = False  # typing: a sixth of a walker process's start-up
if TYPE_CHECKING:
    from typing import Any

_path = itemgetter(0)
_mtime = itemgetter(2)


def finish(listing: Listing) -> Listing:
    """Order the entries oldest first by (mtime, path), set aside those no date can hold, and
    fingerprint them."""
    entries = listing.entries
    # By path, then (stable) by time: (mtime, path) order in two sorts of plain keys, 3x less
    # than one sort on (mtime, path) tuples (127 against 411 ms for 100 000 files). Each sort
    # holds the GIL, and in a walking thread so the event loop, that long.
    entries.sort(key=_path)
    entries.sort(key=_mtime)
    # Sorted by time, the undatable ones are at both ends: two bisections, no pass over all.
    low = bisect.bisect_left(entries, MTIME_MIN_US, key=_mtime)
    high = bisect.bisect_right(entries, MTIME_MAX_US, key=_mtime)
    if low or high < len(entries):
        listing.undated.extend(entries[:low] + entries[high:])
        entries[:] = entries[low:high]
    if not listing.warnings:  # an incomplete listing is never remembered as the last good one
        digest = hashlib.blake2b(digest_size=20)
        if listing.undated:  # part of what was seen: a change among them is a new listing
            digest.update(repr(sorted(listing.undated)).encode())
        # In slices: hashing 100 000 entries at once would hold the GIL, and so the event loop.
        for start in range(0, len(entries), 4096):
            _digest_entries(digest, entries[start : start + 4096])
        listing.fingerprint = digest.hexdigest()
    return listing


def listing_digest(source: str, fingerprint: str) -> str:
    """What a job keeps of the listing it synced last (jobs.listing_digest): a digest of its
    source's declaration (JSON, sorted keys) and of the listing's fingerprint. The same files
    seen through another declaration are another listing."""
    return hashlib.blake2b(f"{source}\0{fingerprint}".encode(), digest_size=20).hexdigest()


def _digest_entries(digest: Any, entries: list[FileEntry]) -> None:
    """Feed entries to the digest without ambiguity: their count, each path's length and the
    paths NUL-joined (an S3 key may hold a NUL: the lengths say where each ends), then the sizes
    and times as 64-bit integers, each block led by its byte length; a few C-level passes instead
    of a repr() of every tuple (a third of the cost). Integers beyond 64 bits (never from a
    filesystem): repr, tagged so that it never reads as the integers."""
    if not entries:
        return
    paths, sizes, times = zip(*entries, strict=True)
    try:
        numbers = b"q" + array("q", sizes).tobytes() + array("q", times).tobytes()
    except (OverflowError, TypeError):
        numbers = b"r" + repr((sizes, times)).encode()
    joined = "\0".join(paths).encode("utf-8", "surrogatepass")
    lengths = array("q", map(len, paths)).tobytes()
    digest.update(f"{len(entries)}:{len(joined)}:{len(numbers)}:".encode())
    digest.update(lengths)
    digest.update(joined)
    digest.update(numbers)
