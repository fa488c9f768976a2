"""tar read as a stream of 512-byte blocks (internal to service.verify): every header's checksum,
every member's body present, the end-of-archive marker; ustar, GNU (long names, base-256 sizes)
and pax (path, size) headers."""

from __future__ import annotations

from service.verify._pipeline import Fail, Run, grouped

MAX_TAR_META = 1024 * 1024  # a pax or GNU long-name header larger than this is not believable


def tar_checksum_ok(block: bytes) -> bool:
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


def is_tar(head: bytes) -> bool:
    return len(head) >= 512 and tar_checksum_ok(head[:512]) and any(head[:512])


_BODYLESS = frozenset(b"123456")  # links, devices, directories, fifos: no data follows


def _number(field: bytes) -> int:
    """A tar numeric field: octal text, or base-256 (GNU: first byte 0x80 or 0xff)."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[0] == 0xFF else value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


class Tar:
    """A tar stream: every header (its checksum), every member's body present, the end marker.

    Bodies are skipped, not looked at: a tar has no checksum of its contents (a damaged body is
    found by the compression around it, or by a sidecar's digest).
    """

    def __init__(self, run: Run, layer: str) -> None:
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
            raise Fail(
                "corrupt",
                f"tar archive {self.where} has an empty block at byte {grouped(at - 512)} "
                f"{self._after()}, then more members: tar stops reading at that block",
            )
        if not tar_checksum_ok(block):
            raise Fail(
                "corrupt",
                f"tar archive {self.where} has a damaged header at byte {grouped(at)} "
                f"{self._after()} (its checksum is wrong): members from there on are lost",
            )
        kind = block[156]
        try:
            size = _number(block[124:136])
        except ValueError:
            raise Fail(
                "corrupt",
                f"tar header at byte {grouped(at)} of {self.where} has no readable size",
            ) from None
        if kind in b"xgLK":
            if size > MAX_TAR_META or size < 0:
                raise Fail(
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
                raise Fail(
                    "corrupt",
                    f"tar member {name!r} of {self.where} has a pax size that is no number",
                ) from None
        self.pax.clear()
        self.long_name = None
        if size < 0:
            raise Fail("corrupt", f"tar member {name!r} of {self.where} has a negative size")
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
                raise Fail(
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
            raise Fail(
                "corrupt",
                f"tar member {self.member!r} of {self.where} is truncated: the archive ends "
                f"{grouped(max(got, 0))} bytes into its {grouped(self.body_size)}-byte body "
                f"(byte {grouped(self.offset)})",
            )
        if self.header:
            raise Fail(
                "corrupt",
                f"tar archive {self.where} ends inside a header at byte "
                f"{grouped(self.offset + len(self.header))} "
                f"{self._after()}: it was cut short",
            )
        if not self.ended and not self.zero_blocks:
            raise Fail(
                "corrupt",
                f"tar archive {self.where} has no end marker: it stops {self._after()} "
                f"(byte {grouped(self.offset)}); it was cut short",
            )
        self.run.counts["tar"] = f"{self.members} member{'s' if self.members != 1 else ''}"
