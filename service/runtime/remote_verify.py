"""Verifying a remote artifact by streaming it: never a copy on disk, never the whole file in
memory. An S3 object (read with the source's own client, S3Listing.client: its endpoint,
credentials, timeouts, retries) or a file on an SFTP host (the source's own session,
SftpListing.session: its known_hosts, key, password).

The bytes are read in CHUNK pieces on the event loop; each piece is taken from the byte budget and
fed to the engine's push-style `Verifier` in a worker thread (decompressing and hashing are CPU
work). The sidecars (FILE.sha256, ..., SHA256SUMS next to it: same prefix, same directory) are
small files read first, at most MAX_SIDECAR_BYTES each.

- The version read is the one listed (S3: its size and LastModified, to the second, as an HTTP
  date has no more; SFTP: size and modification time), and it is still there and unchanged once
  read (S3: ETag, size, LastModified; SFTP: size and time); otherwise "changed": not judged,
  again later (as a local file rewritten while it is read).
- A file that is gone, refused (AccessDenied, permission denied), or a connection that drops or
  times out is "unreadable" with the reason, never "corrupt": aiobotocore checks that an S3 body
  has the length announced, so a cut connection is not taken for a truncated archive.
- A zip is read as a stream here: its entries are not checked (the outcome says so); its digest
  is.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncssh

from service.core.jobspec import Verify
from service.scanner.sources.base import SourceError
from service.scanner.sources.s3 import S3Listing
from service.scanner.sources.sftp import SftpListing, mtime_us, sftp_reason, shown
from service.store.verifications import DueArtifact
from service.verify.budget import Budget
from service.verify.checksums import (
    MAX_SIDECAR_BYTES,
    Expected,
    NoSidecarEntry,
    SidecarError,
    parse_sidecar,
    sidecar_names,
)  # fmt: skip
from service.verify.formats import (
    CHUNK,
    NOT_LISTED,
    Limits,
    Outcome,
    Stopped,
    Verifier,
    grouped,
    with_sidecar,
)  # fmt: skip

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What a finished pass can say about the bytes: only these are judged against a change.
_JUDGED = ("ok", "corrupt", "checksum_mismatch", "too_large")


def _version(answer: dict[str, Any]) -> tuple[str, int, int]:
    """(ETag, size, LastModified in whole seconds) of a GetObject or HeadObject answer."""
    modified: datetime = answer["LastModified"]
    return (
        str(answer.get("ETag") or "").strip('"'),
        int(answer["ContentLength"]),
        int(modified.timestamp()),
    )


def _not_found(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("NoSuchKey", "404", "NotFound") or status == 404


async def _take(budget: Budget, n: int, stop: threading.Event) -> None:
    """`n` bytes from the budget (sleeping in a thread, off the loop); Stopped once told to."""
    if not await asyncio.to_thread(budget.take, n, stop):
        raise Stopped


Fetch = Callable[[str], Awaitable[bytes | None]]


async def _find_sidecar(path: str, fetch: Fetch) -> tuple[Expected | None, str]:
    """The first sidecar next to `path` that gives its digest, and a note on what was found,
    as verify_file's. `fetch(name)`: a sidecar's content (at most MAX_SIDECAR_BYTES + 1
    bytes), None when there is none; SidecarError when it cannot be read."""
    not_listed = []
    for sidecar in sidecar_names(path):
        content = await fetch(sidecar)
        if content is None:
            continue
        try:
            return parse_sidecar(sidecar, content, path), ""
        except NoSidecarEntry as exc:
            not_listed.append(str(exc))
    looked = ", ".join(sidecar_names(path))
    return None, "; ".join(not_listed) or f"no checksum sidecar (looked for {looked})"


def _changed(where: str, was: str, now_size: int | None, found: Outcome, started: float) -> Outcome:
    """The outcome of an artifact that changed while it was read: not judged, verified again
    later. `was`: the version read; `now_size`: its size now, None when it is gone."""
    now = "is gone" if now_size is None else f"is {grouped(now_size)} bytes"
    return Outcome(
        "changed",
        f"{where} changed while it was read (it was {was}; it now {now}): it is verified again "
        "later",
        found.bytes_read, time.monotonic() - started, found.digest, found.checked, found.sidecar,
    )  # fmt: skip


def _unreadable(
    where: str, reason: str, verifier: Verifier, reading: bool, started: float
) -> Outcome:
    """The outcome of an artifact that cannot be read (gone, refused, a connection lost), with
    the byte it was read up to when it failed while being read."""
    at = f" at byte {grouped(verifier.bytes_read)}" if reading else ""
    return Outcome(
        "unreadable", f"{where} cannot be read{at}: {reason}", verifier.bytes_read,
        time.monotonic() - started,
    )  # fmt: skip


def _too_large(sidecar: str, size: int) -> SidecarError:
    return SidecarError(
        f"{sidecar} is {grouped(size)} bytes: too large for a checksum file (at most "
        f"{grouped(MAX_SIDECAR_BYTES)}); is it one?"
    )


async def _stream(body: Any, verifier: Verifier, budget: Budget, stop: threading.Event) -> None:
    """Feed the body to `verifier` in CHUNK pieces, each taken from the budget and fed in a
    worker thread; stops early once more bytes could change nothing (verifier.done)."""

    def step(piece: bytes) -> None:
        if not budget.take(len(piece), stop):
            raise Stopped
        verifier.feed(piece)

    pending = bytearray()
    while not verifier.done:
        try:
            data = await body.read(CHUNK - len(pending))
        except Exception:
            if pending:  # what arrived is checked: the error then says at which byte
                await asyncio.to_thread(step, bytes(pending))
            raise
        if data:
            pending += data
            if len(pending) < CHUNK:
                continue
        if not pending:
            break
        piece, pending = bytes(pending), bytearray()
        await asyncio.to_thread(step, piece)
        if not data:
            break


async def verify_s3_object(
    listing: S3Listing,
    due: DueArtifact,
    verify: Verify,
    budget: Budget,
    limits: Limits,
    stop: threading.Event,
) -> Outcome:
    """Verify the object of artifact `due` (see the module docstring). Never raises for what
    the endpoint answers: it is in the Outcome."""
    started = time.monotonic()
    bucket, key = listing.spec.bucket, listing.key(due.path)
    where = f"s3://{bucket}/{key}"
    verifier = Verifier(
        due.path.rpartition("/")[2],
        archive=verify.archive,
        expected=None,
        limits=limits,
    )
    stage = "opened"
    try:
        async with listing.client() as client:
            expected, note, sidecar_error = None, "", None
            if verify.checksum == "sidecar":

                async def fetch(sidecar: str) -> bytes | None:
                    key = listing.key(sidecar)
                    try:
                        answer = await client.get_object(Bucket=bucket, Key=key)
                        async with answer["Body"] as body:
                            size = int(answer.get("ContentLength") or 0)
                            if size > MAX_SIDECAR_BYTES:
                                raise _too_large(sidecar, size)
                            content: bytes = await body.read(MAX_SIDECAR_BYTES + 1)
                    except SidecarError:
                        raise
                    except Exception as exc:
                        if _not_found(exc):
                            return None
                        said = listing.explain(exc, key=key)
                        raise SidecarError(f"sidecar {sidecar} cannot be read: {said}") from None
                    await _take(budget, len(content), stop)
                    return content

                try:
                    expected, note = await _find_sidecar(due.path, fetch)
                except SidecarError as exc:
                    sidecar_error = str(exc)
            answer = await client.get_object(Bucket=bucket, Key=key)
            async with answer["Body"] as body:
                before = _version(answer)
                listed = (due.size, int((due.mtime - _EPOCH) / timedelta(seconds=1)))
                if before[1:] != listed:
                    return NOT_LISTED
                verifier = Verifier(
                    due.path.rpartition("/")[2],
                    archive=verify.archive,
                    expected=expected,
                    limits=limits,
                )
                stage = "read"
                await _stream(body, verifier, budget, stop)
            found = verifier.outcome()
            stage = "checked"
            if found.result in _JUDGED:
                try:
                    after: tuple[str, int, int] | None = _version(
                        await client.head_object(Bucket=bucket, Key=key)
                    )
                except Exception as exc:
                    if not _not_found(exc):
                        raise
                    after = None
                if after != before:
                    was = f"{grouped(before[1])} bytes, ETag {before[0]}"
                    return _changed(where, was, None if after is None else after[1], found, started)
    except Stopped:
        return verifier.stopped()
    except SourceError as exc:  # the secret cannot be resolved
        return _unreadable(where, str(exc), verifier, False, started)
    except Exception as exc:  # the endpoint's answers and the connection's errors
        said = listing.explain(exc, key=key)
        return _unreadable(where, said, verifier, stage == "read", started)
    return with_sidecar(found, time.monotonic() - started, sidecar_error, note)


# SFTP -----------------------------------------------------------------------------------------


def _sftp_version(attrs: asyncssh.SFTPAttrs) -> tuple[int, int]:
    """(size, modification time in microseconds) of an SFTP file, as its listing records it."""
    return int(attrs.size or 0), mtime_us(attrs)


async def verify_sftp_file(
    listing: SftpListing,
    due: DueArtifact,
    verify: Verify,
    budget: Budget,
    limits: Limits,
    stop: threading.Event,
) -> Outcome:
    """Verify the file of artifact `due` on an SFTP source (see the module docstring). Never
    raises for what the server answers: it is in the Outcome."""
    started = time.monotonic()
    path = listing.remote(due.path)
    where = f"{listing.where}:{shown(path)}"
    verifier = Verifier(due.path.rpartition("/")[2], archive=verify.archive, expected=None,
                        limits=limits)  # fmt: skip
    stage = "opened"
    try:
        async with listing.session(f"verifying {shown(path)}") as sftp:
            expected, note, sidecar_error = None, "", None
            if verify.checksum == "sidecar":

                async def fetch(sidecar: str) -> bytes | None:
                    try:
                        async with sftp.open(listing.remote(sidecar), "rb") as file:
                            size = int((await file.stat()).size or 0)
                            if size > MAX_SIDECAR_BYTES:
                                raise _too_large(sidecar, size)
                            content = await file.read(MAX_SIDECAR_BYTES + 1)
                    except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
                        return None
                    except asyncssh.SFTPError as exc:
                        raise SidecarError(
                            f"sidecar {sidecar} cannot be read: {sftp_reason(exc)}"
                        ) from None
                    assert isinstance(content, bytes)  # opened "rb": bytes
                    await _take(budget, len(content), stop)
                    return content

                try:
                    expected, note = await _find_sidecar(due.path, fetch)
                except SidecarError as exc:
                    sidecar_error = str(exc)
            async with sftp.open(path, "rb") as file:
                before = _sftp_version(await file.stat())
                listed = (due.size, int((due.mtime - _EPOCH) / timedelta(microseconds=1)))
                if before != listed:
                    return NOT_LISTED
                verifier = Verifier(due.path.rpartition("/")[2], archive=verify.archive,
                                    expected=expected, limits=limits)  # fmt: skip
                stage = "read"
                await _stream(file, verifier, budget, stop)
            found = verifier.outcome()
            stage = "checked"
            if found.result in _JUDGED:
                try:
                    after: tuple[int, int] | None = _sftp_version(await sftp.stat(path))
                except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
                    after = None
                if after != before:
                    was = f"{grouped(before[0])} bytes"
                    return _changed(where, was, None if after is None else after[0], found, started)
    except Stopped:
        return verifier.stopped()
    except SourceError as exc:  # cannot connect, refused, the connection lost
        return _unreadable(where, str(exc), verifier, stage == "read", started)
    except asyncssh.SFTPError as exc:  # gone, permission denied, a failed read
        return _unreadable(where, sftp_reason(exc), verifier, stage == "read", started)
    return with_sidecar(found, time.monotonic() - started, sidecar_error, note)
