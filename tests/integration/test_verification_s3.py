"""Verification of S3 objects by streaming them (issue 14): moto's real S3 server in its own
process (tests/peers.py), the real scanner and the real verifier; on PostgreSQL and SQLite.

A good .tar.gz object is ok (and its sidecar object matches); a truncated .gz object is corrupt
at its byte; a SHA256SUMS object that does not match is a checksum_mismatch; an object replaced
while it is read is not judged and is verified again; an object deleted after its listing is
unreadable, never corrupt; a 50 MB object is verified without its size in memory.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import random
import tarfile
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from service.core.scan_options import ScanOptions
from service.db.models import ArtifactVerification, Job
from service.runtime.verifier import Verifier, VerifyOptions
from service.scanner.scanner import run_scanner
from service.verify.formats import grouped

from tests.integration.test_verification import FAST, all_verified, rows, until, verify_all
from tests.peers import S3Server
from tests.support import add_job, get_job

SECRET_ENV = "BM_TEST_S3_VERIFY_SECRET"


@pytest.fixture(autouse=True)
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The job's secret in the environment; botocore never looks beyond this machine."""
    monkeypatch.setenv(SECRET_ENV, s3_server.secret_access_key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


async def put(server: S3Server, bucket: str, objects: dict[str, bytes]) -> None:
    async with server.client() as client:
        for key, body in objects.items():
            await client.put_object(Bucket=bucket, Key=key, Body=body)


async def declare(server: S3Server, sessionmaker: Any, bucket: str, **verify: Any) -> int:
    return await add_job(
        sessionmaker, datetime.now(UTC) - timedelta(days=2), name="s3db",
        source={"type": "s3", "bucket": bucket, "prefix": "db/", "pattern": "*.gz",
                "endpoint_url": server.endpoint_url, "access_key_id": server.access_key_id,
                "secret_access_key": "${" + SECRET_ENV + "}"},
        verify=verify or {"archive": True, "checksum": "sidecar"},
    )  # fmt: skip


async def scan(sessionmaker: Any) -> None:
    async with sessionmaker() as session:
        await run_scanner(session, ScanOptions(), trigger="manual")


async def judged(sessionmaker: Any, name: str, status: str) -> Job:
    """The job, judged by the verifier with the recorded result, with this status."""
    job = await get_job(sessionmaker, name)
    assert job.status == status, job.reasons
    return job


def tar_gz(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1) as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return raw.getvalue()


def noise(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


async def test_a_good_tar_gz_object_and_its_sidecar_are_ok(s3_server, sessionmaker):
    bucket = s3_server.create_bucket()
    data = tar_gz({"dump.sql": noise(300_000), "etc/conf": b"x = 1\n"})
    digest = hashlib.sha256(data).hexdigest()
    await put(s3_server, bucket, {
        "db/2026-11-30.tar.gz": data,
        "db/2026-11-30.tar.gz.sha256": f"{digest}  2026-11-30.tar.gz\n".encode(),
    })  # fmt: skip
    job_id = await declare(s3_server, sessionmaker, bucket)
    await scan(sessionmaker)
    found = await verify_all(sessionmaker, job_id)
    row = found["2026-11-30.tar.gz"]
    assert row.outcome == "ok", row.detail
    assert "gzip and tar (2 members) read through" in row.detail
    assert row.sidecar == "2026-11-30.tar.gz.sha256"
    assert row.digest == digest
    assert row.bytes_read == len(data)
    assert (await get_job(sessionmaker, "s3db")).status == "ok"


async def test_a_truncated_gz_object_is_corrupt_at_its_byte(s3_server, sessionmaker):
    bucket = s3_server.create_bucket()
    data = gzip.compress(noise(400_000), compresslevel=1)
    cut = data[: len(data) // 2]
    await put(s3_server, bucket, {"db/2026-11-29.sql.gz": cut})
    job_id = await declare(s3_server, sessionmaker, bucket, archive=True)
    await scan(sessionmaker)
    found = await verify_all(sessionmaker, job_id)
    row = found["2026-11-29.sql.gz"]
    assert row.outcome == "corrupt", row.detail
    assert f"truncated at byte {grouped(len(cut))}" in row.detail
    job = await judged(sessionmaker, "s3db", "critical")
    assert [r["code"] for r in job.reasons] == ["corrupt"]


async def test_a_sums_object_that_does_not_match_is_checksum_mismatch(s3_server, sessionmaker):
    bucket = s3_server.create_bucket()
    data = gzip.compress(noise(100_000), compresslevel=1)
    other = hashlib.sha256(b"other bytes").hexdigest()
    await put(s3_server, bucket, {
        "db/2026-11-28.sql.gz": data,
        "db/SHA256SUMS": f"{'0' * 64}  2026-11-27.sql.gz\n{other}  2026-11-28.sql.gz\n".encode(),
    })  # fmt: skip
    job_id = await declare(s3_server, sessionmaker, bucket, checksum="sidecar")
    await scan(sessionmaker)
    found = await verify_all(sessionmaker, job_id)
    row = found["2026-11-28.sql.gz"]
    assert row.outcome == "checksum_mismatch", row.detail
    assert row.sidecar == "SHA256SUMS"
    assert other in row.detail and hashlib.sha256(data).hexdigest() in row.detail
    job = await judged(sessionmaker, "s3db", "critical")
    assert [r["code"] for r in job.reasons] == ["checksum_mismatch"]


async def test_an_object_replaced_while_read_is_not_corrupt_and_verified_again(
    s3_server, sessionmaker
):
    bucket = s3_server.create_bucket()
    await put(s3_server, bucket, {"db/big.sql.gz": gzip.compress(noise(3_000_000), 1)})
    job_id = await declare(s3_server, sessionmaker, bucket, archive=True)
    await scan(sessionmaker)
    # 1 MB/s: the first read takes about 3 s; the object is replaced during it.
    slow = VerifyOptions(bytes_per_second=1_000_000, poll_seconds=0.05, retry_seconds=0.1)
    verifier = Verifier(sessionmaker, slow)
    await verifier.start()
    try:

        async def leased() -> bool:
            row = (await rows(sessionmaker, job_id)).get("big.sql.gz")
            return row is not None and row.lease_until is not None

        await until(leased, 10, "the verifier took the object")
        await asyncio.sleep(0.5)  # well into the read
        new = gzip.compress(noise(100_000, seed=2), 1)
        await put(s3_server, bucket, {"db/big.sql.gz": new})

        async def retried() -> bool:
            return verifier.stats.changed >= 1

        await until(retried, 15, "the change was seen")
        row = (await rows(sessionmaker, job_id))["big.sql.gz"]
        assert row.outcome is None and row.verified_at is None  # nothing recorded
        assert (await get_job(sessionmaker, "s3db")).status != "critical"
        await asyncio.sleep(1.1)  # a LastModified of another second than the listing's
        await scan(sessionmaker)  # the new version listed: verified then
        await until(all_verified(sessionmaker, job_id, 1), 15, "verified again")
    finally:
        await verifier.stop(5)
    row = (await rows(sessionmaker, job_id))["big.sql.gz"]
    assert row.outcome == "ok", row.detail
    assert row.bytes_read == len(new)


async def test_an_object_deleted_after_its_listing_is_unreadable_not_corrupt(
    s3_server, sessionmaker
):
    bucket = s3_server.create_bucket()
    await put(s3_server, bucket, {"db/gone.sql.gz": gzip.compress(noise(10_000), 1)})
    job_id = await declare(s3_server, sessionmaker, bucket, archive=True)
    await scan(sessionmaker)
    async with s3_server.client() as client:
        await client.delete_object(Bucket=bucket, Key="db/gone.sql.gz")
    verifier = Verifier(sessionmaker, FAST)
    await verifier.start()
    try:
        await until(all_verified(sessionmaker, job_id, 1), 30, "verified")
    finally:
        await verifier.stop(5)
    # The job judged again since: the listing marked the artifact gone; its result stays.
    async with sessionmaker() as session:
        row = await session.scalar(
            select(ArtifactVerification).where(ArtifactVerification.job_id == job_id)
        )
    assert row is not None
    assert row.outcome == "unreadable", row.detail
    assert f"s3://{bucket}/db/gone.sql.gz cannot be read" in row.detail
    assert "is gone" in row.detail


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_50_mb_object_is_streamed_in_bounded_memory(s3_server, sessionmaker):
    bucket = s3_server.create_bucket()
    size = 50_000_000
    data = gzip.compress(noise(size), compresslevel=1)
    length = len(data)
    await put(s3_server, bucket, {"db/huge.sql.gz": data})
    del data
    job_id = await declare(s3_server, sessionmaker, bucket, archive=True)
    await scan(sessionmaker)
    await asyncio.sleep(0)
    baseline = rss()
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        verifier = Verifier(sessionmaker, FAST)
        await verifier.start()
        try:
            await until(all_verified(sessionmaker, job_id, 1), 60, "verified")
        finally:
            await verifier.stop(5)
    finally:
        done.set()
        sampler.join()
    row = (await rows(sessionmaker, job_id))["huge.sql.gz"]
    assert row.outcome == "ok", row.detail
    assert row.bytes_read == length
    grown = peak - baseline
    print(f"50 MB object verified: RSS grew {grown / 1e6:.1f} MB")
    assert grown < 20_000_000, f"RSS grew {grown} bytes while {length} were streamed"


async def test_stopped_mid_stream_loses_nothing(s3_server, sessionmaker):
    bucket = s3_server.create_bucket()
    await put(s3_server, bucket, {"db/slow.sql.gz": gzip.compress(noise(4_000_000), 1)})
    job_id = await declare(s3_server, sessionmaker, bucket, archive=True)
    await scan(sessionmaker)
    first = Verifier(sessionmaker, VerifyOptions(bytes_per_second=500_000, poll_seconds=0.05))
    await first.start()

    async def leased() -> bool:
        row = (await rows(sessionmaker, job_id)).get("slow.sql.gz")
        return row is not None and row.lease_until is not None

    await until(leased, 10, "the verifier took the object")
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await first.stop(5)
    assert time.monotonic() - started < 3  # the reader stopped at its next piece
    row = (await rows(sessionmaker, job_id))["slow.sql.gz"]
    assert row.verified_at is None and row.lease_until is None  # given back, nothing recorded
    found = await verify_all(sessionmaker, job_id)
    assert found["slow.sql.gz"].outcome == "ok", found["slow.sql.gz"].detail


async def cutting_proxy(port: int, after: int) -> asyncio.Server:
    """A TCP proxy to 127.0.0.1:`port` that closes each connection once `after` bytes of
    answers went through it (a connection dropped in the middle of a body)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cut: bool) -> None:
        sent = 0
        try:
            while data := await reader.read(65536):
                if cut and sent + len(data) > after:
                    writer.write(data[: after - sent])
                    await writer.drain()
                    break
                sent += len(data)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", port)
        up = asyncio.create_task(pipe(client_r, server_w, False))
        await pipe(server_r, client_w, True)
        up.cancel()
        server_w.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_a_connection_cut_mid_body_is_unreadable_never_corrupt(s3_server, sessionmaker):
    bucket = s3_server.create_bucket()
    data = gzip.compress(noise(600_000), 1)
    await put(s3_server, bucket, {"db/cut.sql.gz": data})
    proxy = await cutting_proxy(s3_server.port, after=200_000)
    port = proxy.sockets[0].getsockname()[1]
    try:
        job_id = await add_job(
            sessionmaker, datetime.now(UTC) - timedelta(days=2), name="s3db",
            source={"type": "s3", "bucket": bucket, "prefix": "db/",
                    "endpoint_url": f"http://127.0.0.1:{port}",
                    "access_key_id": s3_server.access_key_id,
                    "secret_access_key": "${" + SECRET_ENV + "}"},
            verify={"archive": True},
        )  # fmt: skip
        await scan(sessionmaker)
        found = await verify_all(sessionmaker, job_id)
    finally:
        proxy.close()
        await proxy.wait_closed()
    row = found["cut.sql.gz"]
    assert row.outcome == "unreadable", row.detail
    assert f"s3://{bucket}/db/cut.sql.gz cannot be read at byte " in row.detail
    assert 0 < row.bytes_read < len(data)
    assert f"at byte {grouped(row.bytes_read)}: " in row.detail
    assert "the connection was dropped in the middle of the answer" in row.detail
