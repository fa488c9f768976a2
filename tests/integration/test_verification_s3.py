"""Verification of S3 objects by streaming them (issue 14), what only S3 shows: moto's real S3
server in its own process (tests/peers.py), the real scanner and the real verifier; on
PostgreSQL and SQLite.

A 50 MB object is verified without its size in memory; a connection cut in the middle of a body
is unreadable, never corrupt. The cases every source shares are in
test_verification_sources.py (which uses this module's objects and environment).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import random
import tarfile
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.core.scan_options import ScanOptions
from service.runtime.verifier import Verifier
from service.scanner.scanner import run_scanner
from service.verify.formats import grouped

from tests.integration.test_verification import FAST, all_verified, rows, until, verify_all
from tests.peers import S3Server
from tests.support import add_job

SECRET_ENV = "BM_TEST_S3_VERIFY_SECRET"


def s3_environment(server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The job's secret in the environment; botocore never looks beyond this machine."""
    monkeypatch.setenv(SECRET_ENV, server.secret_access_key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture(autouse=True)
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    s3_environment(s3_server, monkeypatch, tmp_path)


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
