"""zip, from a seekable file (internal to service.verify): every entry read to its end, where
zipfile checks its CRC-32."""

from __future__ import annotations

import lzma
import zipfile
import zlib
from collections.abc import Callable
from typing import BinaryIO

from service.verify._pipeline import OUTPUT, Fail, Run


class Counted:
    """A seekable file read under the budget, counted, stoppable (for zipfile)."""

    def __init__(self, raw: BinaryIO, run: Run, take: Callable[[int], None]) -> None:
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


def check_zip(raw: Counted, run: Run) -> None:
    """Every entry of a zip read to its end (zipfile checks its CRC-32 there)."""
    try:
        archive = zipfile.ZipFile(raw)  # read, seek and tell are enough
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise Fail(
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
            raise Fail(
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
