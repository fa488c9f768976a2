"""The tab's icon: one small SVG per status, and a /favicon.ico for clients that ask for one.

Pure functions from a status to bytes. Each status has its own shape as well as its own colour
(a tick, a cross, a triangle's bar, ...): a tab is never told apart by colour alone.
"""

from __future__ import annotations

import struct
import zlib
from typing import Literal

IconStatus = Literal["ok", "warning", "critical", "unknown", "pending", "paused", "none"]

COLOURS = {
    "ok": "#1a7f37",
    "warning": "#9a6700",
    "critical": "#cf222e",
    "unknown": "#6e40c9",
    "pending": "#57606a",
    "paused": "#57606a",
    "none": "#24292f",
}
_SHAPES = {
    "ok": '<path d="M9 17l5 5 9-11" fill="none" stroke="#fff" stroke-width="4"/>',
    "critical": '<path d="M10 10l12 12M22 10L10 22" stroke="#fff" stroke-width="4"/>',
    "warning": '<path d="M16 7v11" stroke="#fff" stroke-width="4"/><circle cx="16" cy="24" r="2.5"'
    ' fill="#fff"/>',
    "unknown": '<path d="M11.5 12a4.5 4.5 0 1 1 6 4.3c-1 .5-1.5 1.2-1.5 2.7v1" fill="none" '
    'stroke="#fff" stroke-width="3.5"/><circle cx="16" cy="25" r="2.3" fill="#fff"/>',
    "pending": '<g fill="#fff"><circle cx="9" cy="16" r="2.6"/><circle cx="16" cy="16" r="2.6"/>'
    '<circle cx="23" cy="16" r="2.6"/></g>',
    "paused": '<path d="M12.5 9v14M19.5 9v14" stroke="#fff" stroke-width="4"/>',
    # No status (the login page): a disk, the backup.
    "none": '<g fill="none" stroke="#fff" stroke-width="2.5"><ellipse cx="16" cy="10" rx="8" '
    'ry="3"/><path d="M8 10v12c0 1.7 3.6 3 8 3s8-1.3 8-3V10M8 16c0 1.7 3.6 3 8 3s8-1.3 8-3"/></g>',
}


def status_svg(status: IconStatus) -> bytes:
    """A 32×32 SVG: a disc in the status's colour with the status's shape on it."""
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32" width="32" height="32">'
        f'<circle cx="16" cy="16" r="15" fill="{COLOURS[status]}"/>{_SHAPES[status]}</svg>'
    ).encode()


def worst_status(counts: dict[str, int]) -> IconStatus:
    """The status a tab shows for many jobs: the worst one present (paused jobs never count)."""
    worst: tuple[IconStatus, ...] = ("critical", "warning", "unknown", "ok", "pending")
    return next((status for status in worst if counts.get(status)), "none")


def favicon_ico() -> bytes:
    """A 16×16 ICO (one embedded PNG) of the neutral disc, for clients that ask /favicon.ico."""
    size, colour = 16, bytes.fromhex(COLOURS["none"][1:])
    rows = []
    for y in range(size):
        row = bytearray(b"\0")  # PNG filter: none
        for x in range(size):
            inside = (x - 7.5) ** 2 + (y - 7.5) ** 2 <= 7.5**2
            row += colour + (b"\xff" if inside else b"\0")
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", size, size, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png
