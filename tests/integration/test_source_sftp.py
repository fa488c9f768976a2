"""The sftp source against a real OpenSSH sshd (tests/peers.py): the adapter alone (listing,
recursion, symlinks, host keys, credentials, every error a person must act on, connections
closed), then end to end through the real scanner on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from service.core.jobspec import SftpSource
from service.db.models import Artifact
from service.runtime.app import create_app
from service.scanner.scanner import BackupScanner
from service.scanner.sources import LocalSource, SourceError, open_source
from service.scanner.sources.lister import list_remote
from service.scanner.sources.sftp import SftpListing
from service.settings import load_settings

from peers import SSHD, SshServer, keygen, stop, tool
from support import add_job, free_port, get_job, make_file

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
PASSWORD = "s3cret-Hunter2-never-shown"


def declared(server: SshServer, **extra: Any) -> dict[str, Any]:
    return {
        "type": "sftp", "host": server.host, "port": server.port,
        "username": server.username, "key_file": str(server.client_key),
        "known_hosts": str(server.known_hosts), "path": str(server.remote_dir), **extra,
    }  # fmt: skip


def source(server: SshServer, **extra: Any) -> SftpListing:
    listing = open_source(SftpSource.model_validate(declared(server, **extra)))
    assert isinstance(listing, SftpListing)
    return listing


async def refused(server: SshServer, **extra: Any) -> str:
    with pytest.raises(SourceError) as caught:
        await source(server, **extra).list()
    return str(caught.value)


def local_walk(path: Path, **options: Any) -> list[tuple[str, int, int]]:
    listing = LocalSource(str(path), **options).walk(threading.Event())
    # SFTP (version 3) gives whole seconds.
    return sorted((p, size, mtime // 1_000_000 * 1_000_000) for p, size, mtime in listing.entries)


def open_connections(port: int) -> int:
    """This machine's established TCP connections to `port` (the client ends, to sshd)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


async def no_connection_left(port: int) -> None:
    deadline = time.monotonic() + 5
    while open_connections(port) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert open_connections(port) == 0


# The adapter alone ----------------------------------------------------------------------------


async def test_lists_regular_files_like_a_local_source(sshd_server: SshServer) -> None:
    root = sshd_server.remote_dir
    when = datetime(2026, 3, 1, 2, 30, 15, 750000).astimezone()
    for name, size in [("db-1.tar", 1234), ("db-2.tar", 0), ("notes.txt", 7), (".hidden.tar", 1),
                       ("db-3.tar.part", 5), ("sp ace\nnew.tar", 3)]:  # fmt: skip
        make_file(root / name, size, when)
    (root / os.fsdecode(b"caf\xe9.tar")).write_bytes(b"xy")  # not UTF-8
    make_file(root / "sub" / "deep.tar", 10, when)

    listing = await source(sshd_server, pattern="*.tar").list()

    entries = sorted(listing.entries)
    assert entries == local_walk(root, pattern="*.tar", exclude=(".*", "*.part"))
    assert [path for path, _, _ in entries] == [
        "caf\\xe9.tar", "db-1.tar", "db-2.tar", "sp ace\nnew.tar",
    ]  # fmt: skip
    assert ("db-1.tar", 1234, int(when.timestamp()) * 1_000_000) in entries
    assert listing.warnings == [] and listing.skipped == [] and listing.details == {}
    await no_connection_left(sshd_server.port)


async def test_recursive_listing_paths_below_the_root(sshd_server: SshServer) -> None:
    root = sshd_server.remote_dir
    when = datetime(2026, 3, 1).astimezone()
    for name in ("top.tar", "a/one.tar", "a/b/two.tar", "a/b/c/three.tar", "z/.skip.tar"):
        make_file(root / name, len(name), when)
    (root / "empty").mkdir()

    flat = await source(sshd_server).list()
    deep = await source(sshd_server, recursive=True).list()

    assert [entry[0] for entry in flat.entries] == ["top.tar"]
    assert sorted(entry[0] for entry in deep.entries) == [
        "a/b/c/three.tar", "a/b/two.tar", "a/one.tar", "top.tar",
    ]  # fmt: skip
    assert sorted(deep.entries) == local_walk(root, recursive=True, exclude=(".*",))
    assert deep.warnings == []


