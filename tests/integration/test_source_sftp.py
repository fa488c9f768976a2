"""The sftp source against a real OpenSSH sshd (tests/peers.py): the adapter alone (listing,
recursion, symlinks, host keys, credentials, every error a person must act on, connections
closed), then end to end through the real scanner on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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

from tests.peers import SSHD, SshServer, keygen, stop, tool
from tests.support import add_job, free_port, get_job, make_file

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
PASSWORD = "s3cret-Hunter2-never-shown"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


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


async def connections_become(port: int, count: int) -> None:
    """Wait (up to 5 s) until `count` connections to `port` are open; fail otherwise."""
    for _ in range(2500):
        if open_connections(port) == count:
            return
        await asyncio.sleep(0.002)
    assert open_connections(port) == count


async def no_connection_left(port: int) -> None:
    await connections_become(port, 0)


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


async def test_names_that_show_alike_keep_one_artifact(sshd_server: SshServer) -> None:
    """b"caf\\xe9" (not UTF-8) is shown as the text caf\\xe9.tar, which is also a real name."""
    root = sshd_server.remote_dir
    (root / os.fsdecode(b"caf\xe9.tar")).write_bytes(b"a")
    (root / "caf\\xe9.tar").write_bytes(b"bb")
    listing = await source(sshd_server).list()
    assert [entry[0] for entry in listing.entries] == ["caf\\xe9.tar"]
    assert listing.skipped == ["caf\\xe9.tar: two files show as this name; one is ignored"]


async def test_hashed_known_hosts(sshd_server: SshServer, tmp_path: Path) -> None:
    """`ssh-keygen -H` hides the host names; the keys are still found, and a changed one is
    still told from an unknown one."""
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    shutil.copy(sshd_server.known_hosts, right)
    shutil.copy(sshd_server.wrong_known_hosts, wrong)
    for path in (right, wrong):
        hashing = [tool("ssh-keygen"), "-q", "-H", "-f", str(path)]
        await asyncio.to_thread(subprocess.run, hashing, check=True)
        assert "127.0.0.1" not in path.read_text()
    make_file(sshd_server.remote_dir / "a.tar", 1, datetime(2026, 3, 1).astimezone())
    listing = await source(sshd_server, known_hosts=str(right)).list()
    assert [entry[0] for entry in listing.entries] == ["a.tar"]
    assert "does not match" in await refused(sshd_server, known_hosts=str(wrong))


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
    # A wide tree (more directories than are read at once), every file found once.
    for day in range(40):
        for part in range(3):
            make_file(root / f"2026-01-{day:02d}" / f"p{part}" / f"{day}-{part}.tar", part, when)
    wide = await source(sshd_server, recursive=True).list()
    assert len(wide.entries) == 4 + 120
    assert sorted(wide.entries) == local_walk(root, recursive=True, exclude=(".*",))


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
    assert message.endswith(
        f"file.tar on {sshd_server.username}@127.0.0.1:{sshd_server.port}: not a directory"
    )
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


@contextlib.asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[int]:
    """A TCP server on a free loopback port running `handler` for each connection; at the
    end every connection is closed and every handler finished (nothing left for the loop)."""
    writers: list[asyncio.StreamWriter] = []
    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await server.wait_closed()


async def test_a_server_of_an_unusable_ssh_version(sshd_server: SshServer) -> None:
    async def old(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-1.5-OldServer\r\n")
        await reader.read()  # until the client gives up

    async with tcp_server(old) as port:
        message = await refused(sshd_server, port=port)
    assert message.startswith(f"SSH connection to {sshd_server.username}@127.0.0.1:{port} failed")
    assert message.endswith("check that it is an SSH server and that it accepts this client")


async def test_a_silent_server_times_out_and_the_connection_is_closed(
    sshd_server: SshServer,
) -> None:
    """A server that accepts and never speaks: the lister's time limit ends the listing, the
    adapter's connection is closed (the server reads end of file)."""
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client closes its end
        closed.set()

    async with tcp_server(silent) as port:
        listing = source(sshd_server, port=port, timeout=1)
        result = await list_remote(listing, asyncio.Semaphore(1), 60)
        assert isinstance(result, SourceError)
        assert str(result) == (
            f"listing {listing.label} took longer than 1 s (its timeout); is it reachable, or "
            "does it need a longer timeout?"
        )
        await asyncio.wait_for(closed.wait(), 5)


