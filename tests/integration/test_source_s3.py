"""The S3 source (service/scanner/sources/s3.py) against a real S3 endpoint (moto's server in its
own process, tests/peers.py): the adapter alone in both addressing styles, over several pages,
with odd keys, and every error a person can meet (wrong credentials, missing bucket, an
endpoint that refuses, does not resolve, never answers or answers something else); then jobs
declared with an S3 source and scanned by the real scanner, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import ResolveResult
from sqlalchemy import select

from service.core.jobspec import S3Source
from service.db.models import Artifact
from service.runtime.app import create_app
from service.scanner.scanner import BackupScanner
from service.scanner.sources import Listing, SourceError, open_source
from service.scanner.sources.lister import list_remote
from service.scanner.sources.s3 import S3Listing
from service.settings import load_settings

from tests.peers import LoopbackResolver, S3Server
from tests.support import add_job, free_port

DAY = timedelta(days=1)
SECRET_ENV = "BM_TEST_S3_SECRET"
WRONG_SECRET = "wrong-secret-3f9c1d7e"  # never to be echoed anywhere


class RecordingResolver(LoopbackResolver):
    """LoopbackResolver that remembers every name it was asked for."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[ResolveResult]:
        self.hosts.append(host)
        return await super().resolve(host, port, family)


