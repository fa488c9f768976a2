"""Verification in the service (issue 14), what only local files show: real files, real
archives, real databases, the real verifier in worker threads; on PostgreSQL and SQLite.

The newest artifact is verified first and only the newest results judge the job; two verifiers
on one PostgreSQL verify each artifact once; a restic repository is checked; the app runs the
verifier where the scheduler runs; a file replaced with an old time waits for its retry. The
cases every source shares (ok, corrupt, checksum mismatch, missing sidecar, changed while read,
unreadable, stopped) are in test_verification_sources.py, on local, S3 and SFTP sources.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.scan_options import ScanOptions
from service.db.engine import create_engine, create_sessionmaker
from service.db.models import Artifact, ArtifactVerification, RepositoryCheck, ScanRun
from service.runtime.keys import verifier_key
from service.runtime.verifier import Verifier, VerifyOptions
from service.scanner.scanner import run_scanner

from tests.support import add_job, get_job

HOUR = timedelta(hours=1)
FAST = VerifyOptions(bytes_per_second=10**9, poll_seconds=0.05, retry_seconds=0.1)


async def until(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Wait for `condition` (polled), failing after `within` seconds."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > within:
            pytest.fail(f"{what}: not within {within:g} s")
        await asyncio.sleep(0.05)


def dump(path: Path, size: int, *, seed: int = 1, age: timedelta = HOUR) -> bytes:
    """A gzip dump of `size` bytes of (incompressible) data, written `age` ago."""
    data = gzip.compress(random.Random(seed).randbytes(size), compresslevel=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    when = (datetime.now(UTC) - age).timestamp()
    os.utime(path, (when, when))
    return data


async def declare(sessionmaker, directory: Path, name: str = "db", **verify: Any) -> int:
    return await add_job(
        sessionmaker, datetime.now(UTC) - timedelta(days=2), name=name,
        source={"type": "local", "path": str(directory), "pattern": "*.gz"},
        verify=verify or {"archive": True, "checksum": "sidecar"},
    )  # fmt: skip


async def scan(sessionmaker, *names: str) -> None:
    async with sessionmaker() as session:
        await run_scanner(session, ScanOptions(), trigger="manual", names=list(names) or None)


async def rows(sessionmaker, job_id: int) -> dict[str, ArtifactVerification]:
    async with sessionmaker() as session:
        found = await session.execute(
            select(Artifact.path, ArtifactVerification)
            .join(ArtifactVerification, ArtifactVerification.artifact_id == Artifact.id)
            .where(Artifact.job_id == job_id, Artifact.gone_since.is_(None))
        )
        return {path: row for path, row in found.all()}


def all_verified(sessionmaker, job_id: int, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        found = await rows(sessionmaker, job_id)
        return len(found) == count and all(r.verified_at is not None for r in found.values())

    return check


async def verify_all(sessionmaker, job_id: int, count: int = 1) -> dict[str, ArtifactVerification]:
    verifier = Verifier(sessionmaker, FAST)
    await verifier.start()
    try:
        await until(all_verified(sessionmaker, job_id, count), 30, "verified")

        async def idle() -> bool:  # the job judged with the results (not cut short by stop)
            return verifier.busy == 0

        await until(idle, 30, "the verifier done")
    finally:
        await verifier.stop(5)
    return await rows(sessionmaker, job_id)


async def test_newest_first_and_only_the_newest_results_judge_the_job(sessionmaker, tmp_path):
    for day in range(5):
        dump(tmp_path / "db" / f"db-{day}.sql.gz", 20_000, seed=day, age=HOUR * (10 - day))
    job_id = await declare(sessionmaker, tmp_path / "db", archive=True)
    await scan(sessionmaker)
    found = await verify_all(sessionmaker, job_id, 5)
    order = sorted(found, key=lambda path: found[path].verified_at)
    assert order == [f"db-{day}.sql.gz" for day in (4, 3, 2, 1, 0)]
    # The results of the 3 newest may change the verdict: the job was judged after each; the
    # 2 oldest change nothing, and judged nothing.
    async with sessionmaker() as session:
        judged = await session.scalar(
            select(func.count()).select_from(ScanRun).where(ScanRun.trigger == "verify")
        )
    assert judged == 3


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_verifiers_verify_each_artifact_once(database_url, tmp_path):
    engines = [create_engine(database_url) for _ in range(2)]
    makers: list[async_sessionmaker[AsyncSession]] = [create_sessionmaker(e) for e in engines]
    try:
        ids = []
        for number in range(4):
            directory = tmp_path / f"j{number}"
            for day in range(3):
                dump(directory / f"d{day}.gz", 30_000, seed=number * 10 + day,
                     age=HOUR * (5 - day))  # fmt: skip
            ids.append(await declare(makers[0], directory, name=f"j{number}", archive=True))
        await scan(makers[0])
        options = VerifyOptions(bytes_per_second=10**9, poll_seconds=0.01, workers=4)
        verifiers = [Verifier(maker, options) for maker in makers]
        most_at_once = 0  # the most artifacts of one job leased at one moment

        async def sample() -> None:
            nonlocal most_at_once
            v = ArtifactVerification
            while True:
                async with makers[0]() as session:
                    counts = await session.scalars(
                        select(func.count()).where(v.lease_until.is_not(None)).group_by(v.job_id)
                    )
                    most_at_once = max([most_at_once, *counts])
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        for verifier in verifiers:
            await verifier.start()
        try:
            for job_id in ids:
                await until(all_verified(makers[0], job_id, 3), 30, "all verified")
        finally:
            for verifier in verifiers:
                await verifier.stop(5)
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        # Each artifact verified once, by one or the other; one artifact per job at a time.
        assert sum(v.stats.verified for v in verifiers) == 12
        assert most_at_once == 1
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_restic_repository_is_checked_and_damage_is_critical(
    sessionmaker, restic_repo, tmp_path, monkeypatch
):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VERIFY_TEST_SECRET", "correct horse battery")
    repo = restic_repo(password="correct horse battery")
    repo.backup({"db.dump": 1_000_000}, datetime.now(UTC) - HOUR)
    job_id = await add_job(
        sessionmaker, datetime.now(UTC) - timedelta(days=2), name="offsite",
        source={"type": "restic", "repository": str(repo.path),
                "password": "${VERIFY_TEST_SECRET}"},
        verify={"repository": {"every": "1s", "read_data_subset": "100%"}},
    )  # fmt: skip
    await scan(sessionmaker)

    async def checked(ok: bool) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            async with sessionmaker() as session:
                row = await session.get(RepositoryCheck, job_id)
                return row is not None and row.ok is ok

        return check

    verifier = Verifier(sessionmaker, FAST)
    await verifier.start()
    try:
        await until(await checked(True), 60, "checked ok")
        assert (await get_job(sessionmaker, "offsite")).status == "ok"
        # A bit flipped in the largest pack: reading all the data (100 %) finds it.
        pack = max((p for p in (repo.path / "data").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)  # fmt: skip
        data = bytearray(pack.read_bytes())
        data[len(data) // 2] ^= 0x01
        pack.chmod(0o600)
        pack.write_bytes(bytes(data))
        await until(await checked(False), 60, "checked damaged")

        async def judged() -> bool:
            return (await get_job(sessionmaker, "offsite")).status == "critical"

        await until(judged, 30, "judged critical")
    finally:
        await verifier.stop(5)
    job = await get_job(sessionmaker, "offsite")
    assert [r["code"] for r in job.reasons] == ["repository_check_failed"]
    assert "Pack ID does not match" in job.reasons[0]["message"]
    assert f"restic repository {repo.path}" in job.reasons[0]["message"]


async def test_the_app_runs_the_verifier_where_the_scheduler_runs(
    sessionmaker, tmp_path, aiohttp_client, make_app
):
    path = tmp_path / "db" / "db-7.sql.gz"
    data = dump(path, 100_000)
    path.write_bytes(data[:-8])  # the gzip trailer (CRC and length) cut off
    when = (datetime.now(UTC) - HOUR).timestamp()
    os.utime(path, (when, when))
    await declare(sessionmaker, tmp_path / "db", archive=True)
    app = make_app(scheduler=True, verify_poll_seconds=0.05)
    await aiohttp_client(app)
    assert verifier_key in app
    plain = make_app()
    await aiohttp_client(plain)
    assert verifier_key not in plain  # without the scheduler: no verifier

    async def critical() -> bool:
        return (await get_job(sessionmaker, "db")).status == "critical"

    await until(critical, 30, "the app's verifier found it corrupt")
    assert [r["code"] for r in (await get_job(sessionmaker, "db")).reasons] == ["corrupt"]


async def test_a_file_replaced_with_an_old_time_waits_for_its_retry(sessionmaker, tmp_path):
    """Replaced (rsync -t, cp -p) after it was verified, before a listing saw the new version:
    not read again and again, but once VERIFY_RETRY_SECONDS later."""
    path = tmp_path / "db" / "db-8.sql.gz"
    dump(path, 50_000)
    job_id = await declare(sessionmaker, tmp_path / "db", archive=True)
    await scan(sessionmaker)
    options = VerifyOptions(bytes_per_second=10**9, poll_seconds=0.02, retry_seconds=60)
    verifier = Verifier(sessionmaker, options)
    await verifier.start()
    try:
        await until(all_verified(sessionmaker, job_id, 1), 30, "verified")

        async def idle() -> bool:
            return verifier.busy == 0

        # The result recorded, the verifier judges the job: a scan that lists the directory. Had
        # it listed the file replaced below, it would record that version (over the size set
        # below, if it writes last), and the verifier would read a file as listed: nothing to see.
        await until(idle, 30, "the job judged with the result")
        # The verified version's size and time, changed behind the listing's back (the
        # listing is made to say so too: the verifier sees a version that differs on disk).
        dump(path, 60_000, seed=9, age=2 * HOUR)
        async with sessionmaker() as session:
            artifact = await session.scalar(select(Artifact).where(Artifact.job_id == job_id))
            assert artifact is not None
            artifact.size += 1  # neither the verified version nor the file on disk
            await session.commit()

        async def changed() -> bool:
            return verifier.stats.changed >= 1

        await until(changed, 10, "the difference was seen")
        seen = verifier.stats.changed
        await asyncio.sleep(1)  # 50 polls
        assert verifier.stats.changed == seen  # waiting for its retry, not read in a loop
    finally:
        await verifier.stop(5)
    row = (await rows(sessionmaker, job_id))["db-8.sql.gz"]
    assert row.retry_at is not None and row.lease_until is None


async def test_restore_points_say_what_verification_found(
    sessionmaker, tmp_path, aiohttp_client, make_app
):
    """The evidence an auditor asks for: each restore point with its verification state (a
    good dump `ok`, a truncated one `corrupt`, one not verified yet `not_yet`); a job that
    verifies no files says null."""
    good = tmp_path / "db" / "db-1.sql.gz"
    dump(good, 100_000, age=3 * HOUR)
    bad = tmp_path / "db" / "db-2.sql.gz"
    data = dump(bad, 100_000, seed=2, age=2 * HOUR)
    bad.write_bytes(data[: len(data) // 2])
    when = (datetime.now(UTC) - 2 * HOUR).timestamp()
    os.utime(bad, (when, when))
    job_id = await declare(sessionmaker, tmp_path / "db", archive=True)
    await scan(sessionmaker)
    await verify_all(sessionmaker, job_id, count=2)
    dump(tmp_path / "db" / "db-3.sql.gz", 100_000, seed=3)  # an hour old, listed, not verified
    await scan(sessionmaker)
    await add_job(
        sessionmaker, datetime.now(UTC) - timedelta(days=2), name="plain",
        source={"type": "local", "path": str(tmp_path / "db"), "pattern": "*.gz"},
    )  # fmt: skip
    await scan(sessionmaker, "plain")

    client = await aiohttp_client(make_app())
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    answer = await client.get("/api/v1/jobs/db/restore-points", params={"from": since})
    assert answer.status == 200, await answer.text()
    states = {
        item["path"]: (item["verification"], item["verified_at"] is not None)
        for item in (await answer.json())["items"]
    }
    assert states == {
        "db-3.sql.gz": ("not_yet", False),
        "db-2.sql.gz": ("corrupt", True),
        "db-1.sql.gz": ("ok", True),
    }
    plain = await client.get("/api/v1/jobs/plain/restore-points", params={"from": since})
    assert {item["verification"] for item in (await plain.json())["items"]} == {None}


# --- the worker processes ----------------------------------------------------------------------


AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


def read_proc(name: str) -> str:
    return Path("/proc", name).read_text()


def stat_of(pid: int) -> dict[str, int]:
    """A process's parent, session and nice value, from /proc/PID/stat (proc(5))."""
    fields = read_proc(f"{pid}/stat").rpartition(")")[2].split()  # from the 3rd field on
    return {"parent": int(fields[1]), "session": int(fields[3]), "nice": int(fields[16])}


