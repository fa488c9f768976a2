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

import bz2
import hashlib
import lzma
import os
import stat
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

import zstandard

from service.verify.budget import Budget
from service.verify.checksums import (
    MAX_SIDECAR_BYTES,
    Expected,
    NoSidecarEntry,
    SidecarError,
    parse_sidecar,
    sidecar_names,
)  # fmt: skip

Result = Literal[
    "ok", "corrupt", "checksum_mismatch", "sidecar_error", "too_large", "unreadable", "changed",
    "stopped",
]  # fmt: skip
CHUNK = 1024 * 1024  # bytes read from the file at a time (one reused buffer)
OUTPUT = 4 * 1024 * 1024  # the most a decompressor is asked to expand at a time
_ZSTD_BLOCKS = 32  # zstd blocks fed at a time: at most 32 x 128 KiB expanded
_MAX_TAR_META = 1024 * 1024  # a pax or GNU long-name header larger than this is not believable
# The memory a decompressor may need for its window: xz -9 needs 65 MiB, zstd --long 128 MiB;
# an archive that needs more (xz --lzma2=dict=1GiB, zstd --long=31) is "too_large", not read.
MAX_WINDOW = 256 * 1024 * 1024


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


def grouped(n: int) -> str:
    """A byte count as people read it in a message: 1 048 576."""
    return f"{n:,}".replace(",", " ")


class _Fail(Exception):
    """A stage found the archive bad (corrupt) or too large: the rest is not read through."""

    def __init__(self, result: Result, detail: str) -> None:
        super().__init__(detail)
        self.result: Result = result
        self.detail = detail


class _Stopped(Exception):
    pass


class _Stage(Protocol):
    def feed(self, data: bytes | memoryview) -> None: ...
    def finish(self) -> None: ...
    def inside(self) -> str: ...  # what was being read when an outer layer failed


@dataclass
class _Run:
    """What the stages of one verification share: the name, the guard, what was checked."""

    name: str
    limits: Limits
    read: int = 0  # bytes of the artifact read so far
    expanded: int = 0  # bytes produced by decompression so far (the outermost layer)
    checked: list[str] = field(default_factory=list)
    counts: dict[str, str] = field(default_factory=dict)  # "tar": "12 members"
    notes: list[str] = field(default_factory=list)

    def grew(self, n: int) -> None:
        """`n` more bytes came out of a decompressor: stop a bomb."""
        self.expanded += n
        limits = self.limits
        if limits.max_expanded_bytes is not None and self.expanded > limits.max_expanded_bytes:
            raise _Fail(
                "too_large",
                f"{self.name} expands to more than {grouped(limits.max_expanded_bytes)} bytes "
                f"(the limit) after {grouped(self.read)} bytes read: not read further",
            )
        if self.expanded > limits.ratio_after and self.expanded > limits.max_ratio * max(
            self.read, 1
        ):
            raise _Fail(
                "too_large",
                f"{self.name} expands more than {limits.max_ratio:g} times "
                f"({grouped(self.read)} bytes read gave {grouped(self.expanded)}): a "
                "decompression bomb? not read further",
            )


class _Null:
    """The end of a pipeline: bytes that are no format of their own."""

    def feed(self, data: bytes | memoryview) -> None:
        pass

    def finish(self) -> None:
        pass

    def inside(self) -> str:
        return ""


# Names and magic bytes --------------------------------------------------------------------------

_SUFFIXES = {
    ".gz": ("gzip", False), ".tgz": ("gzip", True), ".bz2": ("bzip2", False),
    ".tbz": ("bzip2", True), ".tbz2": ("bzip2", True), ".xz": ("xz", False),
    ".txz": ("xz", True), ".zst": ("zstd", False), ".zstd": ("zstd", False),
    ".tzst": ("zstd", True), ".zip": ("zip", False), ".tar": ("tar", False),
}  # fmt: skip
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty zip
)
_MAGIC_OF = {"gzip": "1f 8b", "bzip2": "42 5a 68", "xz": "fd 37 7a 58 5a 00",
             "zstd": "28 b5 2f fd", "zip": "50 4b 03 04"}  # fmt: skip


