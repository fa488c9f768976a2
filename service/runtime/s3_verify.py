"""Verifying an S3 object by streaming it: never a copy on disk, never the whole object in memory.

The object is read with the source's own client (S3Listing.client: its endpoint, credentials,
timeouts, retries) in CHUNK pieces on the event loop; each piece is taken from the byte budget and
fed to the engine's push-style `Verifier` in a worker thread (the decompression and hashing are
CPU work). Its sidecars (FILE.sha256, ..., SHA256SUMS next to it, under the same prefix) are
small objects read first, at most MAX_SIDECAR_BYTES each.

- The version read is the one listed (its size and LastModified, to the second: an HTTP date has
  no more), and it is still there, unchanged (ETag, size, LastModified), once it was read;
  otherwise "changed": not judged, again later (as a local file rewritten while read).
- An object that is gone, refused (AccessDenied), or a connection that drops or times out is
  "unreadable" with the reason, never "corrupt": aiobotocore checks that the body has the length
  announced, so a cut connection is not taken for a truncated archive.
- A zip is not seekable here: its entries are not checked (the outcome says so); its digest is.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from service.core.jobspec import Verify
from service.scanner.sources.base import SourceError
from service.scanner.sources.s3 import S3Listing
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


async def _find_sidecar(
    listing: S3Listing, client: Any, path: str, budget: Budget, stop: threading.Event
) -> tuple[Expected | None, str]:
    """The first sidecar object next to `path` that gives its digest, and a note on what was
    found (SidecarError: one that cannot be read as a checksum file), as verify_file's."""
    bucket = listing.spec.bucket
    not_listed = []
    for sidecar in sidecar_names(path):
        key = listing.key(sidecar)
        try:
            answer = await client.get_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if _not_found(exc):
                continue
            raise SidecarError(
                f"sidecar {sidecar} cannot be read: {listing.explain(exc, key=key)}"
            ) from None
        async with answer["Body"] as body:
            size = int(answer.get("ContentLength") or 0)
            if size > MAX_SIDECAR_BYTES:
                raise SidecarError(
                    f"{sidecar} is {grouped(size)} bytes: too large for a checksum file (at "
                    f"most {grouped(MAX_SIDECAR_BYTES)}); is it one?"
                )
            try:
                content = await body.read(MAX_SIDECAR_BYTES + 1)
            except Exception as exc:
                raise SidecarError(
                    f"sidecar {sidecar} cannot be read: {listing.explain(exc, key=key)}"
                ) from None
        await _take(budget, len(content), stop)
        try:
            return parse_sidecar(sidecar, content, path), ""
        except NoSidecarEntry as exc:
            not_listed.append(str(exc))
    looked = ", ".join(sidecar_names(path))
    return None, "; ".join(not_listed) or f"no checksum sidecar (looked for {looked})"


async def _stream(body: Any, verifier: Verifier, budget: Budget, stop: threading.Event) -> None:
    """Feed the body to `verifier` in CHUNK pieces, each taken from the budget and fed in a
    worker thread; stops early once more bytes could change nothing (verifier.done)."""

    def step(piece: bytes) -> None:
        if not budget.take(len(piece), stop):
            raise Stopped
        verifier.feed(piece)

    pending = bytearray()
    while not verifier.done:
        data = await body.read(CHUNK - len(pending))
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


async def verify_object(
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
                try:
                    expected, note = await _find_sidecar(listing, client, due.path, budget, stop)
                except SidecarError as exc:
                    sidecar_error = str(exc)
            answer = await client.get_object(Bucket=bucket, Key=key)
            async with answer["Body"] as body:
                before = _version(answer)
                listed = (due.size, int((due.mtime - _EPOCH) / timedelta(seconds=1)))
                if before[1:] != listed:
                    return Outcome("changed", "not the version listed (rewritten since)", 0, 0.0)
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
                    now = "is gone" if after is None else f"is {grouped(after[1])} bytes"
                    return Outcome(
                        "changed",
                        f"{where} changed while it was read (it was {grouped(before[1])} bytes, "
                        f"ETag {before[0]}; it now {now}): it is verified again later",
                        found.bytes_read, time.monotonic() - started, found.digest,
                        found.checked, found.sidecar,
                    )  # fmt: skip
    except Stopped:
        return verifier.stopped()
    except SourceError as exc:  # the secret cannot be resolved
        return Outcome("unreadable", f"{where} cannot be read: {exc}", 0, 0.0)
    except Exception as exc:  # the endpoint's answers and the connection's errors
        said = listing.explain(exc, key=key)
        at = f" at byte {grouped(verifier.bytes_read)}" if stage == "read" else ""
        return Outcome(
            "unreadable", f"{where} cannot be read{at}: {said}", verifier.bytes_read,
            time.monotonic() - started,
        )  # fmt: skip
    return with_sidecar(found, time.monotonic() - started, sidecar_error, note)