def verify_workers() -> list[int]:
    """The pids of this process's verification workers."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent = stat_of(int(entry))["parent"]
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        if parent == os.getpid() and b"service.verify.worker" in command:
            found.append(int(entry))
    return found


async def one_worker_reading(verifier: Verifier) -> int:
    """The pid of the one verification worker, once it has read its first piece."""

    async def reading() -> bool:
        return verifier.bytes_taken > 0 and len(verify_workers()) == 1

    await until(reading, 20, "a worker process reads the file")
    (worker,) = verify_workers()
    return worker


async def reading_slowly(sessionmaker, path: Path) -> tuple[int, Verifier]:
    """A job with a 3 MB dump at `path`, listed, and a verifier started that reads it at 1 MB a
    second (retried 0.2 s after a failure); the job's id and the verifier."""
    dump(path, 3_000_000)
    job_id = await declare(sessionmaker, path.parent, archive=True)
    await scan(sessionmaker)
    slow = VerifyOptions(bytes_per_second=1_000_000, poll_seconds=0.05, retry_seconds=0.2)
    verifier = Verifier(sessionmaker, slow)
    await verifier.start()
    return job_id, verifier


async def test_files_are_read_by_worker_processes_of_the_lowest_priority(sessionmaker, tmp_path):
    """The CPU work runs in a worker process at nice 19, in a session of its own whose
    scheduling group (Linux's autogroup) is at nice 19 too: a scan, a ping or the API gets
    the cores first (bench/verify_scan.py measures it)."""
    job_id, verifier = await reading_slowly(sessionmaker, tmp_path / "db" / "db-7.sql.gz")
    try:
        worker = await one_worker_reading(verifier)
        assert stat_of(worker)["nice"] == 19
        assert stat_of(worker)["session"] == worker != os.getsid(0)  # a session of its own
        if AUTOGROUP.exists() and AUTOGROUP.read_text().strip() == "1":  # noqa: ASYNC240
            autogroup = read_proc(f"{worker}/autogroup")  # "/autogroup-123 nice 19"
            assert autogroup.split()[-1] == "19", autogroup
    finally:
        await verifier.stop(5)
    assert verify_workers() == []  # stopped with the verifier
    assert (await rows(sessionmaker, job_id))["db-7.sql.gz"].verified_at is None  # given back