def hinted(name: str) -> tuple[str | None, bool]:
    """The format a name suggests (its last suffix), and whether a tar is inside it."""
    lower = name.rsplit("/", 1)[-1].lower()
    for suffix, (fmt, tar) in _SUFFIXES.items():
        if lower.endswith(suffix):
            inner_tar = tar or lower[: -len(suffix)].endswith(".tar")
            return fmt, inner_tar and fmt != "tar"
    return None, False


def _magic(head: bytes) -> str | None:
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    return None


def _tar_checksum_ok(block: bytes) -> bool:
    """Whether a 512-byte block is a tar header (its checksum is right: unsigned or signed)."""
    try:
        stored = int(block[148:156].split(b"\0", 1)[0].strip() or b"x", 8)
    except ValueError:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32  # the field counts as 8 spaces
    if stored == unsigned:
        return True
    high = sum(1 for b in block[:148] + block[156:] if b > 127)  # old tars summed signed bytes
    return stored == unsigned - 256 * high


def _is_tar(head: bytes) -> bool:
    return len(head) >= 512 and _tar_checksum_ok(head[:512]) and any(head[:512])


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data[:8]) or "nothing"


class _Sniff:
    """Buffers the first bytes of a stream, then hands it to the stage its magic calls for.

    Outermost (`outer`): any format; inside a decompressor: a tar, or nothing. `hint` is the
    format the name suggests (a mismatch is corrupt), `tar_hint` whether a tar is expected.
    """

    def __init__(
        self, run: _Run, *, outer: bool, hint: str | None, tar_hint: bool, layer: str = ""
    ) -> None:
        self.run = run
        self.outer = outer
        self.hint = hint
        self.tar_hint = tar_hint
        self.layer = layer  # "gzip": what the bytes come out of (for messages)
        self.head = bytearray()
        self.next: _Stage | None = None
        self.zip = False  # an outermost zip: read by verify_stream from a seekable file

    def feed(self, data: bytes | memoryview) -> None:
        if self.next is not None:
            self.next.feed(data)
            return
        taken = min(512 - len(self.head), len(data))
        self.head += data[:taken]
        if len(self.head) < 512:
            return
        self._choose()
        assert self.next is not None
        self.next.feed(bytes(self.head))
        if taken < len(data):
            self.next.feed(data[taken:])

    def inside(self) -> str:
        return self.next.inside() if self.next is not None else ""

    def finish(self) -> None:
        if self.next is None:
            self._choose()
            assert self.next is not None
            self.next.feed(bytes(self.head))
        self.next.finish()

    def _choose(self) -> None:
        head = bytes(self.head)
        run = self.run
        fmt = _magic(head) if self.outer else None
        expects_tar = self.hint == "tar" if self.outer else self.tar_hint
        if fmt is None and (_is_tar(head) or (expects_tar and len(head) == 512 and not any(head))):
            fmt = "tar"  # (an empty tar is its end marker only)
        where = f"the {self.layer} data of {run.name}" if self.layer else run.name
        if fmt is None:
            expected = self.hint if self.outer else ("tar" if self.tar_hint else None)
            if expected is not None:
                if expected == "tar":
                    what = "it is too short" if len(head) < 512 else "its first header is wrong"
                    raise _Fail("corrupt", f"{where} is not a tar archive ({what})")
                raise _Fail(
                    "corrupt",
                    f"{run.name} does not start like a {expected} file ({_MAGIC_OF[expected]}): "
                    f"it starts with {_hex(head)}; it is not {expected}, or its start is damaged",
                )
            self.next = _Null()
            return
        if fmt == "zip":
            self.zip = True
            self.next = _Null()
            return
        if fmt == "tar":
            run.checked.append("tar")
            self.next = _Tar(run, self.layer)
            return
        inner = _Sniff(run, outer=False, hint=None, tar_hint=self.tar_hint, layer=fmt)
        run.checked.append(fmt)
        self.next = _ZSTD(run, inner) if fmt == "zstd" else _Codec(run, fmt, inner)


