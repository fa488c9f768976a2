"""SFTP source: the files in a directory of an SSH host, listed with asyncssh on the event loop.

Invariants:
- The host's key is verified against the declared `known_hosts` file only: never the user's
  ~/.ssh (no OpenSSH client configuration, no agent, no default keys), never an unknown or
  changed key (a SourceError naming the known_hosts file).
- An artifact is a regular file: its path below `path` ('/'-separated; bytes that are not UTF-8
  shown as \\xNN, as local sources show them), size and modification time. Entries are typed by
  the directory listing's own attributes (OpenSSH's sftp-server reads them with lstat): a
  symlink is never followed (noted in `skipped`), a directory is entered only when recursive.
- A directory below the root that cannot be read is a warning (the listing is incomplete, so
  nothing is marked gone); the root that cannot be read is a SourceError.
- The connection is closed on every path out of `list()`, cancellation included.
- Messages name the host and path and what to check; never a password or a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import stat
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, cast

import asyncssh

from service.config.settingfile import UnreadableFile, read_setting_file
from service.core import jobspec
from service.scanner.sources import secrets
from service.scanner.sources.base import Listing, SourceError
from service.scanner.sources.local import Matcher, _drop_escape_collisions, _matcher

if TYPE_CHECKING:
    from asyncssh import SFTPClient, SSHKnownHosts


# asyncssh tells every connection's steps at INFO (opening, auth, SFTP started, closed): a
# dozen lines per sftp job and scan. Its warnings and errors still reach the service's log.
logging.getLogger("asyncssh").setLevel(logging.WARNING)

# Directories of one recursive listing read at once (requests pipelined on one SFTP session).
PARALLEL_DIRECTORIES = 8

# The session ended: nothing more can be listed (not one unreadable directory).
_LOST = (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)


def shown(path: bytes) -> str:
    """A remote path as stored and shown: UTF-8, other bytes as \\xNN (as local.display_path)."""
    return path.decode("utf-8", "backslashreplace")


def name_of(name: bytes) -> str:
    """A file name as local sources match it: undecodable bytes as surrogates (os.fsdecode)."""
    return name.decode("utf-8", "surrogateescape")


def mtime_us(attrs: asyncssh.SFTPAttrs) -> int:
    """Seconds (and, from SFTP v4 servers, nanoseconds) since the epoch, in microseconds."""
    seconds = attrs.mtime or 0
    return seconds * 1_000_000 + (attrs.mtime_ns or 0) // 1000


def file_type(attrs: asyncssh.SFTPAttrs) -> int:
    """The S_IFMT bits of an entry (0 when the server did not say)."""
    if attrs.permissions is not None:
        return stat.S_IFMT(attrs.permissions)
    return {
        asyncssh.FILEXFER_TYPE_REGULAR: stat.S_IFREG,
        asyncssh.FILEXFER_TYPE_DIRECTORY: stat.S_IFDIR,
        asyncssh.FILEXFER_TYPE_SYMLINK: stat.S_IFLNK,
    }.get(attrs.type, 0)


def sftp_reason(exc: asyncssh.SFTPError) -> str:
    """The server's reason for an SFTP failure, on one line."""
    reason = " ".join(str(exc.reason or "").split())
    return reason or type(exc).__name__


