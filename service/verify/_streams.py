"""The stream formats (internal to service.verify): the sniffing of magic bytes, gzip, bzip2 and
xz (every member or stream), zstd (walked frame by frame, block by block); each a push-based
stage that feeds what it expands to the next (a tar, or nothing)."""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Iterator
from typing import Protocol

import zstandard

from service.verify._pipeline import MAX_WINDOW, OUTPUT, Fail, Null, Run, Stage, grouped
from service.verify._tar import Tar, is_tar

_ZSTD_BLOCKS = 32  # zstd blocks fed at a time: at most 32 x 128 KiB expanded


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


def magic(head: bytes) -> str | None:
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    return None


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data[:8]) or "nothing"


class Sniff:
    """Buffers the first bytes of a stream, then hands it to the stage its magic calls for.

    Outermost (`outer`): any format; inside a decompressor: a tar, or nothing. `hint` is the
    format the name suggests (a mismatch is corrupt), `tar_hint` whether a tar is expected.
    """

    def __init__(
        self, run: Run, *, outer: bool, hint: str | None, tar_hint: bool, layer: str = ""
    ) -> None:
        self.run = run
        self.outer = outer
        self.hint = hint
        self.tar_hint = tar_hint
        self.layer = layer  # "gzip": what the bytes come out of (for messages)
        self.head = bytearray()
        self.next: Stage | None = None
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
        fmt = magic(head) if self.outer else None
        expects_tar = self.hint == "tar" if self.outer else self.tar_hint
        if fmt is None and (is_tar(head) or (expects_tar and len(head) == 512 and not any(head))):
            fmt = "tar"  # (an empty tar is its end marker only)
        where = f"the {self.layer} data of {run.name}" if self.layer else run.name
        if fmt is None:
            expected = self.hint if self.outer else ("tar" if self.tar_hint else None)
            if expected is not None:
                if expected == "tar":
                    what = "it is too short" if len(head) < 512 else "its first header is wrong"
                    raise Fail("corrupt", f"{where} is not a tar archive ({what})")
                raise Fail(
                    "corrupt",
                    f"{run.name} does not start like a {expected} file ({_MAGIC_OF[expected]}): "
                    f"it starts with {_hex(head)}; it is not {expected}, or its start is damaged",
                )
            self.next = Null()
            return
        if fmt == "zip":
            self.zip = True
            self.next = Null()
            return
        if fmt == "tar":
            run.checked.append("tar")
            self.next = Tar(run, self.layer)
            return
        inner = Sniff(run, outer=False, hint=None, tar_hint=self.tar_hint, layer=fmt)
        run.checked.append(fmt)
        self.next = _ZSTD(run, inner) if fmt == "zstd" else _Codec(run, fmt, inner)


# Stream formats -----------------------------------------------------------------------------------


class _Codec:
    """gzip (zlib), bzip2, xz: every member or stream in turn, each checked to its end."""

    def __init__(self, run: Run, fmt: str, sink: Stage) -> None:
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

    def _damaged(self, exc: Exception, start: int) -> Fail:
        said = str(exc).removeprefix("Error -3 while decompressing data: ")
        if isinstance(exc, lzma.LZMAError) and "memory usage limit" in said.lower():
            return Fail(
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
        return Fail(
            "corrupt", f"{self.fmt} data of {self.run.name} is damaged: {where}{self.inside()}"
        )

    def inside(self) -> str:
        return self.sink.inside()

    def _trailing(self, at: int) -> None:
        raise Fail(
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
            raise Fail(
                "corrupt",
                f"{self.fmt} stream of {self.run.name} is truncated at byte {grouped(self.fed)} "
                f"(the end of the file, inside member {self.members}): it was cut short"
                + self.inside(),
            )
        if self.fed == 0:
            raise Fail("corrupt", f"{self.run.name} is empty: no {self.fmt} data")
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

    def __init__(self, run: Run, sink: Stage) -> None:
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
                raise Fail(
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
                raise Fail(
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

    def _damaged(self, what: str) -> Fail:
        return Fail("corrupt", f"zstd data of {self.run.name} is damaged: {what}{self.inside()}")

    def inside(self) -> str:
        return self.sink.inside()

    def finish(self) -> None:
        if self.state != "magic" or self.gathered or self.skip:
            raise Fail(
                "corrupt",
                f"zstd stream of {self.run.name} is truncated at byte {grouped(self.offset)} "
                f"(the end of the file, inside the frame at byte {grouped(self.frame_start)}): "
                "it was cut short" + self.inside(),
            )
        if not self.frames:
            raise Fail("corrupt", f"{self.run.name} holds no zstd frame")
        if self.unchecked:
            self.run.notes.append(
                f"{self.unchecked} of its {self.frames} zstd frame{'s' if self.frames > 1 else ''} "
                "carry no checksum (written without one): a changed byte in them may go unseen"
            )
        self.sink.finish()