# Stream formats -----------------------------------------------------------------------------------


class _Codec:
    """gzip (zlib), bzip2, xz: every member or stream in turn, each checked to its end."""

    def __init__(self, run: _Run, fmt: str, sink: _Stage) -> None:
        self.run = run
        self.fmt = fmt
        self.sink = sink
        self.fed = 0  # compressed bytes given to this stage
        self.members = 0
        self.padding = False  # after a member: zero bytes only (tape/block padding)
        self.started = False  # the current member has had bytes
        self.member_start = 0
        self.decompressor = self._new()

    def _new(self) -> _Decompressor:
        self.members += 1
        self.started = False
        if self.fmt == "gzip":
            return _Zlib()
        if self.fmt == "bzip2":
            return _Needing(bz2.BZ2Decompressor())
        return _Needing(lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=MAX_WINDOW))

    def feed(self, data: bytes | memoryview) -> None:
        start = self.fed
        self.fed += len(data)
        while data:
            if self.padding:
                if not any(data):
                    return
                at = next(i for i, b in enumerate(bytes(data)) if b)
                if self.fmt != "xz":  # xz alone allows streams after padding
                    self._trailing(start + at)
                self.padding = False
                self.decompressor = self._new()
                start, data = start + at, data[at:]
                self.member_start = start
            self.started = True
            try:
                for out in self.decompressor.run(data):
                    self.run.grew(len(out))
                    self.sink.feed(out)
            except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
                raise self._damaged(exc, start) from None
            if not self.decompressor.eof:
                return
            rest = self.decompressor.unused
            start = self.member_start = self.fed - len(rest)  # where the member ended
            if rest and rest[0] == 0:
                self.padding = True
            else:
                self.decompressor = self._new()
            data = rest

    def _damaged(self, exc: Exception, start: int) -> _Fail:
        said = str(exc).removeprefix("Error -3 while decompressing data: ")
        if isinstance(exc, lzma.LZMAError) and "memory usage limit" in said.lower():
            return _Fail(
                "too_large",
                f"xz stream {self.members} of {self.run.name} needs more than "
                f"{grouped(MAX_WINDOW)} bytes of memory to decompress (a very large dictionary): "
                "not read",
            )
        member = f"member {self.members} (from byte {grouped(self.member_start)})"
        if said in ("incorrect data check", "incorrect length check"):
            where = (
                f"{member} fails its {'CRC-32' if 'data' in said else 'length'} check at its "
                f"end (byte {grouped(self.fed)}): some byte of it is damaged"
            )
        else:
            where = (
                f"{member} cannot be read in bytes {grouped(start)}–{grouped(self.fed)} ({said})"
            )
        return _Fail(
            "corrupt", f"{self.fmt} data of {self.run.name} is damaged: {where}{self.inside()}"
        )

    def inside(self) -> str:
        return self.sink.inside()

    def _trailing(self, at: int) -> None:
        raise _Fail(
            "corrupt",
            f"{self.run.name} has bytes that are not {self.fmt} at byte {grouped(at)}, after "
            f"its {self.fmt} data: it was appended to, or damaged there",
        )

    def finish(self) -> None:
        if self.padding:
            self.sink.finish()
            return
        try:
            for out in self.decompressor.run(b""):
                self.run.grew(len(out))
                self.sink.feed(out)
        except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
            raise self._damaged(exc, self.fed) from None
        if self.started and not self.decompressor.eof:
            raise _Fail(
                "corrupt",
                f"{self.fmt} stream of {self.run.name} is truncated at byte {grouped(self.fed)} "
                f"(the end of the file, inside member {self.members}): it was cut short"
                + self.inside(),
            )
        if self.fed == 0:
            raise _Fail("corrupt", f"{self.run.name} is empty: no {self.fmt} data")
        self.sink.finish()