async def test_cancelled_while_listing_leaves_no_connection(sshd_server: SshServer) -> None:
    """Cancelled (the lister's time limit) in the handshake or in the middle of the listing:
    the connection is closed all the same."""
    # 400 directories (a round trip each): the listing lasts longer than the last delay below
    # even on an idle machine, so each cancel lands in it.
    for index in range(2000):
        directory = sshd_server.remote_dir / f"d{index % 400}"
        directory.mkdir(exist_ok=True)
        (directory / f"f{index}.tar").write_bytes(b"")
    for delay in (0.0, 0.02, 0.1, 0.2):
        task = asyncio.create_task(source(sshd_server, recursive=True).list())
        await connections_become(sshd_server.port, 1)
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await no_connection_left(sshd_server.port)
    # And the listing itself, whole.
    assert len((await source(sshd_server, recursive=True).list()).entries) == 2000


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


# End to end: jobs declared with an sftp source, scanned by the real scanner, on PostgreSQL and
# SQLite (the `database_url` fixture runs each test on both). The sshd serves this machine's
# files, so their modification times are set against the test's clock.


async def scan(sessionmaker, clock):
    async with sessionmaker() as session:
        report = await BackupScanner(session, clock=clock, trigger="test").scan_all_jobs()
    return {job.name: job for job in report.jobs}


async def stored(sessionmaker) -> dict[str, Artifact]:
    async with sessionmaker() as session:
        rows = (await session.scalars(select(Artifact).order_by(Artifact.id))).all()
    return {row.path: row for row in rows}


def write_in_place(path: Path, data: bytes, mtime: datetime) -> None:
    with open(path, "ab") as handle:
        handle.write(data)
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))


async def test_a_job_on_sftp_new_gone_late_and_missing(sessionmaker, clock, sshd_server) -> None:
    root = sshd_server.remote_dir
    for day in range(1, 4):
        make_file(root / "nightly" / f"db-{day}.tar.gz", 1000 + day, clock.now - day * DAY)
    make_file(root / "nightly" / "notes.txt", 5, clock.now)
    await add_job(
        sessionmaker, clock.now - 10 * DAY, name="offsite",
        source=declared(sshd_server, path=str(root), pattern="*.tar.gz", recursive=True),
        schedule={"every": "1d"}, grace="1h",
    )  # fmt: skip

    first = (await scan(sessionmaker, clock))["offsite"]
    assert (first.status, first.new, first.artifact_count) == ("ok", 3, 3)
    rows = await stored(sessionmaker)
    assert sorted(rows) == ["nightly/db-1.tar.gz", "nightly/db-2.tar.gz", "nightly/db-3.tar.gz"]
    one = rows["nightly/db-1.tar.gz"]
    assert (one.size, one.mtime, one.details) == (1001, clock.now - DAY, None)
    job = await get_job(sessionmaker, "offsite")
    assert job.latest_artifact["path"] == "nightly/db-1.tar.gz"

    # One deleted on the host: gone; the others untouched.
    (root / "nightly" / "db-3.tar.gz").unlink()
    clock.advance(minutes=10)
    second = (await scan(sessionmaker, clock))["offsite"]
    assert (second.new, second.changed, second.gone) == (0, 0, 1)
    assert (await stored(sessionmaker))["nightly/db-3.tar.gz"].gone_since == clock.now

    # No new backup for two days: late.
    clock.advance(days=1, hours=2)
    late = (await scan(sessionmaker, clock))["offsite"]
    assert late.status == "critical" and [r["code"] for r in late.reasons] == ["late"]

    # Everything deleted: the listing is complete, so they are gone; the job is missing.
    shutil.rmtree(root / "nightly")
    empty = (await scan(sessionmaker, clock))["offsite"]
    assert empty.gone == 2 and empty.artifact_count == 0
    assert empty.status == "critical" and [r["code"] for r in empty.reasons] == ["missing"]


