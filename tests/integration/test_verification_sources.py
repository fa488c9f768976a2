"""Verification cases that are the same for every source of files (issue 14): a local directory,
an S3 bucket (moto's real server, read by streaming) and an SFTP host (a real OpenSSH sshd),
with the real scanner and the real verifier; on PostgreSQL and SQLite.

A good .tar.gz and its sidecar are ok (and shown in the API, the job page and the metrics); a
truncated .gz is corrupt at its byte; a sidecar (FILE.sha256, or a SHA256SUMS in a
subdirectory) that does not match is a checksum_mismatch; a missing sidecar is reported, not a
mismatch; a file rewritten while it is read is not judged and is verified again; a file deleted
after its listing is unreadable, never corrupt; a verifier stopped in the middle loses nothing.

What only one source does is beside its own: tests/integration/test_verification.py (local:
ordering, leases across replicas, repository checks, the app), test_verification_s3.py (a large
object in bounded memory, a connection cut mid-body).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest
from sqlalchemy import select

from service.core.scan_options import ScanOptions
from service.db.models import ArtifactVerification
from service.runtime.verifier import Verifier, VerifyOptions
from service.scanner.scanner import run_scanner
from service.verify.formats import grouped

from tests.integration.test_verification import FAST, all_verified, rows, until, verify_all
from tests.integration.test_verification_s3 import SECRET_ENV, noise, s3_environment, tar_gz
from tests.peers import S3Server, SshServer
from tests.support import add_job, get_job

HOUR = timedelta(hours=1)


def write(path: Path, data: bytes, age: timedelta) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    when = (datetime.now(UTC) - age).timestamp()
    os.utime(path, (when, when))


class Place(Protocol):
    """Where a job's files are: its source, and how a test writes and deletes them there."""

    source: dict[str, Any]

    async def write(self, name: str, data: bytes, age: timedelta = HOUR) -> None: ...
    async def delete(self, name: str) -> None: ...
    def gone(self, name: str) -> list[str]:
        """What the detail of file `name`, deleted after its listing, says."""
        ...


@dataclass
class Local:
    root: Path

    @property
    def source(self) -> dict[str, Any]:
        return {"type": "local", "path": str(self.root)}

    async def write(self, name: str, data: bytes, age: timedelta = HOUR) -> None:
        write(self.root / name, data, age)

    async def delete(self, name: str) -> None:
        (self.root / name).unlink()

    def gone(self, name: str) -> list[str]:
        return [f"{self.root / name} cannot be read: No such file or directory"]


@dataclass
class S3:
    server: S3Server
    bucket: str

    @property
    def source(self) -> dict[str, Any]:
        return {"type": "s3", "bucket": self.bucket, "prefix": "db/",
                "endpoint_url": self.server.endpoint_url,
                "access_key_id": self.server.access_key_id,
                "secret_access_key": "${" + SECRET_ENV + "}"}  # fmt: skip

    async def write(self, name: str, data: bytes, age: timedelta = HOUR) -> None:
        """Put the object (its LastModified is now whatever `age` says)."""
        async with self.server.client() as client:
            await client.put_object(Bucket=self.bucket, Key=f"db/{name}", Body=data)

    async def delete(self, name: str) -> None:
        async with self.server.client() as client:
            await client.delete_object(Bucket=self.bucket, Key=f"db/{name}")

    def gone(self, name: str) -> list[str]:
        return [f"s3://{self.bucket}/db/{name} cannot be read", "is gone"]


@dataclass
class Sftp:
    server: SshServer

    @property
    def source(self) -> dict[str, Any]:
        s = self.server
        return {"type": "sftp", "host": s.host, "port": s.port, "username": s.username,
                "key_file": str(s.client_key), "known_hosts": str(s.known_hosts),
                "path": str(s.remote_dir)}  # fmt: skip

    async def write(self, name: str, data: bytes, age: timedelta = HOUR) -> None:
        write(self.server.remote_dir / name, data, age)

    async def delete(self, name: str) -> None:
        (self.server.remote_dir / name).unlink()

    def gone(self, name: str) -> list[str]:
        return [f"{self.server.remote_dir}/{name} cannot be read: "]


