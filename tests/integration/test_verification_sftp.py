"""Verification of files on an SFTP host by streaming them (issue 14): a real OpenSSH sshd
(tests/peers.py) serving this machine's files, the real scanner and the real verifier; on
PostgreSQL and SQLite.

A good .tar.gz and its sidecar are ok; a truncated .gz is corrupt at its byte; a SHA256SUMS that
does not match is a checksum_mismatch; a file rewritten while it is read is not judged and is
verified again; a file deleted after its listing is unreadable, never corrupt.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from service.core.scan_options import ScanOptions
from service.db.models import ArtifactVerification
from service.runtime.verifier import Verifier, VerifyOptions
from service.scanner.scanner import run_scanner
from service.verify.formats import grouped

from tests.integration.test_verification import FAST, all_verified, rows, until, verify_all
from tests.integration.test_verification_s3 import judged, noise, tar_gz
from tests.peers import SshServer
from tests.support import add_job, get_job

HOUR = timedelta(hours=1)


def write(path: Path, data: bytes, age: timedelta = HOUR) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    when = (datetime.now(UTC) - age).timestamp()
    os.utime(path, (when, when))


async def declare(server: SshServer, sessionmaker: Any, **verify: Any) -> int:
    return await add_job(
        sessionmaker, datetime.now(UTC) - timedelta(days=2), name="remote",
        source={"type": "sftp", "host": server.host, "port": server.port,
                "username": server.username, "key_file": str(server.client_key),
                "known_hosts": str(server.known_hosts), "path": str(server.remote_dir),
                "pattern": "*.gz"},
        verify=verify or {"archive": True, "checksum": "sidecar"},
    )  # fmt: skip


async def scan(sessionmaker: Any) -> None:
    async with sessionmaker() as session:
        await run_scanner(session, ScanOptions(), trigger="manual")


async def test_a_good_tar_gz_and_its_sidecar_are_ok(sshd_server, sessionmaker):
    data = tar_gz({"dump.sql": noise(300_000), "etc/conf": b"x = 1\n"})
    digest = hashlib.sha256(data).hexdigest()
    write(sshd_server.remote_dir / "full.tar.gz", data)
    write(sshd_server.remote_dir / "full.tar.gz.sha256", f"{digest}  full.tar.gz\n".encode())
    job_id = await declare(sshd_server, sessionmaker)
    await scan(sessionmaker)
    row = (await verify_all(sessionmaker, job_id))["full.tar.gz"]
    assert row.outcome == "ok", row.detail
    assert "gzip and tar (2 members) read through" in row.detail
    assert row.sidecar == "full.tar.gz.sha256" and row.digest == digest
    assert row.bytes_read == len(data)
    assert (await get_job(sessionmaker, "remote")).status == "ok"


async def test_a_truncated_gz_is_corrupt_at_its_byte(sshd_server, sessionmaker):
    data = gzip.compress(noise(400_000), compresslevel=1)
    cut = data[: len(data) // 2]
    write(sshd_server.remote_dir / "db.sql.gz", cut)
    job_id = await declare(sshd_server, sessionmaker, archive=True)
    await scan(sessionmaker)
    row = (await verify_all(sessionmaker, job_id))["db.sql.gz"]
    assert row.outcome == "corrupt", row.detail
    assert f"truncated at byte {grouped(len(cut))}" in row.detail
    job = await judged(sessionmaker, "remote", "critical")
    assert [r["code"] for r in job.reasons] == ["corrupt"]


async def test_a_sums_file_that_does_not_match_is_checksum_mismatch(sshd_server, sessionmaker):
    data = gzip.compress(noise(100_000), compresslevel=1)
    other = hashlib.sha256(b"other bytes").hexdigest()
    write(sshd_server.remote_dir / "sub" / "db.sql.gz", data)
    write(sshd_server.remote_dir / "sub" / "SHA256SUMS", f"{other}  db.sql.gz\n".encode())
    job_id = await add_job(
        sessionmaker, datetime.now(UTC) - timedelta(days=2), name="remote",
        source={"type": "sftp", "host": sshd_server.host, "port": sshd_server.port,
                "username": sshd_server.username, "key_file": str(sshd_server.client_key),
                "known_hosts": str(sshd_server.known_hosts),
                "path": str(sshd_server.remote_dir), "pattern": "*.gz", "recursive": True},
        verify={"checksum": "sidecar"},
    )  # fmt: skip
    await scan(sessionmaker)
    row = (await verify_all(sessionmaker, job_id))["sub/db.sql.gz"]
    assert row.outcome == "checksum_mismatch", row.detail
    assert row.sidecar == "sub/SHA256SUMS"
    assert other in row.detail and hashlib.sha256(data).hexdigest() in row.detail
    job = await judged(sessionmaker, "remote", "critical")
    assert [r["code"] for r in job.reasons] == ["checksum_mismatch"]


async def test_a_file_rewritten_while_read_is_not_corrupt_and_verified_again(
    sshd_server, sessionmaker
):
    path = sshd_server.remote_dir / "big.sql.gz"
    write(path, gzip.compress(noise(3_000_000), 1))
    job_id = await declare(sshd_server, sessionmaker, archive=True)
    await scan(sessionmaker)
    slow = VerifyOptions(bytes_per_second=1_000_000, poll_seconds=0.05, retry_seconds=0.1)
    verifier = Verifier(sessionmaker, slow)
    await verifier.start()
    try:

        async def leased() -> bool:
            row = (await rows(sessionmaker, job_id)).get("big.sql.gz")
            return row is not None and row.lease_until is not None

        await until(leased, 10, "the verifier took the file")
        await asyncio.sleep(0.5)  # well into the read (1 MB a second)
        new = gzip.compress(noise(100_000, seed=2), 1)
        write(path, new, age=timedelta(minutes=30))  # in place, new content

        async def retried() -> bool:
            return verifier.stats.changed >= 1

        await until(retried, 15, "the change was seen")
        row = (await rows(sessionmaker, job_id))["big.sql.gz"]
        assert row.outcome is None and row.verified_at is None  # nothing recorded
        assert (await get_job(sessionmaker, "remote")).status != "critical"
        await scan(sessionmaker)
        await until(all_verified(sessionmaker, job_id, 1), 15, "verified again")
    finally:
        await verifier.stop(5)
    row = (await rows(sessionmaker, job_id))["big.sql.gz"]
    assert row.outcome == "ok", row.detail
    assert row.bytes_read == len(new)


async def test_a_file_deleted_after_its_listing_is_unreadable_not_corrupt(
    sshd_server, sessionmaker
):
    path = sshd_server.remote_dir / "gone.sql.gz"
    write(path, gzip.compress(noise(10_000), 1))
    job_id = await declare(sshd_server, sessionmaker, archive=True)
    await scan(sessionmaker)
    path.unlink()
    verifier = Verifier(sessionmaker, FAST)
    await verifier.start()
    try:
        await until(all_verified(sessionmaker, job_id, 1), 30, "verified")
    finally:
        await verifier.stop(5)
    async with sessionmaker() as session:  # the job judged since: the artifact is gone
        row = await session.scalar(
            select(ArtifactVerification).where(ArtifactVerification.job_id == job_id)
        )
    assert row is not None
    assert row.outcome == "unreadable", row.detail
    assert f"{sshd_server.remote_dir}/gone.sql.gz cannot be read: " in row.detail
