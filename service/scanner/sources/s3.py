"""S3-compatible object storage (AWS S3, MinIO, Backblaze B2, Cloudflare R2, Wasabi, ...).

An artifact is an object: its key below the declared prefix (the path), its size, its
LastModified (microseconds) and, as details, its ETag (without quotes) and storage class.
Listed with ListObjectsV2 through aiobotocore's paginator, 1 000 keys a page, with Delimiter
"/" unless `recursive`; each page is turned into entries and dropped, so memory holds the
entries, never the raw pages.

Invariants:
- Keys are data: `..`, `//`, newlines, any Unicode are kept as the path, matched by their name
  (the part after the last '/') against `pattern` and `exclude`, and never used as a path here.
- The listing is whole or it is a SourceError: an error on any page fails the listing (nothing
  is then marked gone). Every SourceError names the bucket and the endpoint and says what to
  check; none holds a secret (the secret lives only in the client made for one listing).
- botocore takes ~1.5 s to import and ~0.2 s to load its S3 model: both happen once per
  process, in a worker thread (`_prepare`), so neither the CLI, nor a scan without an S3 job,
  nor the event loop pays for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from service.core import jobspec
from service.scanner.sources import secrets
from service.scanner.sources.base import Listing, SourceError
from service.scanner.sources.local import _matcher

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver

PAGE_SIZE = 1000
# When an endpoint is given without a region: what S3-compatible services expect (MinIO,
# Ceph and most others accept any region and sign with this one by default).
DEFAULT_REGION = "us-east-1"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
ATTEMPTS = 3  # botocore's "standard" retries: throttling, 5xx, a dropped connection
# Error codes that mean "these credentials are not accepted" (AWS, MinIO, R2, B2).
REFUSED = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
     "InvalidSecurity", "AuthorizationHeaderMalformed"}
)  # fmt: skip
WRONG_REGION = frozenset({"PermanentRedirect", "IllegalLocationConstraintException", "301"})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Matcher = Callable[[str], object]


class MalformedAnswer(Exception):
    """A page that parsed but is no ListObjectsV2 answer (an HTML page, an empty body): taken
    for an empty bucket, it would mark every backup gone."""


# --- pure: one page of ListObjectsV2 into the listing ----------------------------------------


def stored_path(path: str) -> str:
    """A key (below the prefix) as it can be stored anywhere: as is, except a NUL (PostgreSQL
    text cannot hold one) or a lone surrogate, written \\x00 / \\udcxx."""
    if "\0" in path:
        path = path.replace("\0", "\\x00")
    if not path.isascii():
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            path = path.encode("utf-8", "backslashreplace").decode("utf-8")
    return path


def add_objects(
    listing: Listing,
    objects: Iterable[Mapping[str, Any]],
    cut: int,
    matches: Matcher,
    classes: dict[str, str],
) -> None:
    """Append the matching objects of one page (ListObjectsV2 `Contents`, as botocore parses
    them) to `listing`: path = the key without its first `cut` characters (the prefix), name =
    the path's last '/'-separated part. A key that ends with '/' below the prefix (a "folder"
    placeholder that consoles create) is no backup: skipped, for the log. `classes` interns the
    storage class names (100 000 objects share a handful of them)."""
    append = listing.entries.append
    details = listing.details
    for item in objects:
        path = item["Key"][cut:]
        name = path.rpartition("/")[2]
        if not name:
            if path:
                listing.skipped.append(f"{path}: a folder placeholder, not an object")
            continue
        if not matches(name):
            continue
        if "\0" in path or not path.isascii():
            path = stored_path(path)
        modified: datetime = item["LastModified"]
        append((path, item["Size"], (modified - _EPOCH) // _MICROSECOND))
        etag = item.get("ETag")
        storage = item.get("StorageClass")
        if storage is not None:
            storage = classes.setdefault(storage, storage)
        details[path] = vars(_Details(etag.strip('"') if etag is not None else None, storage))


class _Details:
    """An object's details, made as an instance's attributes so that `vars()` gives a plain
    dict that shares its keys with every other one (CPython's key-sharing dicts, PEP 412):
    ~105 bytes instead of ~190, which is 9 MB of the ~50 MB that 100 000 objects take."""

    def __init__(self, etag: str | None, storage_class: str | None) -> None:
        self.etag = etag
        self.storage_class = storage_class


def drop_collisions(listing: Listing) -> None:
    """Two keys that show as one path (a NUL written \\x00 beside a real `\\x00`): keep one, as
    local sources do with undecodable names, and say so."""
    seen: set[str] = set()
    kept = []
    for entry in listing.entries:
        if entry[0] in seen:
            listing.skipped.append(f"{entry[0]}: two objects show as this key; one is ignored")
            continue
        seen.add(entry[0])
        kept.append(entry)
    listing.entries[:] = kept


# --- the client -------------------------------------------------------------------------------

_prepared = threading.Lock()
_loader: Any = None


def _load() -> Any:
    """Import aiobotocore and load botocore's S3 model and endpoint data once (in a thread):
    a client then costs ~15 ms on the loop instead of ~250 ms, and the import ~1.5 s none."""
    global _loader
    with _prepared:
        if _loader is None:
            from aiobotocore.session import get_session
            from botocore.loaders import create_loader

            loader = create_loader()
            session = get_session()
            session.register_component("data_loader", loader)

            async def warm() -> None:
                async with session.create_client(
                    "s3", region_name=DEFAULT_REGION, endpoint_url="http://127.0.0.1:9",
                    aws_access_key_id="warm-up", aws_secret_access_key="warm-up",  # noqa: S106
                ):  # fmt: skip
                    pass  # no request is made: a client is only built

            asyncio.run(warm())
            _loader = loader
        return _loader


async def _prepare() -> Any:
    if _loader is not None and "aiobotocore.session" in sys.modules:
        return _loader
    return await asyncio.to_thread(_load)


class S3Listing:
    """One declared S3 source (a RemoteSource). `resolver` (an aiohttp resolver) is for tests
    only: virtual-hosted addressing against a loopback name. `connect_timeout`, `read_timeout`
    (seconds a request may take to connect, to answer) and `attempts` (tries of a request)
    have production defaults; tests shorten them."""

    kind = "s3"

    def __init__(
        self,
        spec: jobspec.S3Source,
        *,
        resolver: AbstractResolver | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        attempts: int = ATTEMPTS,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.label = spec.location()
        self.timeout: float | None = spec.timeout
        self.endpoint = spec.endpoint_url or "AWS S3"
        self.region = spec.region or (DEFAULT_REGION if spec.endpoint_url else None)
        self._resolver = resolver
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._attempts = attempts
        self._environ = environ

    def _credentials(self) -> tuple[str | None, str | None]:
        """(access key id, secret), both None for botocore's default credential chain."""
        spec = self.spec
        if spec.access_key_id is None:
            return None, None
        key_id = secrets.expand(spec.access_key_id, "access_key_id", self._environ)
        secret = secrets.resolve(
            spec.secret_access_key, spec.secret_access_key_file, "secret_access_key",
            self._environ,
        )  # fmt: skip
        return key_id, secret

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        """An aiobotocore S3 client for this source: its endpoint, region, addressing,
        credentials, timeouts and retries (the listing's, and the verifier's reads). The secret
        lives only in the client. Errors are botocore's: `explain` tells them."""
        spec = self.spec
        key_id, secret = self._credentials()
        loader = await _prepare()
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        session = get_session()
        session.register_component("data_loader", loader)
        config = AioConfig(
            s3={"addressing_style": spec.addressing},
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            retries={"mode": "standard", "total_max_attempts": self._attempts},
            connector_args={"resolver": self._resolver} if self._resolver else None,
            user_agent_extra="backup-monitor",
        )
        async with session.create_client(
            "s3", endpoint_url=spec.endpoint_url, region_name=self.region,
            aws_access_key_id=key_id, aws_secret_access_key=secret, config=config,
        ) as client:  # fmt: skip
            del secret
            yield client

    def key(self, path: str) -> str:
        """The object key of a path below the prefix (as listed)."""
        return self.spec.prefix + path

    async def list(self) -> Listing:
        spec = self.spec
        parameters: dict[str, Any] = {"Bucket": spec.bucket, "Prefix": spec.prefix}
        if not spec.recursive:
            parameters["Delimiter"] = "/"
        matches = _matcher(spec.pattern, spec.excluded)
        listing = Listing()
        classes: dict[str, str] = {}
        cut = len(spec.prefix)
        try:
            async with self.client() as client:
                pages = client.get_paginator("list_objects_v2").paginate(
                    **parameters, PaginationConfig={"PageSize": PAGE_SIZE}
                )
                async for page in pages:
                    if not isinstance(page.get("IsTruncated"), bool):  # every real one has it
                        raise MalformedAnswer
                    add_objects(listing, page.get("Contents", ()), cut, matches, classes)
                    del page
        except SourceError:  # a secret that cannot be resolved: told as it is
            raise
        except Exception as exc:  # botocore's and aiohttp's errors, told for people
            raise SourceError(self.explain(exc)) from None
        if any("\\" in entry[0] for entry in listing.entries):
            drop_collisions(listing)
        return listing

    def explain(self, exc: Exception, *, key: str | None = None) -> str:
        """What went wrong, where, and what to check; never a secret (botocore's own texts
        hold none: an error's code and message, an endpoint's URL). `key`: the object that
        was being read (None: the bucket was being listed)."""
        from aiohttp import ClientPayloadError
        from botocore import exceptions as errors
        from botocore.parsers import ResponseParserError

        bucket, where = self.spec.bucket, f"bucket {self.spec.bucket} at {self.endpoint}"
        if isinstance(exc, errors.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return f"{where}: no such bucket; check bucket (and endpoint_url, region)"
            if code in REFUSED:
                return (
                    f"{where}: the credentials were refused ({code}): check access_key_id and "
                    "the secret (secret_access_key or secret_access_key_file)"
                )
            if key is not None and (code in ("NoSuchKey", "404") or status == 404):
                return f"{where}: object {key} is gone (deleted since it was listed)"
            if code == "AccessDenied" or status == 403:
                may, allow = (
                    ("list the bucket", f"s3:ListBucket on {bucket}")
                    if key is None
                    else (f"read {key}", f"s3:GetObject on {bucket}/{key}")
                )
                return (
                    f"{where}: access denied ({code or status}): the credentials were "
                    f"accepted but may not {may}; check that they allow {allow}"
                )
            if code in WRONG_REGION:
                return f"{where}: the bucket is in another region ({code}); check region"
            said = str(error.get("Message") or "")[:200]
            answered = f"{where}: the endpoint answered {code or status}" + (
                f" ({said})" if said else ""
            )
            if isinstance(status, int) and status >= 500:
                # botocore also reports an unparseable 200 answer as a 500 (S3 may put an error
                # in a 200's body), after retrying it.
                return (
                    f"{answered}: a server error, or an answer that is not S3's; check "
                    "endpoint_url and the service's health"
                )
            return f"{answered}; check endpoint_url and bucket"
        if isinstance(exc, errors.NoCredentialsError | errors.PartialCredentialsError):
            return (
                f"{where}: no credentials found; give access_key_id and secret_access_key (or "
                "secret_access_key_file), or set up the standard AWS credential chain "
                "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, an instance role)"
            )
        if isinstance(exc, errors.ConnectTimeoutError):
            return (
                f"{where}: no connection within {self._connect_timeout:g} s; check endpoint_url "
                "and that the endpoint is reachable from here (firewall, network)"
            )
        if isinstance(exc, errors.ReadTimeoutError):
            return (
                f"{where}: no answer within {self._read_timeout:g} s; is the endpoint "
                "overloaded, or is endpoint_url an S3 service at all?"
            )
        if isinstance(exc, errors.EndpointConnectionError):
            reason = _reason(exc.kwargs.get("error"))
            return (
                f"{where}: cannot connect ({reason}); check endpoint_url (host, port, DNS) "
                "and that the service is running"
            )
        if isinstance(exc, MalformedAnswer | ResponseParserError | errors.PaginationError):
            return (
                f"{where}: the answer is not a valid S3 listing ({type(exc).__name__}); check "
                "that endpoint_url is an S3-compatible service"
            )
        if isinstance(
            exc, ClientPayloadError | errors.ResponseStreamingError | errors.IncompleteReadError
        ):
            return (
                f"{where}: the connection was dropped in the middle of the answer "
                f"({type(exc).__name__}); check the network and the service's health"
            )
        if isinstance(exc, errors.BotoCoreError):
            return f"{where}: {type(exc).__name__}: {str(exc)[:300]}"
        if isinstance(exc, OSError):  # raised by aiohttp below botocore's own checks
            return f"{where}: {_reason(exc)}; check endpoint_url and the network"
        failed = "the listing" if key is None else f"reading {key}"
        return f"{where}: {failed} failed ({type(exc).__name__}); check endpoint_url"


def _reason(error: object) -> str:
    """The OS-level cause of a connection error, in a few words ("Connection refused")."""
    cause: object = error
    for _depth in range(5):
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        if "DNS" in type(cause).__name__ or isinstance(cause, socket.gaierror):
            return "the host name does not resolve"
        cause = getattr(cause, "os_error", None) or getattr(cause, "__cause__", None)
    return type(error).__name__ if error is not None else "no connection"