async def test_symlinks_are_skipped_never_followed(sshd_server: SshServer, tmp_path: Path) -> None:
    root = sshd_server.remote_dir
    when = datetime(2026, 3, 1).astimezone()
    make_file(root / "real.tar", 10, when)
    outside = make_file(tmp_path / "outside" / "secret.tar", 99, when)
    (root / "link.tar").symlink_to(root / "real.tar")
    (root / "out.tar").symlink_to(outside)
    (root / "dirlink").symlink_to(outside.parent, target_is_directory=True)
    (root / "dangling.tar").symlink_to(root / "nowhere")

    listing = await source(sshd_server, recursive=True).list()

    assert [entry[0] for entry in listing.entries] == ["real.tar"]
    assert sorted(listing.skipped) == [
        "dangling.tar: symlink, not followed", "dirlink: symlink, not followed",
        "link.tar: symlink, not followed", "out.tar: symlink, not followed",
    ]  # fmt: skip
    assert listing.warnings == []


async def test_the_root_may_be_a_symlink_to_a_directory(sshd_server: SshServer) -> None:
    make_file(sshd_server.remote_dir / "real" / "a.tar", 3, datetime(2026, 3, 1).astimezone())
    (sshd_server.remote_dir / "current").symlink_to(sshd_server.remote_dir / "real")
    listing = await source(sshd_server, path=str(sshd_server.remote_dir / "current")).list()
    assert [entry[0] for entry in listing.entries] == ["a.tar"]