class SftpListing:
    """The RemoteSource for a declared `sftp` source."""

    kind = "sftp"

    def __init__(self, spec: jobspec.SftpSource) -> None:
        self.spec = spec
        self.label = spec.location()
        self.timeout: float | None = spec.timeout
        self.where = f"{spec.username}@{spec.host}:{spec.port}"

    @contextlib.asynccontextmanager
    async def session(self, doing: str) -> AsyncIterator[SFTPClient]:
        """An SFTP session on the declared host (known_hosts, key, password as declared; bytes
        paths), closed on every way out, cancellation included. Connecting errors and a
        connection lost inside are SourceErrors (`doing`: what was being done, for them);
        the SFTP errors of one request are the caller's."""
        known_hosts, key = await asyncio.to_thread(self._read_files)
        options = await self._options(known_hosts, key)
        try:
            connection = await asyncssh.connect(
                self.spec.host, self.spec.port, config=None, **options
            )
        except Exception as exc:
            raise self._connect_error(exc, known_hosts) from None
        try:
            try:
                sftp = await connection.start_sftp_client(path_encoding=None)
            except (asyncssh.Error, OSError) as exc:
                raise SourceError(
                    f"{self.where} does not offer SFTP ({_describe(exc)}): check the server's "
                    "`Subsystem sftp` setting and the user's shell"
                ) from None
            yield sftp
        except _LOST as exc:
            raise SourceError(
                f"the connection to {self.where} was lost while {doing}: {_describe(exc)}"
            ) from None
        except asyncssh.SFTPError:  # one request's answer: the caller's to tell
            raise
        except (asyncssh.Error, OSError) as exc:  # the connection lost
            raise SourceError(
                f"the connection to {self.where} was lost while {doing}: {_describe(exc)}"
            ) from None
        finally:  # every way out, cancellation included
            connection.close()
            await connection.wait_closed()

    def remote(self, path: str) -> bytes:
        """The remote path of a path below the root (as listed)."""
        root = self.spec.path.encode("utf-8", "surrogateescape")
        return root.rstrip(b"/") + b"/" + path.encode("utf-8", "surrogateescape")

    async def list(self) -> Listing:
        async with self.session(f"listing {self.spec.path}") as sftp:
            try:
                return await self._walk(sftp)
            except asyncssh.SFTPError as exc:  # _walk tells its own: none should be left
                raise self._root_error(exc) from None

    async def _options(
        self, known_hosts: SSHKnownHosts, key: asyncssh.SSHKey | None
    ) -> dict[str, Any]:
        """asyncssh's options from the declaration alone (with config=None: no ~/.ssh/config);
        the password read now, off the event loop."""
        spec = self.spec
        password = await asyncio.to_thread(
            secrets.resolve, spec.password, spec.password_file, f"sftp {self.where} password"
        )
        return dict(
            username=spec.username,
            known_hosts=known_hosts,
            client_keys=[key] if key is not None else None,  # None: no default keys
            agent_path=None,
            agent_identities=None,
            agent_forwarding=False,
            pkcs11_provider=None,
            password=password,
            password_auth=password is not None,
            kbdint_auth=password is not None,
            host_based_auth=False,
            gss_auth=False,
            gss_kex=False,
            x509_trusted_certs=None,
            x509_trusted_cert_paths=[],
            client_host_keysign=False,
            preferred_auth=("publickey", "keyboard-interactive", "password"),
        )

    def _read_files(self) -> tuple[SSHKnownHosts, asyncssh.SSHKey | None]:
        """The known hosts and the client key (blocking: in a worker thread)."""
        spec = self.spec
        text = read_file(spec.known_hosts, f"sftp {self.where} known_hosts").decode(
            "utf-8", "replace"
        )
        try:
            known_hosts = asyncssh.import_known_hosts(text)
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise SourceError(
                f"sftp {self.where}: known_hosts {spec.known_hosts} is not in OpenSSH's "
                f"known_hosts format: {exc}"
            ) from None
        key = None
        if spec.key_file is not None:
            data = read_file(spec.key_file, f"sftp {self.where} key_file")
            try:
                key = asyncssh.import_private_key(data)
            except asyncssh.KeyEncryptionError:
                raise SourceError(
                    f"sftp {self.where}: key_file {spec.key_file} is encrypted with a "
                    "passphrase; give a key without one (readable by the service only)"
                ) from None
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise SourceError(
                    f"sftp {self.where}: key_file {spec.key_file} is not a private key "
                    f"(OpenSSH or PEM format): {exc}"
                ) from None
        return known_hosts, key

    def _connect_error(self, exc: Exception, known_hosts: SSHKnownHosts) -> SourceError:
        spec, where = self.spec, self.where
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            if known_hosts.match(spec.host, spec.host, spec.port)[0]:
                return SourceError(
                    f"the host key of {spec.host}:{spec.port} does not match the one in "
                    f"known_hosts {spec.known_hosts}: the key changed (a reinstalled server, or "
                    "someone in between); check it with the server's administrator, then "
                    "update that file"
                )
            return SourceError(
                f"the host key of {spec.host}:{spec.port} is unknown: known_hosts "
                f"{spec.known_hosts} has no key for it; add the server's key there "
                f"(ssh-keyscan -p {spec.port} {spec.host}, checked with its administrator)"
            )
        if isinstance(exc, asyncssh.PermissionDenied):
            given = " and ".join(
                what
                for what, present in (
                    (f"key_file {spec.key_file}", spec.key_file is not None),
                    ("the password", spec.password or spec.password_file),
                )
                if present
            )
            return SourceError(
                f"authentication refused by {where}: check the username and that the server "
                f"accepts {given}"
            )
        if isinstance(exc, socket.gaierror):
            return SourceError(
                f"cannot resolve the host name {spec.host} ({exc.strerror or exc}): check the "
                "host and the monitor's DNS"
            )
        if isinstance(exc, ConnectionRefusedError):
            return SourceError(
                f"connection refused by {spec.host}:{spec.port}: is an SSH server listening on "
                "that port (and a firewall letting the monitor in)?"
            )
        if isinstance(exc, OSError):
            return SourceError(
                f"cannot connect to {spec.host}:{spec.port}: {_describe(exc)}; check the host, "
                "the port and the network"
            )
        if isinstance(exc, asyncssh.Error):
            return SourceError(
                f"SSH connection to {where} failed: {_describe(exc)}; check that it is an SSH "
                "server and that it accepts this client"
            )
        raise exc

    async def _walk(self, sftp: SFTPClient) -> Listing:
        spec = self.spec
        root = spec.path.encode("utf-8", "surrogateescape")
        try:
            attrs = await sftp.stat(root)  # the root may be a symlink, as for local sources
        except asyncssh.SFTPError as exc:
            raise self._root_error(exc) from None
        if file_type(attrs) != stat.S_IFDIR:
            raise SourceError(f"cannot read {spec.path} on {self.where}: not a directory")

        matches = _matcher(spec.pattern, spec.excluded)
        listing = Listing()

        async def read(relative: bytes) -> list[bytes]:
            """Read one directory into `listing`; its subdirectories, to read next."""
            directory = root.rstrip(b"/") + b"/" + relative if relative else root
            found: list[bytes] = []
            try:
                await _read_directory(
                    sftp, directory, relative, matches, listing, found, spec.recursive
                )
            except asyncssh.SFTPError as exc:
                if not relative or isinstance(exc, _LOST):
                    raise self._root_error(exc) from None
                listing.warnings.append(
                    f"cannot read {shown(directory)} on {self.where}: {sftp_reason(exc)}"
                )
            return found

        # Several directories read at once: over a link with latency, each read is a few round
        # trips, and a tree of a thousand dated directories must not cost a thousand in a row.
        pending = deque(await read(b""))
        running: set[asyncio.Task[list[bytes]]] = set()
        try:
            while pending or running:
                while pending and len(running) < PARALLEL_DIRECTORIES:
                    running.add(asyncio.create_task(read(pending.popleft())))
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                failed = [task.exception() for task in done if task.exception() is not None]
                if failed:
                    raise failed[0]  # type: ignore[misc]
                for task in done:
                    pending.extend(task.result())
        finally:  # failed or cancelled: no read left running
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if any("\\" in entry[0] for entry in listing.entries):
            _drop_escape_collisions(listing)
        return listing

    def _root_error(self, exc: asyncssh.SFTPError) -> SourceError:
        path, where = self.spec.path, self.where
        if isinstance(exc, _LOST):
            return SourceError(
                f"the connection to {where} was lost while listing {path}: {sftp_reason(exc)}"
            )
        if isinstance(exc, asyncssh.SFTPNoSuchFile | asyncssh.SFTPNoSuchPath):
            return SourceError(f"no directory {path} on {where}: check the path")
        if isinstance(exc, asyncssh.SFTPPermissionDenied):
            return SourceError(
                f"permission denied reading {path} on {where}: check that {self.spec.username} "
                "may read and enter it"
            )
        if isinstance(exc, asyncssh.SFTPNotADirectory):
            return SourceError(f"cannot read {path} on {where}: not a directory")
        return SourceError(f"cannot read {path} on {where}: {sftp_reason(exc)}")


