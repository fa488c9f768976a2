"""Reading an artifact through: its digest and its archive format, in one pass, bounded memory.

Formats, detected by their magic bytes (the name is a hint: a `.gz` that does not start like
gzip is corrupt): gzip (every member: CRC and length), bzip2 (every stream), xz (every stream,
padding allowed), zstd (every frame, walked block by block), tar (plain or inside any of those:
every header's checksum, every member's body present, the end-of-archive marker), zip (the CRC
of every entry; it needs a seekable file: its directory is at the end). Anything else is read
for its digest only; `Outcome.checked` says what was really checked.

Memory stays bounded whatever the input: the file is read in CHUNK pieces into one buffer, and
every decompressor is asked for at most OUTPUT bytes at a time (zstd: a few blocks at a time,
each at most 128 KiB once expanded); `Limits` stops a bomb. The stages are push-based (each
`feed`s the next), so a whole pipeline (file -> digest -> gzip -> tar) is one loop over the
chunks with no thread and no copy of the data.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from service.verify._pipeline import Fail, Limits, Result, Run, Stage, Stopped, grouped
from service.verify._streams import Sniff, hinted, magic
from service.verify._zip import Counted, check_zip
from service.verify.budget import Pacer
from service.verify.checksums import (
    MAX_SIDECAR_BYTES,
    Expected,
    NoSidecarEntry,
    SidecarError,
    parse_sidecar,
    sidecar_names,
)  # fmt: skip

__all__ = ["CHUNK", "NOT_LISTED", "Limits", "Outcome", "Result", "Stopped", "Verifier", "grouped",
           "verify_file", "verify_stream", "with_sidecar"]  # fmt: skip

CHUNK = 1024 * 1024  # bytes read from the file at a time (one reused buffer)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What verifying one artifact found.

    result: ok; corrupt (the archive is damaged: detail says where, a byte offset or a member);
    checksum_mismatch (expected vs actual digest, which sidecar); sidecar_error (the sidecar
    cannot be read as one); too_large (the expansion guard stopped it); unreadable (an OS error:
    the file cannot be opened or read); changed (the file changed while it was read: verify it
    again later, not corrupt); stopped (the stop event was set: verify it again later).
    checked: what was looked at, e.g. ("gzip", "tar", "sha256"); when ok, all of it was read
    through and is good. A format or digest missing from it was not verified (a non-seekable
    zip, no sidecar found: detail says why).
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


# Found before a byte is read, by every source: the version there is not the one listed (it is
# being rewritten; the next listing will say).
NOT_LISTED = Outcome("changed", "not the version listed (rewritten since)", 0, 0.0)


# The pass -----------------------------------------------------------------------------------------


class Verifier:
    """One artifact's verification, pushed: `feed` each piece of its bytes in order, then
    `outcome()`. For bytes that arrive in pieces from elsewhere (an S3 object's body read by
    async code); verify_stream reads a file-like object through it.

    `feed` does the CPU work (hashing, decompressing): call it off the event loop. It neither
    takes from a budget nor waits: the caller paces its reads (Budget.take before each piece,
    `stopped()` when its stop event is set). A zip cannot be checked from pieces (its directory
    is at its end): the outcome says its entries were not checked. `done` is True once more
    bytes could change nothing (the archive failed and no digest is computed): reading may stop.
    """

    def __init__(
        self, name: str, *, archive: bool, expected: Expected | None, limits: Limits
    ) -> None:
        self.name = name
        self.expected = expected
        self.started = time.monotonic()
        self.run = Run(name, limits)
        self.hasher = hashlib.new(expected.algorithm, usedforsecurity=False) if expected else None
        hint, tar_hint = hinted(name)
        self.sniff = Sniff(self.run, outer=True, hint=hint, tar_hint=tar_hint) if archive else None
        self.stage: Stage | None = self.sniff
        self.failure: Fail | None = None

    @property
    def bytes_read(self) -> int:
        return self.run.read

    @property
    def done(self) -> bool:
        return self.failure is not None and self.hasher is None

    def feed(self, data: bytes | memoryview) -> None:
        """The next piece of the artifact (not kept: a reused buffer is fine)."""
        self.run.read += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        if self.stage is not None:
            try:
                self.stage.feed(data)
            except Fail as fail:
                self.failure = fail
                self.stage = None  # the digest still tells whether it was written damaged

    def outcome(self) -> Outcome:
        """The verdict, once every byte was fed."""
        if self.stage is not None:
            stage, self.stage = self.stage, None
            try:
                stage.finish()
            except Fail as fail:
                self.failure = fail
        if self.sniff is not None and self.sniff.zip and self.failure is None:
            self.run.notes.append(
                "zip entries not checked: a zip is read from a seekable file only (its "
                "directory is at its end), and this stream is not one"
            )
        return self._conclude()

    def stopped(self) -> Outcome:
        """The outcome when reading was stopped part-way."""
        return self._outcome(
            "stopped",
            f"verification of {self.name} was stopped after {grouped(self.run.read)} bytes: "
            "it is done again later",
        )

    def unreadable(self, exc: OSError) -> Outcome:
        """The outcome when reading failed."""
        return self._outcome(
            "unreadable",
            f"{self.name} cannot be read at byte {grouped(self.run.read)}: "
            f"{exc.strerror or exc.__class__.__name__}",
        )

    def _outcome(self, result: Result, detail: str, digest: str | None = None) -> Outcome:
        expected = self.expected
        checked = tuple(self.run.checked) + ((expected.algorithm,) if digest and expected else ())
        return Outcome(
            result, detail, self.run.read, time.monotonic() - self.started, digest, checked,
            expected.source if expected and digest else None,
        )  # fmt: skip

    def _conclude(self) -> Outcome:
        run, expected, failure, name = self.run, self.expected, self.failure, self.name
        digest = self.hasher.hexdigest() if self.hasher is not None else None
        if expected is not None and digest is not None and digest != expected.hexdigest:
            also = f"; the archive is damaged too: {failure.detail}" if failure else ""
            return self._outcome(
                "checksum_mismatch",
                f"{expected.algorithm} of {name} is {digest}, but {expected.source} expects "
                f"{expected.hexdigest}: the file is not the one the checksum was written for"
                + also,
                digest,
            )
        if failure is not None:
            also = (
                f"; its {expected.algorithm} matches {expected.source}: it was written damaged"
                if expected and failure.result == "corrupt"
                else ""
            )
            return self._outcome(failure.result, failure.detail + also, digest)
        formats = [f"{f} ({run.counts[f]})" if f in run.counts else f for f in run.checked]
        what = (" and ".join(formats) + " read through") if formats else "no archive format checked"
        what = "; ".join([what, *run.notes])
        if expected is not None:
            what += f"; {expected.algorithm} matches {expected.source}"
        return self._outcome("ok", f"{grouped(run.read)} bytes read: {what}", digest)


def verify_stream(
    read: BinaryIO,
    name: str,
    *,
    archive: bool,
    expected: Expected | None,
    limits: Limits,
    budget: Pacer,
    stop: threading.Event | None = None,
) -> Outcome:
    """Read `read` to its end once: its digest (when `expected` is given: compared with it) and,
    with `archive`, its format read through. `name` is the artifact's name (a format hint and
    what messages call it). Never raises for bad data or an OS error: it is in the Outcome.
    A zip is checked when `read` is seekable (then read twice when a digest is computed)."""
    verifier = Verifier(name, archive=archive, expected=expected, limits=limits)

    def take(n: int) -> None:
        if not budget.take(n, stop):
            raise Stopped

    try:
        if archive and _seekable(read) and magic(_peek(read, 4)) == "zip":
            return _verify_zip(read, verifier, take)
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        readinto = getattr(read, "readinto", None)
        while not verifier.done:
            if readinto is not None:
                try:
                    n = readinto(view) or 0
                except NotImplementedError:  # a RawIOBase with read() only
                    readinto = None
                    continue
                chunk: bytes | memoryview = view[:n]
            else:
                chunk = read.read(CHUNK) or b""
                n = len(chunk)
            if not n:
                break
            take(n)
            verifier.feed(chunk)
        return verifier.outcome()
    except Stopped:
        return verifier.stopped()
    except OSError as exc:
        return verifier.unreadable(exc)


def _verify_zip(read: BinaryIO, verifier: Verifier, take: Callable[[int], None]) -> Outcome:
    """A seekable zip: its digest in a first pass (when one is expected), then every entry."""
    run = verifier.run
    if verifier.hasher is not None:
        start = read.tell()
        while chunk := read.read(CHUNK):
            take(len(chunk))
            run.read += len(chunk)
            verifier.hasher.update(chunk)
        read.seek(start)
    try:
        check_zip(Counted(read, run, take), run)
    except Fail as fail:
        verifier.failure = fail
    verifier.sniff = verifier.stage = None
    return verifier._conclude()


def _seekable(read: BinaryIO) -> bool:
    try:
        return bool(read.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _peek(read: BinaryIO, n: int) -> bytes:
    start = read.tell()
    head = read.read(n)
    read.seek(start)
    return head or b""


# A local file -------------------------------------------------------------------------------------


def _find_sidecar(path: Path, name: str) -> tuple[Expected | None, str]:
    """The first sidecar next to `path` (artifact `name`) that gives its digest, and a note on
    what was found (SidecarError: one that cannot be read as a checksum file)."""
    not_listed = []
    for sidecar in sidecar_names(name):
        candidate = path.parent / sidecar.rpartition("/")[2]
        try:
            with open(candidate, "rb") as file:
                content = file.read(MAX_SIDECAR_BYTES + 1)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise SidecarError(f"sidecar {sidecar} cannot be read: {exc.strerror}") from None
        try:
            return parse_sidecar(sidecar, content, name), ""
        except NoSidecarEntry as exc:
            not_listed.append(str(exc))
    looked = ", ".join(sidecar_names(name))
    return None, "; ".join(not_listed) or f"no checksum sidecar (looked for {looked})"


def verify_file(
    path: Path,
    *,
    archive: bool,
    checksum: bool,
    limits: Limits,
    budget: Pacer,
    stop: threading.Event | None = None,
    artifact: str | None = None,
) -> Outcome:
    """Verify a local file: with `checksum`, against the first sidecar found next to it
    (checksums.sidecar_names); a file that changes while it is read is "changed". `artifact`:
    its path relative to the source root ("/"-separated; default its name), as the sidecars
    are named in the outcome (the same for every source: "sub/SHA256SUMS")."""
    started = time.monotonic()
    name = path.name
    try:
        # O_NONBLOCK: a FIFO in the way would block the open until a writer came
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return Outcome("unreadable", f"{path} cannot be opened: {exc.strerror}", 0, 0.0)
    try:
        before = os.fstat(fd)
        regular = stat.S_ISREG(before.st_mode)
        if regular:
            os.set_blocking(fd, True)
            file = open(fd, "rb", buffering=0)  # noqa: SIM115 (the `with` below closes it)
    except OSError as exc:
        os.close(fd)
        return Outcome("unreadable", f"{path} cannot be read: {exc.strerror}", 0, 0.0)
    if not regular:
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(before.st_mode) else "a FIFO, a device or a socket"
        return Outcome("unreadable", f"{path} is {kind}, not a file", 0, 0.0)
    with file:
        expected, note, sidecar_error = None, "", None
        if checksum:
            try:
                expected, note = _find_sidecar(path, artifact or name)
            except SidecarError as exc:
                sidecar_error = str(exc)
        found = verify_stream(
            file, name, archive=archive, expected=expected, limits=limits, budget=budget,
            stop=stop,
        )  # fmt: skip
        try:
            after = os.stat(path)
        except OSError:
            after = None
    seconds = time.monotonic() - started
    if found.result in ("ok", "corrupt", "checksum_mismatch", "too_large") and (
        after is None
        or (after.st_ino, after.st_size, after.st_mtime_ns)
        != (before.st_ino, before.st_size, before.st_mtime_ns)
    ):
        now = "is gone" if after is None else f"is {grouped(after.st_size)} bytes"
        return Outcome(
            "changed",
            f"{path} changed while it was read (it was {grouped(before.st_size)} bytes, now "
            f"{now}): it is verified again once it settles",
            found.bytes_read, seconds, found.digest, found.checked, found.sidecar,
        )  # fmt: skip
    return with_sidecar(found, seconds, sidecar_error, note)


def with_sidecar(found: Outcome, seconds: float, sidecar_error: str | None, note: str) -> Outcome:
    """The outcome of a pass (`found`) told with what the sidecar search found: a sidecar that
    cannot be read (`sidecar_error`: the result when the pass was ok, else said too), or a
    note (none found, not listed) added to an ok result. `seconds`: the whole verification's."""
    detail = found.detail
    if sidecar_error is not None:
        if found.result == "ok":
            return Outcome("sidecar_error", sidecar_error + f" ({detail})", found.bytes_read,
                           seconds, found.digest, found.checked, None)  # fmt: skip
        detail += f"; and {sidecar_error}"
    elif note and found.result == "ok":
        detail += f"; {note}"
    return Outcome(
        found.result, detail, found.bytes_read, seconds, found.digest, found.checked,
        found.sidecar,
    )  # fmt: skip