class _Decompressor(Protocol):
    eof: bool
    unused: bytes

    def run(self, data: bytes | memoryview) -> Iterator[bytes]: ...


class _Zlib:
    """A gzip member (zlib checks its CRC-32 and length), OUTPUT bytes at a time."""

    def __init__(self) -> None:
        self.d = zlib.decompressobj(wbits=31)
        self.eof = False
        self.unused = b""

    def run(self, data: bytes | memoryview) -> Iterator[bytes]:
        d = self.d
        yield d.decompress(data, OUTPUT)
        while d.unconsumed_tail and not d.eof:
            yield d.decompress(d.unconsumed_tail, OUTPUT)
        if not data:  # the end: what zlib still holds
            while out := d.decompress(b"", OUTPUT):
                yield out
        self.eof = d.eof
        self.unused = d.unused_data


class _Needing:
    """A bz2 or lzma decompressor (they buffer their input), OUTPUT bytes at a time."""

    def __init__(self, d: bz2.BZ2Decompressor | lzma.LZMADecompressor) -> None:
        self.d = d
        self.eof = False
        self.unused = b""

    def run(self, data: bytes | memoryview) -> Iterator[bytes]:
        d = self.d
        if d.eof:
            return
        yield d.decompress(data, OUTPUT)
        while not d.eof and not d.needs_input:
            yield d.decompress(b"", OUTPUT)
        self.eof = d.eof
        self.unused = d.unused_data if d.eof else b""


