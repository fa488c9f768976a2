"""Reading an artifact through: its digest and its archive format, in one pass, bounded memory.

Formats, detected by their magic bytes (the name is a hint: a `.gz` that is not gzip is
corrupt): gzip (every member, CRC and length checked), bzip2, xz, zstd (every frame), tar
(plain or inside any of those: every header checksum, every member body present, the end
marker), zip (the CRC of every entry; needs a seekable file). Anything else is read for its
digest only (`Outcome.checked` says what was checked).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from service.verify.budget import Budget
from service.verify.checksums import Expected

Result = Literal[
    "ok", "corrupt", "checksum_mismatch", "sidecar_error", "too_large", "unreadable", "changed",
    "stopped",
]  # fmt: skip
CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The zip-bomb guard: reading stops ("too_large") once the expanded bytes exceed
    `max_expanded_bytes`, or `max_ratio` times the compressed bytes read so far (the ratio is
    judged only past `ratio_after` expanded bytes: a small file of zeros is no bomb)."""

    max_ratio: float = 1000.0
    max_expanded_bytes: int | None = None
    ratio_after: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    """What verifying one artifact found.

    result: ok; corrupt (the archive is damaged: detail says where, a byte offset or a member);
    checksum_mismatch (expected vs actual digest, which sidecar); sidecar_error (the sidecar
    cannot be read as one); too_large (the expansion guard stopped it); unreadable (an OS error:
    the file cannot be opened or read); changed (the file changed while it was read: verify it
    again later, not corrupt); stopped (the stop event was set: verify it again later).
    checked: what was really checked, e.g. ("gzip", "tar", "sha256"): a format missing from it
    was not verified (a non-seekable zip, no sidecar found: detail says why).
    sidecar: the sidecar whose digest was compared (None: none was).
    digest: the artifact's hex digest, when a sidecar gave an algorithm to compute.
    """

    result: Result
    detail: str
    bytes_read: int
    seconds: float
    digest: str | None = None
    checked: tuple[str, ...] = ()
    sidecar: str | None = None

    @property
    def ok(self) -> bool:
        return self.result == "ok"


def verify_stream(
    read: BinaryIO,
    name: str,
    *,
    archive: bool,
    expected: Expected | None,
    limits: Limits,
    budget: Budget,
    stop: threading.Event | None = None,
) -> Outcome:
    """Read `read` to its end once: its digest (when `expected` is given: compared with it) and,
    with `archive`, its format read through. `name` is the artifact's name (a format hint and
    what messages call it). Never raises for bad data or an OS error: it is in the Outcome."""
    raise NotImplementedError


def verify_file(
    path: Path,
    *,
    archive: bool,
    checksum: bool,
    limits: Limits,
    budget: Budget,
    stop: threading.Event | None = None,
) -> Outcome:
    """Verify a local file: with `checksum`, against the first sidecar found next to it
    (checksums.sidecar_names); a file that changes while it is read is "changed"."""
    raise NotImplementedError