async def test_an_unknown_host_key_is_refused(sshd_server: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("[127.0.0.1]:1 " + sshd_server.host_public_key + "\n")  # another port
    message = await refused(sshd_server, known_hosts=str(empty))
    assert f"host key of 127.0.0.1:{sshd_server.port} is unknown" in message
    assert str(empty) in message and "ssh-keyscan" in message
    await no_connection_left(sshd_server.port)


async def test_a_changed_host_key_is_refused(sshd_server: SshServer) -> None:
    message = await refused(sshd_server, known_hosts=str(sshd_server.wrong_known_hosts))
    assert f"host key of 127.0.0.1:{sshd_server.port} does not match" in message
    assert str(sshd_server.wrong_known_hosts) in message and "changed" in message


async def test_the_users_own_ssh_files_are_never_used(
    sshd_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A home whose known_hosts trusts the server, whose config and default key would log in:
    none of them is read; the declared (empty) known_hosts alone decides."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(sshd_server.known_hosts, home / ".ssh" / "known_hosts")
    shutil.copy(sshd_server.client_key, home / ".ssh" / "id_ed25519")
    (home / ".ssh" / "config").write_text("Host *\n  StrictHostKeyChecking no\n")
    monkeypatch.setenv("HOME", str(home))
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    assert "is unknown" in await refused(sshd_server, known_hosts=str(empty))
    # And without a key_file, the default key in ~/.ssh is not offered.
    monkeypatch.setenv("SFTP_PASSWORD", PASSWORD)
    message = await refused(sshd_server, key_file=None, password="${SFTP_PASSWORD}")
    assert "authentication refused" in message


async def test_a_key_the_server_does_not_accept(sshd_server: SshServer, tmp_path: Path) -> None:
    keygen(tmp_path / "other_key")
    message = await refused(sshd_server, key_file=str(tmp_path / "other_key"))
    assert message == (
        f"authentication refused by {sshd_server.username}@127.0.0.1:{sshd_server.port}: check "
        f"the username and that the server accepts key_file {tmp_path / 'other_key'}"
    )
    await no_connection_left(sshd_server.port)


async def test_a_wrong_password_is_refused_and_never_shown(
    sshd_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SFTP_PASSWORD", PASSWORD)
    by_variable = await refused(sshd_server, key_file=None, password="${SFTP_PASSWORD}")
    secret_file = tmp_path / "password"
    secret_file.write_text(PASSWORD + "\n")
    by_file = await refused(sshd_server, key_file=None, password_file=str(secret_file))
    for message in (by_variable, by_file):
        assert message.startswith(f"authentication refused by {sshd_server.username}@127.0.0.1")
        assert "the password" in message and PASSWORD not in message
    assert PASSWORD not in caplog.text


async def test_unreadable_key_and_known_hosts_files(sshd_server: SshServer, tmp_path: Path) -> None:
    assert str(tmp_path / "nokey") in await refused(sshd_server, key_file=str(tmp_path / "nokey"))
    (tmp_path / "notakey").write_text("hello\n")
    message = await refused(sshd_server, key_file=str(tmp_path / "notakey"))
    assert f"key_file {tmp_path / 'notakey'} is not a private key" in message
    missing = tmp_path / "no_known_hosts"
    message = await refused(sshd_server, known_hosts=str(missing))
    assert "known_hosts" in message and str(missing) in message
    assert "No such file" in message


async def test_a_missing_directory_or_a_file(sshd_server: SshServer) -> None:
    gone = sshd_server.remote_dir / "nope"
    message = await refused(sshd_server, path=str(gone))
    assert message == (
        f"no directory {gone} on {sshd_server.username}@127.0.0.1:{sshd_server.port}: "
        "check the path"
    )
    make_file(sshd_server.remote_dir / "file.tar", 1, datetime(2026, 3, 1).astimezone())
    message = await refused(sshd_server, path=str(sshd_server.remote_dir / "file.tar"))
    assert message.endswith("file.tar on " f"{sshd_server.username}@127.0.0.1:{sshd_server.port}: not a directory")
    await no_connection_left(sshd_server.port)


async def test_dns_failure_and_connection_refused(sshd_server: SshServer) -> None:
    message = await refused(sshd_server, host="no-such-host.invalid")
    assert message.startswith("cannot resolve the host name no-such-host.invalid")
    assert "DNS" in message
    port = free_port()
    message = await refused(sshd_server, port=port)
    assert message == (
        f"connection refused by 127.0.0.1:{port}: is an SSH server listening on that port "
        "(and a firewall letting the monitor in)?"
    )


async def test_a_silent_server_times_out_and_the_connection_is_closed(
    sshd_server: SshServer,
) -> None:
    """A server that accepts and never speaks: the lister's time limit ends the listing, the
    adapter's connection is closed (the server reads end of file)."""
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client closes its end
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        listing = source(sshd_server, port=port, timeout=1)
        result = await list_remote(listing, asyncio.Semaphore(1), 60)
        assert isinstance(result, SourceError)
        assert str(result) == (
            f"listing {listing.label} took longer than 1 s (its timeout); is it reachable, or "
            "does it need a longer timeout?"
        )
        await asyncio.wait_for(closed.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()


async def test_cancelled_while_listing_leaves_no_connection(sshd_server: SshServer) -> None:
    for index in range(2000):
        (sshd_server.remote_dir / f"f{index}.tar").write_bytes(b"")
    for delay in (0.0, 0.05, 0.15, 0.3):
        task = asyncio.create_task(source(sshd_server).list())
        await asyncio.sleep(delay)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await no_connection_left(sshd_server.port)
    # And the listing itself, whole.
    assert len((await source(sshd_server).list()).entries) == 2000


# An unreadable directory. Root reads everything, so as root the listing goes through a second
# sshd whose sftp-server runs without the capabilities that bypass file permissions.


@pytest.fixture
def unprivileged_sftp(sshd_server: SshServer, tmp_path: Path) -> Iterator[SshServer]:
    if os.geteuid() != 0:
        yield sshd_server
        return
    setpriv = tool("setpriv")
    sftp_server = Path("/usr/lib/openssh/sftp-server")
    if not sftp_server.exists():
        pytest.skip("needs OpenSSH's sftp-server (openssh-server)")
    base = sshd_server.client_key.parent  # the session's sshd: its host key, authorized keys
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"ListenAddress 127.0.0.1:{port}",
                f"HostKey {base / 'host_key'}",
                f"PidFile {tmp_path / 'sshd.pid'}",
                f"AuthorizedKeysFile {base / 'authorized_keys'}",
                "AuthenticationMethods publickey",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "UsePAM yes",
                f"Subsystem sftp {setpriv} --bounding-set=-dac_override,-dac_read_search "
                f"{sftp_server}",
                "",
            ]
        )
    )
    log = tmp_path / "sshd.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [tool("sshd", SSHD), "-D", "-e", "-f", str(config)],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while "Server listening" not in log.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        known_hosts = tmp_path / "known_hosts_unprivileged"
        known_hosts.write_text(f"[127.0.0.1]:{port} {sshd_server.host_public_key}\n")
        yield replace(sshd_server, port=port, known_hosts=known_hosts)
    finally:
        stop(process)


async def test_an_unreadable_subdirectory_is_a_warning(unprivileged_sftp: SshServer) -> None:
    root = unprivileged_sftp.remote_dir
    when = datetime(2026, 3, 1).astimezone()
    for name in ("a.tar", "open/b.tar", "locked/c.tar"):
        make_file(root / name, 1, when)
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(root / "locked", nobody, -1)
    (root / "locked").chmod(0o000)
    try:
        listing = await source(unprivileged_sftp, recursive=True).list()
        assert sorted(entry[0] for entry in listing.entries) == ["a.tar", "open/b.tar"]
        assert listing.warnings == [
            f"cannot read {root / 'locked'} on {unprivileged_sftp.username}@127.0.0.1:"
            f"{unprivileged_sftp.port}: Permission denied"
        ]
        # The root itself unreadable: nothing can be listed.
        message = await refused(unprivileged_sftp, path=str(root / "locked"))
        assert message == (
            f"permission denied reading {root / 'locked'} on {unprivileged_sftp.username}"
            f"@127.0.0.1:{unprivileged_sftp.port}: check that {unprivileged_sftp.username} may "
            "read and enter it"
        )
    finally:
        (root / "locked").chmod(0o755)