@pytest.fixture(autouse=True)
def no_instance_metadata(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """botocore's default credential chain must never look beyond this machine (instance
    metadata is a link-local address) nor read the user's own AWS files."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def declare(server: S3Server, bucket: str, **fields: Any) -> S3Source:
    """An S3 declaration on the peer with its credentials (the secret in SECRET_ENV)."""
    body: dict[str, Any] = {
        "type": "s3", "bucket": bucket, "endpoint_url": server.endpoint_url,
        "access_key_id": server.access_key_id, "secret_access_key": "${" + SECRET_ENV + "}",
    }  # fmt: skip
    body.update(fields)
    return S3Source.model_validate(body)


@pytest.fixture
def secret_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, s3_server.secret_access_key)


def entries(listing: Listing) -> dict[str, tuple[int, int]]:
    return {path: (size, mtime) for path, size, mtime in listing.entries}


def microseconds(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


# --- the adapter ------------------------------------------------------------------------------


@pytest.mark.usefixtures("secret_env")
@pytest.mark.parametrize("style", ["path", "virtual"])
async def test_lists_2500_keys_over_pages_in_both_addressing_styles(
    s3_server: S3Server, style: str
) -> None:
    bucket = s3_server.create_bucket()
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    keys: dict[str, bytes | int] = {f"daily/{n:05d}.tar.gz": n % 7 for n in range(2500)}
    others: dict[str, bytes | int] = {"daily/sub/deeper.tar.gz": 1, "dailyfoo.tar.gz": 2}
    s3_server.put_objects(bucket, {**keys, **others}, last_modified=when)
    resolver = RecordingResolver()
    spec = declare(s3_server, bucket, prefix="daily/", addressing=style,
                   endpoint_url=s3_server.virtual_endpoint_url)  # fmt: skip
    listing = await S3Listing(spec, resolver=resolver).list()

    assert entries(listing) == {
        key.removeprefix("daily/"): (size, microseconds(when)) for key, size in keys.items()
    }
    assert not listing.warnings
    assert set(resolver.hosts) == {f"{bucket}.localhost" if style == "virtual" else "localhost"}
    etag = hashlib.md5(bytes(3)).hexdigest()
    assert listing.details["00003.tar.gz"] == {"etag": etag, "storage_class": "STANDARD"}
    assert len(listing.details) == 2500


@pytest.mark.usefixtures("secret_env")
async def test_recursion_pattern_exclude_and_folder_placeholders(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    s3_server.put_objects(bucket, {
        "db/a.sql.gz": 1, "db/b.txt": 2, "db/.hidden.sql.gz": 3, "db/c.sql.gz.tmp": 4,
        "db/sub/": 0, "db/sub/d.sql.gz": 5, "db/sub/deep/e.sql.gz": 6, "db-old/f.sql.gz": 7,
    })  # fmt: skip
    flat = await S3Listing(declare(s3_server, bucket, prefix="db/", pattern="*.sql.gz")).list()
    assert sorted(entries(flat)) == ["a.sql.gz"]
    deep = await S3Listing(
        declare(s3_server, bucket, prefix="db/", pattern="*.sql.gz", recursive=True)
    ).list()
    assert sorted(entries(deep)) == ["a.sql.gz", "sub/d.sql.gz", "sub/deep/e.sql.gz"]
    assert deep.skipped == ["sub/: a folder placeholder, not an object"]
    # A prefix is taken as is: "db" also lists db-old/... (recursive), named below "db".
    loose = await S3Listing(declare(s3_server, bucket, prefix="db", recursive=True,
                                    exclude=[])).list()  # fmt: skip
    assert sorted(entries(loose)) == sorted([
        "/a.sql.gz", "/b.txt", "/.hidden.sql.gz", "/c.sql.gz.tmp", "/sub/d.sql.gz",
        "/sub/deep/e.sql.gz", "-old/f.sql.gz",
    ])  # fmt: skip


@pytest.mark.usefixtures("secret_env")
async def test_odd_keys_are_data_kept_and_matched_as_given(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    keys: dict[str, bytes | int] = {
        "../etc/passwd": b"1", "a/../b": b"22", "a//b": b"333", "x/ünï cödé ß.bak": 4,
        "line\nbreak": b"55555", "/leading": 6, "trailing space ": 7, "nul\x00key": 8,
        "nul\\x00key": 9, "😀/emoji": 10,
    }  # fmt: skip
    s3_server.put_objects(bucket, keys)
    listing = await S3Listing(declare(s3_server, bucket, recursive=True, exclude=[])).list()
    sizes = {path: size for path, (size, _mtime) in entries(listing).items()}
    expected = {key: v if isinstance(v, int) else len(v) for key, v in keys.items()}
    # A NUL cannot be stored: written \x00, it collides with the key that really reads so. One
    # is kept (the first listed: S3 lists in UTF-8 byte order), and that is said.
    expected["nul\\x00key"] = expected.pop("nul\x00key")
    assert sizes == expected
    assert listing.skipped == ["nul\\x00key: two objects show as this key; one is ignored"]
    # The name (after the last '/') is what `pattern` sees, newline and all.
    only = await S3Listing(declare(s3_server, bucket, recursive=True, pattern="line?b*")).list()
    assert list(entries(only)) == ["line\nbreak"]
    dots = await S3Listing(declare(s3_server, bucket, recursive=True, pattern="b")).list()
    assert sorted(entries(dots)) == ["a/../b", "a//b"]


async def test_secret_from_a_file_and_the_default_credential_chain(
    s3_server: S3Server, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_server.create_bucket()
    s3_server.put_objects(bucket, {"x.bak": 3})
    secret_file = tmp_path / "secret"
    secret_file.write_text(s3_server.secret_access_key + "\n")
    by_file = declare(s3_server, bucket, secret_access_key=None,
                      secret_access_key_file=str(secret_file))  # fmt: skip
    assert list(entries(await S3Listing(by_file).list())) == ["x.bak"]
    # The key id may be a ${VARIABLE} too.
    monkeypatch.setenv("BM_TEST_S3_KEY_ID", s3_server.access_key_id)
    key_by_variable = declare(
        s3_server,
        bucket,
        access_key_id="${BM_TEST_S3_KEY_ID}",
        secret_access_key=None,
        secret_access_key_file=str(secret_file),
    )
    assert list(entries(await S3Listing(key_by_variable).list())) == ["x.bak"]

    chain = declare(s3_server, bucket, access_key_id=None, secret_access_key=None)
    with pytest.raises(SourceError) as raised:
        await S3Listing(chain).list()
    assert "no credentials found" in str(raised.value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    assert list(entries(await S3Listing(chain).list())) == ["x.bak"]


@pytest.mark.usefixtures("secret_env")
async def test_wrong_credentials_are_told_without_the_secret(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bucket = s3_server.create_bucket()
    unknown = declare(s3_server, bucket, access_key_id="AKIAUNKNOWNKEY000000")
    with pytest.raises(SourceError) as raised:
        await S3Listing(unknown, attempts=1).list()
    message = str(raised.value)
    assert message == (
        f"bucket {bucket} at {s3_server.endpoint_url}: the credentials were refused "
        "(InvalidAccessKeyId): check access_key_id and the secret (secret_access_key or "
        "secret_access_key_file)"
    )
    monkeypatch.setenv(SECRET_ENV, WRONG_SECRET)
    with pytest.raises(SourceError) as raised:
        await S3Listing(declare(s3_server, bucket), attempts=1).list()
    assert "the credentials were refused (SignatureDoesNotMatch)" in str(raised.value)
    assert WRONG_SECRET not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__context__ is not None
    assert caplog.records, "botocore logged nothing at DEBUG: the check below would be empty"
    assert WRONG_SECRET not in caplog.text
    assert s3_server.secret_access_key not in caplog.text


@pytest.mark.usefixtures("secret_env")
async def test_missing_bucket(s3_server: S3Server) -> None:
    bucket = s3_server.unique_bucket()
    with pytest.raises(SourceError) as raised:
        await S3Listing(declare(s3_server, bucket)).list()
    assert str(raised.value) == (
        f"bucket {bucket} at {s3_server.endpoint_url}: no such bucket; check bucket (and "
        "endpoint_url, region)"
    )


async def test_unset_secret_variable(s3_server: S3Server) -> None:
    with pytest.raises(SourceError) as raised:
        await S3Listing(declare(s3_server, "some-bucket")).list()
    assert f"environment variable {SECRET_ENV} is not set" in str(raised.value)


@pytest.mark.usefixtures("secret_env")
async def test_refused_and_unresolvable_endpoints(s3_server: S3Server) -> None:
    port = free_port()  # nothing listens there
    refused = declare(s3_server, "a-bucket", endpoint_url=f"http://127.0.0.1:{port}")
    started = asyncio.get_running_loop().time()
    with pytest.raises(SourceError) as raised:
        await S3Listing(refused).list()  # the default retries: three tries
    assert str(raised.value) == (
        f"bucket a-bucket at http://127.0.0.1:{port}: cannot connect (Connection refused); "
        "check endpoint_url (host, port, DNS) and that the service is running"
    )
    assert asyncio.get_running_loop().time() - started < 10
    # A name that does not resolve (LoopbackResolver refuses all but *.localhost: no DNS query
    # leaves this machine).
    nowhere = declare(s3_server, "a-bucket", endpoint_url="http://backups.example:9000")
    with pytest.raises(SourceError) as raised:
        await S3Listing(nowhere, resolver=LoopbackResolver(), attempts=1).list()
    message = str(raised.value)
    assert message.startswith("bucket a-bucket at http://backups.example:9000: cannot connect (")
    assert "check endpoint_url (host, port, DNS)" in message


@pytest.fixture
async def silent_server() -> AsyncIterator[tuple[int, list[str]]]:
    """A TCP server that accepts, reads, and never answers; records each connection's end."""
    events: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        events.append("open")
        while await reader.read(65536):
            pass
        events.append("closed")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], events
    server.close()
    await server.wait_closed()