async def test_sftp_settle_and_size_rules(sessionmaker, clock, sshd_server) -> None:
    """A dump being written on the host (modified within `settle`) tells nothing; once it has
    settled, still small, it is too small."""
    root = sshd_server.remote_dir
    for day in range(1, 4):
        make_file(root / f"db-{day}.sql.gz", 100 * 1024, clock.now - day * DAY)
    await add_job(
        sessionmaker, clock.now - 10 * DAY, name="db", source=declared(sshd_server),
        rules={"min_size": "80KiB", "max_size_drop": 40},
    )  # fmt: skip
    assert (await scan(sessionmaker, clock))["db"].status == "ok"

    tonight = root / "db-0.sql.gz"
    write_in_place(tonight, b"x" * 10 * 1024, clock.now - timedelta(seconds=5))
    first = (await scan(sessionmaker, clock))["db"]
    assert (first.status, first.reasons) == ("ok", [])
    job = await get_job(sessionmaker, "db")
    assert job.latest_artifact == {
        "path": "db-0.sql.gz", "size": 10 * 1024,
        "mtime": (clock.now - timedelta(seconds=5)).isoformat(), "being_written": True,
    }  # fmt: skip

    clock.advance(minutes=3)  # settled, and still small
    settled = (await scan(sessionmaker, clock))["db"]
    assert settled.status == "critical"
    assert sorted(r["code"] for r in settled.reasons) == ["size_drop", "too_small"]
    # Finished at last: fine again.
    write_in_place(tonight, b"x" * 90 * 1024, clock.now - timedelta(minutes=1))
    clock.advance(minutes=3)
    await scan(sessionmaker, clock)
    clock.advance(minutes=3)
    done = (await scan(sessionmaker, clock))["db"]
    assert (done.status, done.reasons) == ("ok", [])
    assert (await stored(sessionmaker))["db-0.sql.gz"].size == 100 * 1024


async def test_sftp_source_error_keeps_the_inventory(sessionmaker, clock, sshd_server) -> None:
    root = sshd_server.remote_dir
    make_file(root / "a.tar", 100, clock.now - HOUR)
    declaration = declared(sshd_server)
    await add_job(sessionmaker, clock.now, name="nas", source=declaration)
    assert (await scan(sessionmaker, clock))["nas"].status == "ok"

    # The server's key changes (or someone is in between): unknown, nothing gone.
    sshd_server.known_hosts.write_text(sshd_server.wrong_known_hosts.read_text())
    try:
        result = (await scan(sessionmaker, clock))["nas"]
    finally:
        sshd_server.known_hosts.write_text(
            f"[127.0.0.1]:{sshd_server.port} {sshd_server.host_public_key}\n"
        )
    assert result.status == "unknown"
    [reason] = result.reasons
    assert reason["code"] == "source_error"
    assert "does not match the one in known_hosts" in reason["message"]
    assert str(sshd_server.known_hosts) in reason["message"]
    job = await get_job(sessionmaker, "nas")
    assert job.artifact_count == 1
    assert [row.gone_since for row in (await stored(sessionmaker)).values()] == [None]
    # Back: ok again, the same artifact.
    assert (await scan(sessionmaker, clock))["nas"].status == "ok"
    assert list(await stored(sessionmaker)) == ["a.tar"]


async def test_sftp_unreadable_subdirectory_marks_nothing_gone(
    sessionmaker, clock, unprivileged_sftp
) -> None:
    root = unprivileged_sftp.remote_dir
    for name in ("a.tar", "locked/b.tar"):
        make_file(root / name, 100, clock.now - HOUR)
    await add_job(
        sessionmaker, clock.now, name="nas", source=declared(unprivileged_sftp, recursive=True)
    )
    assert (await scan(sessionmaker, clock))["nas"].artifact_count == 2
    os.chown(root / "locked", pwd.getpwnam("nobody").pw_uid, -1)
    (root / "locked").chmod(0o000)
    try:
        result = (await scan(sessionmaker, clock))["nas"]
    finally:
        (root / "locked").chmod(0o755)
    assert result.status == "unknown"
    assert "Permission denied" in result.reasons[0]["message"]
    assert [row.gone_since for row in (await stored(sessionmaker)).values()] == [None, None]


async def test_a_wrong_password_is_shown_nowhere(
    sessionmaker, clock, sshd_server, database_url, aiohttp_client, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("NAS_PASSWORD", PASSWORD)
    await add_job(
        sessionmaker, clock.now, name="nas",
        source=declared(sshd_server, key_file=None, password="${NAS_PASSWORD}"),
    )  # fmt: skip
    result = (await scan(sessionmaker, clock))["nas"]
    assert result.status == "unknown"
    assert result.reasons[0]["message"].startswith("authentication refused by")
    assert PASSWORD not in str(result.reasons)
    assert PASSWORD not in caplog.text

    app = create_app(load_settings(database_url=database_url), scheduler=False)
    client = await aiohttp_client(app)
    for url in ("/api/v1/jobs/nas", "/api/v1/jobs/nas/history", "/api/v1/jobs", "/jobs/nas",
                "/api/v1/scans", "/metrics"):  # fmt: skip
        response = await client.get(url)
        body = await response.text()
        assert response.status == 200, (url, body)
        assert PASSWORD not in body
    answer = await (await client.get("/api/v1/jobs/nas")).json()
    assert answer["status"] == "unknown"
    assert "${NAS_PASSWORD}" in str(answer)  # the reference is shown, never its value
    assert "authentication refused" in str(answer)
