"""Reading a file a setting names (JOBS_FILE, CHANNELS_FILE, a channel's `ca_file`): the one
guarded reader for all of them.

Opening a FIFO waits for a writer, for ever (`serve` hung at start); `/dev/zero` or a huge file
is read until memory runs out. So the file is opened without waiting, must be a regular file,
and is read only up to a size cap; anything else is refused with one line saying why.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_BYTES = 1024 * 1024


class UnreadableFile(OSError):
    """The file a setting names cannot be used; the message says why, on one line. An OSError,
    so callers that report a missing or unreadable file report this the same way."""


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MiB" if limit % (1024 * 1024) == 0 else f"{limit} bytes"


def read_setting_file(path: str | Path, limit: int = MAX_BYTES) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them; raises UnreadableFile for
    a directory, FIFO, device or socket, or a larger file, and OSError when it cannot be read."""
    # O_NONBLOCK: opening a FIFO would otherwise wait for a writer, for ever.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    too_big = UnreadableFile(f"the file is larger than {_size(limit)} ({limit} bytes): refused")
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(
                "not a regular file (a directory, a FIFO or a device): give the path of a file"
            )
        if info.st_size > limit:
            raise too_big
    except BaseException:
        os.close(descriptor)
        raise
    with open(descriptor, "rb") as handle:
        data = handle.read(limit + 1)  # a file may grow after the fstat
    if len(data) > limit:
        raise too_big
    return data