@pytest.mark.usefixtures("secret_env")
async def test_an_endpoint_that_never_answers(
    s3_server: S3Server, silent_server: tuple[int, list[str]]
) -> None:
    port, events = silent_server
    spec = declare(s3_server, "a-bucket", endpoint_url=f"http://127.0.0.1:{port}")
    with pytest.raises(SourceError) as raised:
        await S3Listing(spec, read_timeout=0.5, attempts=1).list()
    assert str(raised.value) == (
        f"bucket a-bucket at http://127.0.0.1:{port}: no answer within 0.5 s; is the endpoint "
        "overloaded, or is endpoint_url an S3 service at all?"
    )
    await until_closed(events)
    # Under the lister's own time limit (the source's `timeout`), the listing is cancelled and
    # its connection closed.
    events.clear()
    timed = declare(s3_server, "a-bucket", endpoint_url=f"http://127.0.0.1:{port}", timeout=3)
    result = await list_remote(S3Listing(timed), asyncio.Semaphore(1), 60)
    assert isinstance(result, SourceError)
    assert str(result).startswith(f"listing {timed.location()} took longer than 3 s")
    await until_closed(events)


async def until_closed(events: list[str]) -> None:
    """Until the one connection made was closed by the client (10 s at most)."""
    for _ in range(500):
        if "closed" in events:
            break
        await asyncio.sleep(0.02)
    assert events == ["open", "closed"]


