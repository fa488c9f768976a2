"""The sftp adapter's pure pieces: names shown and matched as local sources show and match
them, SFTP attributes to (type, mtime), and the module loaded only when a job uses it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import asyncssh
import pytest

from service.scanner.sources.local import display_path
from service.scanner.sources.sftp import file_type, mtime_us, name_of, shown


@pytest.mark.parametrize(
    "raw", [b"db.tar", "café/ünï.tar".encode(), b"caf\xe9.tar", b"a\\xe9.tar", b"\xff\xfe", b"x\ny"]
)
def test_names_are_shown_and_matched_like_local_ones(raw: bytes) -> None:
    assert shown(raw) == display_path(os.fsdecode(raw))
    assert name_of(raw) == os.fsdecode(raw)  # what local's matcher sees (scandir's names)


def test_mtime_in_microseconds() -> None:
    assert mtime_us(asyncssh.SFTPAttrs(mtime=1_700_000_000)) == 1_700_000_000_000_000
    attrs = asyncssh.SFTPAttrs(mtime=1_700_000_000, mtime_ns=123_456_789)  # SFTP v4+
    assert mtime_us(attrs) == 1_700_000_000_123_456
    assert mtime_us(asyncssh.SFTPAttrs(mtime=0)) == 0


@pytest.mark.parametrize(
    ("attrs", "kind"),
    [
        (asyncssh.SFTPAttrs(permissions=stat.S_IFREG | 0o644), stat.S_IFREG),
        (asyncssh.SFTPAttrs(permissions=stat.S_IFDIR | 0o755), stat.S_IFDIR),
        (asyncssh.SFTPAttrs(permissions=stat.S_IFLNK | 0o777), stat.S_IFLNK),
        (asyncssh.SFTPAttrs(permissions=stat.S_IFIFO | 0o644), stat.S_IFIFO),
        (asyncssh.SFTPAttrs(type=asyncssh.FILEXFER_TYPE_DIRECTORY), stat.S_IFDIR),
        (asyncssh.SFTPAttrs(), 0),
    ],
)
def test_file_type_from_the_listing_attributes(attrs: asyncssh.SFTPAttrs, kind: int) -> None:
    assert file_type(attrs) == kind


def test_asyncssh_loads_only_for_an_sftp_source(tmp_path) -> None:
    probe = (
        "import sys\n"
        "from service.core.jobspec import LocalSource\n"
        "from service.scanner.sources import open_source\n"
        f"open_source(LocalSource(path={str(tmp_path)!r}))\n"
        "print('asyncssh' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
