"""What the stages of one verification share (internal to service.verify): the limits, the
shared run state and expansion guard, the failure a stage raises, the stage protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Result = Literal[
    "ok", "corrupt", "checksum_mismatch", "sidecar_error", "too_large", "unreadable", "changed",
    "stopped",
]  # fmt: skip
OUTPUT = 4 * 1024 * 1024  # the most a decompressor is asked to expand at a time
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


def grouped(n: int) -> str:
    """A byte count as people read it in a message: 1 048 576."""
    return f"{n:,}".replace(",", " ")


class Fail(Exception):
    """A stage found the archive bad (corrupt) or too large: the rest is not read through."""

    def __init__(self, result: Result, detail: str) -> None:
        super().__init__(detail)
        self.result: Result = result
        self.detail = detail


class Stopped(Exception):
    pass


class Stage(Protocol):
    def feed(self, data: bytes | memoryview) -> None: ...
    def finish(self) -> None: ...
    def inside(self) -> str: ...  # what was being read when an outer layer failed


@dataclass
class Run:
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
            raise Fail(
                "too_large",
                f"{self.name} expands to more than {grouped(limits.max_expanded_bytes)} bytes "
                f"(the limit) after {grouped(self.read)} bytes read: not read further",
            )
        if self.expanded > limits.ratio_after and self.expanded > limits.max_ratio * max(
            self.read, 1
        ):
            raise Fail(
                "too_large",
                f"{self.name} expands more than {limits.max_ratio:g} times "
                f"({grouped(self.read)} bytes read gave {grouped(self.expanded)}): a "
                "decompression bomb? not read further",
            )


class Null:
    """The end of a pipeline: bytes that are no format of their own."""

    def feed(self, data: bytes | memoryview) -> None:
        pass

    def finish(self) -> None:
        pass

    def inside(self) -> str:
        return ""