@pytest.fixture
async def wrong_server() -> AsyncIterator[Callable[[int, str], str]]:
    """A real HTTP server answering every request with the status and body it is given."""
    answer = {"status": 200, "body": ""}

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(status=answer["status"], text=answer["body"],  # type: ignore[arg-type]
                            content_type="application/xml")  # fmt: skip

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"

    def serve(status: int, body: str) -> str:
        answer.update(status=status, body=body)
        return url

    yield serve
    await runner.cleanup()


@pytest.mark.usefixtures("secret_env")
@pytest.mark.parametrize(
    ("status", "body", "told"),
    [
        (200, "<html><body>Welcome to nginx!</body></html>", "is not a valid S3 listing"),
        # botocore takes an unparseable 200 for an S3 error in a 200 body: a 500.
        (200, "not xml at all <<<", "answered 500 (Internal Server Error): a server error, or"),
        (200, "", "is not a valid S3 listing"),
        (404, "<html>Not Found</html>", "the endpoint answered 404"),
        (403, "<Error><Code>AccessDenied</Code><Message>no</Message></Error>", "access denied"),
    ],
)
async def test_answers_that_are_not_an_s3_listing(
    s3_server: S3Server, wrong_server: Callable[[int, str], str], status: int, body: str,
    told: str,
) -> None:  # fmt: skip
    url = wrong_server(status, body)
    with pytest.raises(SourceError) as raised:
        await S3Listing(declare(s3_server, "a-bucket", endpoint_url=url), attempts=1).list()
    assert str(raised.value).startswith(f"bucket a-bucket at {url}: ")
    assert told in str(raised.value)


def test_open_source_makes_an_s3_listing(s3_server: S3Server) -> None:
    spec = declare(s3_server, "a-bucket", prefix="db/", timeout=30)
    source = open_source(spec)
    assert isinstance(source, S3Listing)
    assert (source.kind, source.timeout) == ("s3", 30)
    assert source.label == f"s3://a-bucket/db/ at {s3_server.endpoint_url}"


# --- end to end: the real scanner, PostgreSQL and SQLite ---------------------------------------


async def scan(sessionmaker: Any, clock: Any) -> Any:
    async with sessionmaker() as session:
        return await BackupScanner(session, clock=clock, trigger="test").scan_all_jobs()


async def stored(sessionmaker: Any) -> dict[str, Artifact]:
    async with sessionmaker() as session:
        rows = (await session.scalars(select(Artifact).order_by(Artifact.id))).all()
        return {row.path: row for row in rows}


def source(server: S3Server, bucket: str, **fields: Any) -> dict[str, Any]:
    return declare(server, bucket, **fields).model_dump(exclude_none=True)