async def test_a_worker_process_killed_mid_read_loses_nothing(sessionmaker, tmp_path, caplog):
    """A worker killed in the middle of a read (the OOM killer, an operator): nothing is
    recorded, the artifact is given back and read again by a new worker; the verifier goes
    on."""
    job_id, verifier = await reading_slowly(sessionmaker, tmp_path / "db" / "db-8.sql.gz")
    try:
        killed = await one_worker_reading(verifier)
        os.kill(killed, signal.SIGKILL)
        await until(all_verified(sessionmaker, job_id, 1), 30, "verified by a new worker")
        assert killed not in verify_workers()
        failures = [r for r in caplog.records if r.getMessage() == "verify: reading failed"]
        assert failures and "killed by signal 9" in failures[0].error  # type: ignore[attr-defined]
        assert failures[0].levelname == "ERROR"  # not the service's own stop
    finally:
        await verifier.stop(5)
    row = (await rows(sessionmaker, job_id))["db-8.sql.gz"]
    assert row.outcome == "ok", row.detail
    assert row.bytes_read == row.size


class StoppedAtItsFirstClaim(Verifier):
    """Stopped while it is claiming work: in the middle of its look for work, the service's
    stop (or a test's end) comes between two claims."""

    stopping: asyncio.Task[None] | None = None

    def _spawn(self, work: Any) -> None:
        super()._spawn(work)
        if self.stopping is None:
            self.stopping = asyncio.create_task(self.stop(5))

    async def _finish(self, *args: Any) -> None:
        await asyncio.sleep(0.5)  # a lease given back over a slow connection
        await super()._finish(*args)


async def test_a_stop_between_two_claims_waits_for_all_the_work_and_its_leases(
    sessionmaker, tmp_path
):
    """The stop waited for the work started before it, not for what the look for work under
    way claimed and started after it: that work gave its leases back after the stop (the test
    had disposed of its engine: a connection opened at the loop's end, never closed), or never
    (the process gone), leaving the artifacts unverified until their leases ran out."""
    jobs = []
    for index in range(3):  # one artifact due at a time per job: three jobs, three claims
        dump(tmp_path / f"db{index}" / "db.sql.gz", 20_000, seed=index)
        jobs.append(await declare(sessionmaker, tmp_path / f"db{index}", name=f"db{index}"))
    await scan(sessionmaker)
    verifier = StoppedAtItsFirstClaim(sessionmaker, dataclasses.replace(FAST, workers=3))
    await verifier.start()
    await until(lambda: asyncio.sleep(0, verifier.stopping is not None), 30, "a claim")
    assert verifier.stopping is not None
    await verifier.stopping
    assert verifier.busy == 0
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not [task for task in others if "verifier.py" in repr(task)]  # "running at …"
    for job_id in jobs:
        assert [row.lease_until for row in (await rows(sessionmaker, job_id)).values()] == [None]