async def _read_directory(
    sftp: SFTPClient,
    directory: bytes,
    relative: bytes,
    matches: Matcher,
    listing: Listing,
    pending: list[bytes],
    recursive: bool,
) -> None:
    """Append the directory's matching files to `listing`, its subdirectories to `pending`
    (when recursive); symlinks are noted, never followed."""
    append = listing.entries.append
    prefix = relative + b"/" if relative else b""
    async with aclosing(
        cast(AsyncGenerator[asyncssh.SFTPName, None], sftp.scandir(directory))
    ) as names:
        async for entry in names:
            name: bytes = entry.filename  # type: ignore[assignment]  # bytes paths in
            if name in (b".", b".."):
                continue
            kind = file_type(entry.attrs)
            if kind == stat.S_IFREG:
                if matches(name_of(name)):
                    append((shown(prefix + name), entry.attrs.size or 0, mtime_us(entry.attrs)))
            elif kind == stat.S_IFDIR:
                if recursive:
                    pending.append(prefix + name)
            elif kind == stat.S_IFLNK:
                listing.skipped.append(f"{shown(prefix + name)}: symlink, not followed")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, asyncssh.DisconnectError | asyncssh.ChannelOpenError):
        return " ".join(str(exc.reason).split()) or type(exc).__name__
    return " ".join(str(exc).split()) or type(exc).__name__


def read_file(path: str, what: str) -> bytes:
    """A whole file the declaration names (a key, known hosts), through the guarded reader;
    SourceError saying why it cannot be read, never what it holds."""
    try:
        return read_setting_file(path, secrets.MAX_SECRET_BYTES)
    except UnreadableFile as exc:
        raise SourceError(f"{what}: {path}: {exc}") from None
    except OSError as exc:
        raise SourceError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