@pytest.mark.usefixtures("secret_env")
async def test_a_job_on_s3_is_judged_and_its_objects_recorded(
    s3_server: S3Server, sessionmaker: Any, clock: Any
) -> None:
    bucket = s3_server.create_bucket()
    now = clock.now
    s3_server.put_objects(
        bucket,
        {"db/2.sql.gz": 2000, "db/1.sql.gz": 1000, "db/new\nline.sql.gz": 1500, "x.sql.gz": 9},
        last_modified={"db/2.sql.gz": now - timedelta(hours=2), "db/1.sql.gz": now - DAY,
                       "db/new\nline.sql.gz": now - 3 * DAY, "x.sql.gz": now},
    )  # fmt: skip
    await add_job(sessionmaker, now - 10 * DAY, name="s3-db",
                  source=source(s3_server, bucket, prefix="db/", pattern="*.sql.gz"),
                  rules={"min_size": 500})  # fmt: skip
    await add_job(sessionmaker, now - 10 * DAY, name="s3-small",
                  source=source(s3_server, bucket, prefix="db/", pattern="2.*"),
                  rules={"min_size": 5000})  # fmt: skip
    await add_job(sessionmaker, now - 10 * DAY, name="s3-empty",
                  source=source(s3_server, bucket, prefix="nothing/"))  # fmt: skip

    report = await scan(sessionmaker, clock)
    jobs = {job.name: job for job in report.jobs}
    assert (jobs["s3-db"].status, jobs["s3-db"].reasons, jobs["s3-db"].new) == ("ok", [], 3)
    assert jobs["s3-small"].status == "critical"
    assert [r["code"] for r in jobs["s3-small"].reasons] == ["too_small"]
    assert jobs["s3-empty"].status == "critical"
    assert jobs["s3-empty"].reasons[0]["code"] == "missing"
    assert f"s3://{bucket}/nothing/" in jobs["s3-empty"].reasons[0]["message"]

    rows = await stored(sessionmaker)
    assert sorted(rows) == ["1.sql.gz", "2.sql.gz", "new\nline.sql.gz"]
    assert rows["1.sql.gz"].size == 1000
    assert rows["1.sql.gz"].mtime.replace(tzinfo=UTC) == now - DAY
    etag = hashlib.md5(bytes(1000)).hexdigest()
    assert rows["1.sql.gz"].details == {"etag": etag, "storage_class": "STANDARD"}

    # An object deleted is gone; a new one is new; two days later with nothing new: late.
    async with s3_server.client() as client:
        await client.delete_object(Bucket=bucket, Key="db/1.sql.gz")
    s3_server.put_objects(bucket, {"db/3.sql.gz": 2100}, last_modified=now)
    clock.advance(minutes=5)
    report = await scan(sessionmaker, clock)
    job = next(job for job in report.jobs if job.name == "s3-db")
    assert (job.status, job.new, job.gone) == ("ok", 1, 1)
    rows = await stored(sessionmaker)
    assert rows["1.sql.gz"].gone_since is not None
    assert rows["3.sql.gz"].gone_since is None

    clock.advance(days=2)
    report = await scan(sessionmaker, clock)
    job = next(job for job in report.jobs if job.name == "s3-db")
    assert job.status == "critical"
    assert [r["code"] for r in job.reasons] == ["late"]


async def test_an_unreadable_bucket_is_unknown_marks_nothing_gone_and_tells_no_secret(
    s3_server: S3Server, database_url: str, clock: Any, aiohttp_client: Any,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(SECRET_ENV, s3_server.secret_access_key)
    bucket = s3_server.create_bucket()
    s3_server.put_objects(bucket, {"a.bak": 10, "b.bak": 20}, last_modified=clock.now)
    app = create_app(load_settings(database_url=database_url), scheduler=False)
    client = await aiohttp_client(app)
    body = {"name": "offsite", "schedule": {"every": "1d"}, "source": source(s3_server, bucket)}
    created = await client.post("/api/v1/jobs", json=body)
    assert created.status == 201, await created.text()
    scanned = await (await client.post("/api/v1/jobs/offsite/scan")).json()
    assert (scanned["status"], scanned["artifact_count"]) == ("ok", 2), scanned

    monkeypatch.setenv(SECRET_ENV, WRONG_SECRET)
    scanned = await (await client.post("/api/v1/jobs/offsite/scan")).json()
    assert scanned["status"] == "unknown", scanned
    answer = await (await client.get("/api/v1/jobs/offsite")).text()
    assert "the credentials were refused (SignatureDoesNotMatch)" in answer
    assert f"bucket {bucket} at {s3_server.endpoint_url}" in answer
    artifacts = await (await client.get("/api/v1/jobs/offsite/artifacts")).json()
    assert sorted(item["path"] for item in artifacts["items"]) == ["a.bak", "b.bak"]
    assert all(item["details"]["etag"] for item in artifacts["items"])
    for text in (answer, str(artifacts), caplog.text, await (await client.get("/")).text()):
        assert WRONG_SECRET not in text
        assert s3_server.secret_access_key not in text