class _ZSTD:
    """zstd frames, walked by their block headers (RFC 8878) so that a frame cut short is seen
    (the zstd library's readers end quietly at the end of the input) and a decompression bomb
    expands a few blocks at a time; each frame's blocks are decompressed and its checksum, when
    it has one, checked by the zstd library."""

    def __init__(self, run: _Run, sink: _Stage) -> None:
        self.run = run
        self.sink = sink
        self.dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
        self.offset = 0  # stream offset of the next byte to walk
        self.frame_start = 0
        self.frames = 0
        self.unchecked = 0  # frames without a content checksum
        self.state = "magic"
        self.need = 4  # bytes to gather for the state's header
        self.gathered = bytearray()
        self.skip = 0  # body bytes left in the current block / skippable frame
        self.checksum = False
        self.last_block = False
        self.blocks = 0  # blocks since the last feed to the decompressor
        self.pending: list[bytes | memoryview] = []  # walked, not yet decompressed
        self.frame: zstandard.ZstdDecompressionObj | None = None

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        i = 0
        n = len(view)
        while i < n:
            if self.skip:
                k = min(self.skip, n - i)
                if self.state == "block":
                    self.pending.append(view[i : i + k])
                self.skip -= k
                i += k
                self.offset += k
                if self.skip == 0:
                    if self.state != "block":  # a skippable frame's end
                        self.state, self.need = "magic", 4
                    elif self._after_block():
                        self._end_frame()
                    elif self.blocks >= _ZSTD_BLOCKS:
                        self._flush()
                continue
            k = min(self.need - len(self.gathered), n - i)
            self.gathered += view[i : i + k]
            i += k
            self.offset += k
            if len(self.gathered) == self.need:
                header = bytes(self.gathered)
                self.gathered.clear()
                if self._header(header):
                    self._end_frame()
        self._flush()  # the views of `data` are not kept past this call

    def _header(self, header: bytes) -> bool:
        """Take a gathered header; True at the end of a (non-skippable) frame."""
        state = self.state
        if state == "magic":
            self.frame_start = self.offset - 4
            if header == b"\x28\xb5\x2f\xfd":
                self.frames += 1
                self.frame = self.dctx.decompressobj()
                self.pending.append(header)
                self.state, self.need = "descriptor", 1
            elif header[1:] == b"\x2a\x4d\x18" and header[0] & 0xF0 == 0x50:
                self.state, self.need = "skippable_size", 4
            elif self.frames and not any(header):
                raise _Fail(
                    "corrupt",
                    f"{self.run.name} has zero bytes at byte {grouped(self.frame_start)}, after "
                    "its zstd frames: zstd refuses that (padding where none is allowed)",
                )
            else:
                raise self._damaged(
                    f"no zstd frame starts at byte {grouped(self.frame_start)} "
                    f"(it holds {_hex(header)})"
                )
            return False
        if state == "descriptor":
            (fhd,) = header
            if fhd & 0x08:
                raise self._damaged(
                    f"the frame at byte {grouped(self.frame_start)} has a reserved bit set"
                )
            single = bool(fhd & 0x20)
            self.checksum = bool(fhd & 0x04)
            self.unchecked += 0 if self.checksum else 1
            size = (0, 1, 2, 4)[fhd & 0x03] + ((1 if single else 0), 2, 4, 8)[fhd >> 6]
            size += 0 if single else 1
            self.pending.append(header)
            if size:
                self.state, self.need = "frame_header", size
            else:
                self.state, self.need = "block_header", 3
            return False
        if state == "frame_header":
            self.pending.append(header)
            self.state, self.need = "block_header", 3
            return False
        if state == "block_header":
            self.pending.append(header)
            word = int.from_bytes(header, "little")
            self.last_block = bool(word & 1)
            kind = (word >> 1) & 3
            size = word >> 3
            if kind == 3:
                raise self._damaged(
                    f"the block at byte {grouped(self.offset - 3)} has the reserved type"
                )
            if size > 128 * 1024:
                raise self._damaged(
                    f"the block at byte {grouped(self.offset - 3)} claims {grouped(size)} bytes"
                )
            self.state = "block"
            self.skip = 1 if kind == 1 else size
            return self.skip == 0 and self._after_block()
        if state == "skippable_size":
            self.skip = int.from_bytes(header, "little")
            self.state, self.need = ("skipped", 0) if self.skip else ("magic", 4)
            return False
        if state == "checksum":
            self.pending.append(header)
            self.state, self.need = "magic", 4
            return True
        raise AssertionError(state)

    def _after_block(self) -> bool:
        """A block's end; True when it ends the frame."""
        self.blocks += 1
        if not self.last_block:
            self.state, self.need = "block_header", 3
            return False
        if self.checksum:
            self.state, self.need = "checksum", 4
            return False
        self.state, self.need = "magic", 4
        return True

    def _flush(self) -> None:
        """Decompress what was walked (at most _ZSTD_BLOCKS blocks: bounded output)."""
        if self.frame is None or not self.pending:
            self.pending.clear()
            return
        data = b"".join(self.pending)
        self.pending.clear()
        try:
            out = self.frame.decompress(data)
        except zstandard.ZstdError as exc:
            if "too much memory" in str(exc):
                raise _Fail(
                    "too_large",
                    f"zstd frame {self.frames} of {self.run.name} needs a window of more than "
                    f"{grouped(MAX_WINDOW)} bytes (written with --long=31?): not read",
                ) from None
            raise self._damaged(
                f"frame {self.frames} (at byte {grouped(self.frame_start)}) does not decompress "
                f"near byte {grouped(self.offset)}: {exc}"
            ) from None
        self.blocks = 0
        if out:
            self.run.grew(len(out))
            self.sink.feed(out)

    def _end_frame(self) -> None:
        self._flush()
        if self.frame is not None and not self.frame.eof:
            raise self._damaged(
                f"frame {self.frames} (at byte {grouped(self.frame_start)}) does not end where "
                "its last block ends"
            )
        self.frame = None

    def _damaged(self, what: str) -> _Fail:
        return _Fail("corrupt", f"zstd data of {self.run.name} is damaged: {what}{self.inside()}")

    def inside(self) -> str:
        return self.sink.inside()

    def finish(self) -> None:
        if self.state != "magic" or self.gathered or self.skip:
            raise _Fail(
                "corrupt",
                f"zstd stream of {self.run.name} is truncated at byte {grouped(self.offset)} "
                f"(the end of the file, inside the frame at byte {grouped(self.frame_start)}): "
                "it was cut short" + self.inside(),
            )
        if not self.frames:
            raise _Fail("corrupt", f"{self.run.name} holds no zstd frame")
        if self.unchecked:
            self.run.notes.append(
                f"{self.unchecked} of its {self.frames} zstd frame{'s' if self.frames > 1 else ''} "
                "carry no checksum (written without one): a changed byte in them may go unseen"
            )
        self.sink.finish()