@pytest.fixture(params=["local", "s3", "sftp"])
def place(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Place:
    """Each test using this runs on each source: a local directory, S3, SFTP."""
    if request.param == "local":
        return Local(tmp_path / "db")
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        s3_environment(server, monkeypatch, tmp_path)
        return S3(server, server.create_bucket())
    return Sftp(request.getfixturevalue("sshd_server"))


async def declare(place: Place, sessionmaker: Any, *, recursive: bool = False,
                  **verify: Any) -> int:  # fmt: skip
    return await add_job(
        sessionmaker, datetime.now(UTC) - timedelta(days=2), name="db",
        source={**place.source, "pattern": "*.gz", "recursive": recursive},
        verify=verify or {"archive": True, "checksum": "sidecar"},
    )  # fmt: skip


async def scan(sessionmaker: Any) -> None:
    async with sessionmaker() as session:
        await run_scanner(session, ScanOptions(), trigger="manual")


async def test_a_good_tar_gz_and_its_sidecar_are_ok_and_shown(
    place, sessionmaker, aiohttp_client, make_app
):
    data = tar_gz({"dump.sql": noise(300_000), "etc/conf": b"x = 1\n"})
    digest = hashlib.sha256(data).hexdigest()
    await place.write("full.tar.gz", data)
    await place.write("full.tar.gz.sha256", f"{digest}  full.tar.gz\n".encode())
    job_id = await declare(place, sessionmaker)
    await scan(sessionmaker)
    row = (await verify_all(sessionmaker, job_id))["full.tar.gz"]
    assert row.outcome == "ok", row.detail
    assert "gzip and tar (2 members) read through" in row.detail
    assert row.sidecar == "full.tar.gz.sha256" and row.digest == digest
    assert row.bytes_read == len(data)
    job = await get_job(sessionmaker, "db")
    assert job.status == "ok", job.reasons

    client = await aiohttp_client(make_app())
    answer = await (await client.get("/api/v1/jobs/db/artifacts")).json()
    (item,) = answer["items"]
    assert item["verification"]["state"] == "ok"
    assert item["verification"]["bytes_read"] == len(data)
    assert item["verification"]["verifying"] is False
    page = await (await client.get("/jobs/db")).text()
    assert "✓ ok" in page
    metrics = await (await client.get("/metrics")).text()
    assert 'backup_verification_last_timestamp_seconds{backup_job="db"}' in metrics
    assert 'backup_verification_artifacts{outcome="ok"} 1.0' in metrics


async def test_a_truncated_gz_is_corrupt_at_its_byte(place, sessionmaker, aiohttp_client, make_app):
    data = gzip.compress(noise(400_000), compresslevel=1)
    cut = data[: len(data) // 2]
    await place.write("db.sql.gz", cut)
    job_id = await declare(place, sessionmaker, archive=True)
    await scan(sessionmaker)
    row = (await verify_all(sessionmaker, job_id))["db.sql.gz"]
    assert row.outcome == "corrupt", row.detail
    assert f"truncated at byte {grouped(len(cut))}" in row.detail
    # The verifier had the job judged again at once.
    job = await get_job(sessionmaker, "db")
    assert job.status == "critical", job.reasons
    (reason,) = job.reasons
    assert reason["code"] == "corrupt"
    assert reason["message"].startswith("newest backup db.sql.gz is corrupt: ")
    assert row.detail in reason["message"]

    client = await aiohttp_client(make_app())
    page = await (await client.get("/jobs/db")).text()
    assert "✗ corrupt" in page


@pytest.mark.parametrize("sums", [False, True], ids=["FILE.sha256", "SHA256SUMS"])
async def test_a_sidecar_that_does_not_match_is_checksum_mismatch(place, sessionmaker, sums):
    """A FILE.sha256 beside it; or a SHA256SUMS of several files in a subdirectory (of a
    recursive job): the sidecar is looked for in the file's own directory."""
    data = gzip.compress(noise(100_000), compresslevel=1)
    other = hashlib.sha256(b"other bytes").hexdigest()
    if sums:
        name, sidecar = "sub/db.sql.gz", "sub/SHA256SUMS"
        content = f"{'0' * 64}  old.sql.gz\n{other}  db.sql.gz\n"
    else:
        name, sidecar = "db.sql.gz", "db.sql.gz.sha256"
        content = f"{other}  db.sql.gz\n"
    await place.write(name, data)
    await place.write(sidecar, content.encode())
    job_id = await declare(place, sessionmaker, recursive=sums, checksum="sidecar")
    await scan(sessionmaker)
    row = (await verify_all(sessionmaker, job_id))[name]
    assert row.outcome == "checksum_mismatch", row.detail
    assert row.sidecar == sidecar
    assert other in row.detail and hashlib.sha256(data).hexdigest() in row.detail
    job = await get_job(sessionmaker, "db")
    assert job.status == "critical", job.reasons
    assert [r["code"] for r in job.reasons] == ["checksum_mismatch"]
    assert other in job.reasons[0]["message"]
    assert sidecar in job.reasons[0]["message"]


async def test_a_missing_sidecar_is_reported_not_a_mismatch(place, sessionmaker):
    await place.write("db.sql.gz", gzip.compress(noise(50_000), compresslevel=1))
    job_id = await declare(place, sessionmaker)
    await scan(sessionmaker)
    row = (await verify_all(sessionmaker, job_id))["db.sql.gz"]
    assert row.outcome == "ok", row.detail
    job = await get_job(sessionmaker, "db")
    assert job.status == "warning", job.reasons
    assert [r["code"] for r in job.reasons] == ["checksum_missing"]


async def test_a_file_rewritten_while_read_is_not_corrupt_and_verified_again(place, sessionmaker):
    await place.write("big.sql.gz", gzip.compress(noise(4_000_000), 1))
    job_id = await declare(place, sessionmaker, archive=True)
    await scan(sessionmaker)
    # 1 MB/s: the read lasts about 3 s from its first piece; the file is rewritten during it.
    slow = VerifyOptions(bytes_per_second=1_000_000, poll_seconds=0.05, retry_seconds=0.1)
    verifier = Verifier(sessionmaker, slow)
    await verifier.start()
    try:

        async def reading() -> bool:  # the first piece read: not before (a slow start-up)
            return verifier.bytes_taken > 0

        await until(reading, 20, "the verifier reads the file")
        assert verifier.stats.verified == 0
        new = gzip.compress(noise(100_000, seed=2), 1)
        await place.write("big.sql.gz", new, age=timedelta(minutes=30))  # in place, new content

        async def retried() -> bool:
            return verifier.stats.changed >= 1

        await until(retried, 15, "the change was seen")
        row = (await rows(sessionmaker, job_id))["big.sql.gz"]
        assert row.outcome is None and row.verified_at is None  # nothing recorded
        assert (await get_job(sessionmaker, "db")).status == "ok"
        await asyncio.sleep(1.1)  # S3: a LastModified of another second than the listing's
        await scan(sessionmaker)  # the new version listed: verified then
        await until(all_verified(sessionmaker, job_id, 1), 15, "verified again")
    finally:
        await verifier.stop(5)
    row = (await rows(sessionmaker, job_id))["big.sql.gz"]
    assert row.outcome == "ok", row.detail
    assert row.size == len(new) and row.bytes_read == len(new)
    assert (await get_job(sessionmaker, "db")).status == "ok"


async def test_a_file_deleted_after_its_listing_is_unreadable_not_corrupt(place, sessionmaker):
    await place.write("gone.sql.gz", gzip.compress(noise(10_000), 1))
    job_id = await declare(place, sessionmaker, archive=True)
    await scan(sessionmaker)
    await place.delete("gone.sql.gz")

    async def result() -> ArtifactVerification | None:
        # The job is judged again since: the listing marks the artifact gone; its result stays.
        async with sessionmaker() as session:
            return await session.scalar(
                select(ArtifactVerification).where(ArtifactVerification.job_id == job_id)
            )

    async def verified() -> bool:
        row = await result()
        return row is not None and row.verified_at is not None

    verifier = Verifier(sessionmaker, FAST)
    await verifier.start()
    try:
        await until(verified, 30, "verified")
    finally:
        await verifier.stop(5)
    row = await result()
    assert row is not None
    assert row.outcome == "unreadable", row.detail
    for said in place.gone("gone.sql.gz"):
        assert said in row.detail


async def test_stopped_mid_verification_loses_nothing(place, sessionmaker):
    await place.write("slow.sql.gz", gzip.compress(noise(4_000_000), 1))
    job_id = await declare(place, sessionmaker, archive=True)
    await scan(sessionmaker)
    first = Verifier(sessionmaker, VerifyOptions(bytes_per_second=500_000, poll_seconds=0.05))
    await first.start()

    async def reading() -> bool:  # its first piece read (the start-up is not what is timed)
        return first.bytes_taken > 0

    await until(reading, 20, "the verifier reads the file")
    await asyncio.sleep(0.3)  # into the read
    started = time.monotonic()
    await first.stop(5)
    assert time.monotonic() - started < 3  # the reader stopped at its next read
    row = (await rows(sessionmaker, job_id))["slow.sql.gz"]
    assert row.verified_at is None and row.lease_until is None  # given back, nothing recorded
    # The next start verifies it.
    found = await verify_all(sessionmaker, job_id)
    assert found["slow.sql.gz"].outcome == "ok", found["slow.sql.gz"].detail