# tar ----------------------------------------------------------------------------------------------

_BODYLESS = frozenset(b"123456")  # links, devices, directories, fifos: no data follows


def _number(field: bytes) -> int:
    """A tar numeric field: octal text, or base-256 (GNU: first byte 0x80 or 0xff)."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[0] == 0xFF else value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


class _Tar:
    """A tar stream: every header (its checksum), every member's body present, the end marker.

    Bodies are skipped, not looked at: a tar has no checksum of its contents (a damaged body is
    found by the compression around it, or by a sidecar's digest).
    """

    def __init__(self, run: _Run, layer: str) -> None:
        self.run = run
        self.where = f"the {layer} data of {run.name}" if layer else run.name
        self.offset = 0  # bytes of tar walked
        self.header = bytearray()
        self.skip = 0  # body (and padding) bytes left
        self.body_size = 0
        self.capture: bytearray | None = None  # a pax / GNU long-name body being gathered
        self.capture_size = 0
        self.capture_kind = 0
        self.pax: dict[str, str] = {}
        self.long_name: str | None = None
        self.member = ""  # the last member's name
        self.member_at = 0
        self.members = 0
        self.zero_blocks = 0
        self.ended = False

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        i = 0
        n = len(view)
        while i < n:
            if self.ended:  # after the end marker: tar reads no further (record padding)
                self.offset += n - i
                return
            if self.skip:
                k = min(self.skip, n - i)
                if self.capture is not None and len(self.capture) < self.capture_size:
                    self.capture += view[i : i + min(k, self.capture_size - len(self.capture))]
                self.skip -= k
                i += k
                self.offset += k
                if self.skip == 0 and self.capture is not None:
                    self._captured()
                continue
            if not self.header and n - i >= 512:
                block = bytes(view[i : i + 512])
                i += 512
            else:
                k = min(512 - len(self.header), n - i)
                self.header += view[i : i + k]
                i += k
                if len(self.header) < 512:
                    continue
                block = bytes(self.header)
                self.header.clear()
            self.offset += 512
            self._block(block, self.offset - 512)

    def _after(self) -> str:
        return f"after member {self.member!r}" if self.members else "at its start"

    def inside(self) -> str:
        if self.ended or not self.members:
            return ""
        return f"; {'inside' if self.skip else 'after'} tar member {self.member!r}"

    def _block(self, block: bytes, at: int) -> None:
        if not any(block):
            self.zero_blocks += 1
            if self.zero_blocks == 2:
                self.ended = True
            return
        if self.zero_blocks:
            raise _Fail(
                "corrupt",
                f"tar archive {self.where} has an empty block at byte {grouped(at - 512)} "
                f"{self._after()}, then more members: tar stops reading at that block",
            )
        if not _tar_checksum_ok(block):
            raise _Fail(
                "corrupt",
                f"tar archive {self.where} has a damaged header at byte {grouped(at)} "
                f"{self._after()} (its checksum is wrong): members from there on are lost",
            )
        kind = block[156]
        try:
            size = _number(block[124:136])
        except ValueError:
            raise _Fail(
                "corrupt",
                f"tar header at byte {grouped(at)} of {self.where} has no readable size",
            ) from None
        if kind in b"xgLK":
            if size > _MAX_TAR_META or size < 0:
                raise _Fail(
                    "corrupt",
                    f"tar header at byte {grouped(at)} of {self.where} is an extended header of "
                    f"{grouped(size)} bytes: not believable",
                )
            self.capture = bytearray()
            self.capture_size = size
            self.capture_kind = kind
            self.skip = -(-size // 512) * 512
            if self.skip == 0:
                self._captured()
            return
        name = self.pax.pop("path", None) or self.long_name or self._ustar_name(block)
        if "size" in self.pax:
            try:
                size = int(self.pax["size"])
            except ValueError:
                raise _Fail(
                    "corrupt",
                    f"tar member {name!r} of {self.where} has a pax size that is no number",
                ) from None
        self.pax.clear()
        self.long_name = None
        if size < 0:
            raise _Fail("corrupt", f"tar member {name!r} of {self.where} has a negative size")
        self.member = name
        self.member_at = at
        self.members += 1
        self.body_size = 0 if kind in _BODYLESS else size
        self.skip = -(-self.body_size // 512) * 512

    @staticmethod
    def _ustar_name(block: bytes) -> str:
        name = block[:100].split(b"\0", 1)[0]
        if block[257:262] == b"ustar" and block[345] and block[257:263] == b"ustar\0":
            name = block[345:500].split(b"\0", 1)[0] + b"/" + name
        return name.decode("utf-8", "replace")

    def _captured(self) -> None:
        assert self.capture is not None
        body = bytes(self.capture)
        self.capture = None
        if self.capture_kind in b"LK":
            if self.capture_kind == ord("L"):
                self.long_name = body.split(b"\0", 1)[0].decode("utf-8", "replace")
            return
        if self.capture_kind == ord("g"):
            return  # global pax records: nothing a reader needs to find the next header
        # "%d %s=%s\n" records
        pos = 0
        while pos < len(body) and body[pos] != 0:
            space = body.find(b" ", pos)
            length = int(body[pos:space]) if body[pos:space].isdigit() else 0
            if space < 0 or length <= space - pos or pos + length > len(body):
                raise _Fail(
                    "corrupt",
                    f"a pax header of {self.where} {self._after()} is damaged (byte "
                    f"{grouped(self.offset)}): the next member's name and size are unknown",
                )
            record = body[space + 1 : pos + length - 1]
            key, _, value = record.partition(b"=")
            self.pax[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
            pos += length

    def finish(self) -> None:
        if self.skip or self.capture is not None:
            got = self.body_size - self.skip + (-self.body_size % 512)
            raise _Fail(
                "corrupt",
                f"tar member {self.member!r} of {self.where} is truncated: the archive ends "
                f"{grouped(max(got, 0))} bytes into its {grouped(self.body_size)}-byte body "
                f"(byte {grouped(self.offset)})",
            )
        if self.header:
            raise _Fail(
                "corrupt",
                f"tar archive {self.where} ends inside a header at byte "
                f"{grouped(self.offset + len(self.header))} "
                f"{self._after()}: it was cut short",
            )
        if not self.ended and not self.zero_blocks:
            raise _Fail(
                "corrupt",
                f"tar archive {self.where} has no end marker: it stops {self._after()} "
                f"(byte {grouped(self.offset)}); it was cut short",
            )
        self.run.counts["tar"] = f"{self.members} member{'s' if self.members != 1 else ''}"


# zip (seekable files) -----------------------------------------------------------------------------


class _Counted:
    """A seekable file read under the budget, counted, stoppable (for zipfile)."""

    def __init__(self, raw: BinaryIO, run: _Run, take: Callable[[int], None]) -> None:
        self.raw = raw
        self.run = run
        self.take = take

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.take(len(data))
        self.run.read += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def seekable(self) -> bool:
        return True


def _check_zip(raw: _Counted, run: _Run) -> None:
    """Every entry of a zip read to its end (zipfile checks its CRC-32 there)."""
    try:
        archive = zipfile.ZipFile(raw)  # read, seek and tell are enough
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise _Fail(
            "corrupt",
            f"zip archive {run.name} has no readable central directory ({exc}): it is truncated "
            "or damaged at its end",
        ) from None
    skipped = []
    member = ""
    with archive:
        try:
            for info in archive.infolist():
                member = info.filename
                if info.flag_bits & 0x1:
                    skipped.append(f"{member!r} (encrypted)")
                    continue
                try:
                    with archive.open(info) as entry:
                        while out := entry.read(OUTPUT):
                            run.grew(len(out))
                except NotImplementedError as exc:
                    skipped.append(f"{member!r} ({exc})")
        except (zipfile.BadZipFile, EOFError, zlib.error, OSError, lzma.LZMAError) as exc:
            if (
                isinstance(exc, OSError)
                and not isinstance(exc, zipfile.BadZipFile)
                and (exc.errno is not None)
            ):
                raise
            raise _Fail(
                "corrupt", f"zip archive {run.name} is damaged in entry {member!r}: {exc}"
            ) from None
        count = len(archive.infolist())
    run.counts["zip"] = f"{count} entr{'ies' if count != 1 else 'y'}"
    if skipped:
        run.notes.append(
            f"not checked: {', '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''}"
        )
        if len(skipped) == count:
            return
    run.checked.append("zip")


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
        self.run = _Run(name, limits)
        self.hasher = hashlib.new(expected.algorithm, usedforsecurity=False) if expected else None
        hint, tar_hint = hinted(name)
        self.sniff = _Sniff(self.run, outer=True, hint=hint, tar_hint=tar_hint) if archive else None
        self.stage: _Stage | None = self.sniff
        self.failure: _Fail | None = None

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
            except _Fail as fail:
                self.failure = fail
                self.stage = None  # the digest still tells whether it was written damaged

    def outcome(self) -> Outcome:
        """The verdict, once every byte was fed."""
        if self.stage is not None:
            stage, self.stage = self.stage, None
            try:
                stage.finish()
            except _Fail as fail:
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
    budget: Budget,
    stop: threading.Event | None = None,
) -> Outcome:
    """Read `read` to its end once: its digest (when `expected` is given: compared with it) and,
    with `archive`, its format read through. `name` is the artifact's name (a format hint and
    what messages call it). Never raises for bad data or an OS error: it is in the Outcome.
    A zip is checked when `read` is seekable (then read twice when a digest is computed)."""
    verifier = Verifier(name, archive=archive, expected=expected, limits=limits)

    def take(n: int) -> None:
        if not budget.take(n, stop):
            raise _Stopped

    try:
        if archive and _seekable(read) and _magic(_peek(read, 4)) == "zip":
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
    except _Stopped:
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
        _check_zip(_Counted(read, run, take), run)
    except _Fail as fail:
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


def _find_sidecar(path: Path) -> tuple[Expected | None, str]:
    """The first sidecar next to `path` that gives its digest, and a note on what was found
    (SidecarError: one that cannot be read as a checksum file)."""
    not_listed = []
    for sidecar in sidecar_names(path.name):
        candidate = path.parent / sidecar
        try:
            with open(candidate, "rb") as file:
                content = file.read(MAX_SIDECAR_BYTES + 1)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise SidecarError(f"sidecar {sidecar} cannot be read: {exc.strerror}") from None
        try:
            return parse_sidecar(sidecar, content, path.name), ""
        except NoSidecarEntry as exc:
            not_listed.append(str(exc))
    looked = ", ".join(sidecar_names(path.name))
    return None, "; ".join(not_listed) or f"no checksum sidecar (looked for {looked})"


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
                expected, note = _find_sidecar(path)
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
