"""`backup-monitor demo`: the sandbox shows every status, on a real database and when served."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from service.cli import demo
from service.config.jobsfile import load_jobs_file
from service.core.scan_options import ScanOptions
from service.db.models import Artifact, Job, NotificationEvent
from service.runtime.verifier import Verifier, VerifyOptions
from service.scanner.scanner import run_scanner
from service.settings import Settings

from tests.support import free_port, missing, read

# What each job of the demo must show after its first scan: status and reason codes.
EXPECTED: dict[str, tuple[str, set[str]]] = {
    "db-nightly": ("ok", set()),
    "wiki-paris": ("ok", set()),
    "vm-images": ("ok", set()),
    "app-late": ("critical", {"late"}),
    "uploads-truncated": ("critical", {"too_small"}),
    "erp-dump-writing": ("ok", set()),
    "mail-relay": ("critical", {"late"}),
    "files-missing": ("critical", {"missing"}),
    "crm-shrinking": ("warning", {"size_drop"}),
    "mail-archive": ("warning", {"too_few"}),
    "ledger-retention": ("warning", {"retention_gap"}),
    "reports-oversized": ("warning", {"too_large"}),
    "nvr-clock-ahead": ("warning", {"future_mtime"}),
    "nas-offsite": ("unknown", {"source_error"}),
    "photos-weekly": ("pending", set()),
    # Not verified yet at the first scan (the verifier reads them a moment later: see below).
    "pg-verified": ("ok", set()),
    "docs-offsite": ("ok", set()),
    "legacy-ftp": ("paused", set()),
}
ALL_STATUSES = {"ok", "warning", "critical", "unknown", "pending", "paused"}


async def test_demo_sandbox_shows_every_status(database_url, sessionmaker, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    root = tmp_path / "demo"
    jobs_file = demo.build_sandbox(root, now, with_restic=False)

    assert jobs_file == root / "jobs.yml"
    assert [spec.name for spec in load_jobs_file(jobs_file)] == list(EXPECTED)
    assert (root / demo.MARKER).is_file()

    settings = Settings(_env_file=None, database_url=database_url, scan_roots=())
    url = await demo.prepare(settings, root, now)
    assert url == database_url  # an explicit database URL wins over the sandbox's own file

    async with sessionmaker() as session:
        created = dict((await session.execute(select(Job.name, Job.created_at))).all())
    assert created.pop("photos-weekly") == now  # brand new: pending
    assert set(created.values()) == {now - timedelta(days=30)}  # backdated

    async with sessionmaker() as session:
        report = await run_scanner(session, ScanOptions(clock=lambda: now), trigger="cli")
    results = {job.name: job for job in report.jobs}

    assert {job.status for job in report.jobs} == ALL_STATUSES
    seen = {
        name: (job.status, {reason["code"] for reason in job.reasons})
        for name, job in results.items()
    }
    assert seen == EXPECTED

    assert "80 % smaller" in results["crm-shrinking"].reasons[0]["message"]
    assert results["db-nightly"].artifact_count == 14
    assert results["mail-archive"].artifact_count == 3
    [gap] = results["ledger-retention"].reasons
    assert gap["message"].startswith("no backup kept for "), gap
    assert "(daily: 7 kept)" in gap["message"] and "(weekly: 4 kept)" in gap["message"]
    latest = results["db-nightly"].latest_artifact
    assert latest is not None
    assert latest["size"] > 1024 * 1024
    assert datetime.fromisoformat(latest["mtime"]) == now - timedelta(hours=5)

    # The relay is late like app-late, but its maintenance window holds its notice.
    async with sessionmaker() as session:
        told = set(await session.scalars(select(NotificationEvent.job_name)))
    assert "app-late" in told
    assert "mail-relay" not in told

    # Tonight's dump is being written: it counts as fresh, its 256 KiB are not judged small.
    writing = results["erp-dump-writing"].latest_artifact
    assert writing is not None
    assert writing["being_written"] is True
    assert writing["size"] == 256 * 1024

    # The recursive job found the images in each host's subdirectory, and only them.
    async with sessionmaker() as session:
        paths = set(
            await session.scalars(select(Artifact.path).join(Job).where(Job.name == "vm-images"))
        )
    assert len(paths) == 6
    assert {path.split("/")[0] for path in paths} == {"web01", "db01"}
    assert all(path.endswith(".qcow2") for path in paths)


async def test_demo_verified_jobs_are_corrupt_and_mismatched(database_url, sessionmaker, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    root = tmp_path / "demo"
    demo.build_sandbox(root, now, with_restic=False)
    settings = Settings(_env_file=None, database_url=database_url, scan_roots=())
    await demo.prepare(settings, root, now)
    names = ["pg-verified", "docs-offsite"]
    async with sessionmaker() as session:
        await run_scanner(session, ScanOptions(), trigger="cli", names=names)
    verifier = Verifier(sessionmaker, VerifyOptions(poll_seconds=0.05))
    await verifier.start()
    try:

        async def judged() -> bool:
            async with sessionmaker() as session:
                rows = await session.execute(
                    select(Job.name, Job.reasons).where(Job.name.in_(names))
                )
                return all(reasons for _, reasons in rows.all())

        deadline = asyncio.get_running_loop().time() + 30
        while not await judged():
            assert asyncio.get_running_loop().time() < deadline, "not judged within 30 s"
            await asyncio.sleep(0.05)
    finally:
        await verifier.stop(5)
    async with sessionmaker() as session:
        jobs = {
            job.name: job for job in await session.scalars(select(Job).where(Job.name.in_(names)))
        }
    assert jobs["pg-verified"].status == "critical"
    assert [r["code"] for r in jobs["pg-verified"].reasons] == ["corrupt"]
    assert jobs["docs-offsite"].status == "critical"
    assert [r["code"] for r in jobs["docs-offsite"].reasons] == ["checksum_mismatch"]


async def test_demo_restic_job_watches_a_real_repository(database_url, sessionmaker, tmp_path):
    if shutil.which("restic") is None:
        missing("restic is not installed (`make tools` installs it)")
    now = datetime.now(UTC).replace(microsecond=0)
    root = tmp_path / "demo"
    jobs_file = demo.build_sandbox(root, now)  # restic on PATH: its job is there by default
    specs = {spec.name: spec for spec in load_jobs_file(jobs_file)}
    assert list(specs) == [*EXPECTED, demo.RESTIC_JOB]
    source = specs[demo.RESTIC_JOB].source
    assert source.type == "restic"
    assert source.password_file == str(root / demo.RESTIC_PASSWORD_FILE)
    password = (root / demo.RESTIC_PASSWORD_FILE).read_text().strip()
    assert password not in jobs_file.read_text()

    settings = Settings(_env_file=None, database_url=database_url, scan_roots=())
    await demo.prepare(settings, root, now)
    async with sessionmaker() as session:
        report = await run_scanner(session, ScanOptions(clock=lambda: now), trigger="cli")
    result = next(job for job in report.jobs if job.name == demo.RESTIC_JOB)
    assert (result.status, result.reasons, result.artifact_count) == ("ok", [], 3)
    assert datetime.fromisoformat(result.latest_artifact["mtime"]) == now - timedelta(hours=3)
    async with sessionmaker() as session:
        rows = (
            await session.scalars(select(Artifact).join(Job).where(Job.name == demo.RESTIC_JOB))
        ).all()
    assert {row.details["hostname"] for row in rows} == {"laptop"}
    assert all(row.size >= 4 * 1024 for row in rows)
    assert (root / demo.RESTIC_CACHE_DIR).is_dir()  # the sandbox keeps restic's cache


def test_the_demo_grows_its_dump_in_progress_to_its_final_size(tmp_path):
    now = datetime.now(UTC)
    root = tmp_path / "demo"
    demo.build_sandbox(root, now, with_restic=False)
    job = next(job for job in demo.demo_jobs(root / "backups", now) if job.growing)
    path = root / "backups" / job.name / job.growing.path
    before = path.stat()
    growth = demo.DemoGrowth(job.growing.path, final_size=job.growing.final_size, seconds=0.2)
    demo.grow(path, growth, step_seconds=0.05)
    after = path.stat()
    assert before.st_size < after.st_size == job.growing.final_size
    assert after.st_mtime_ns > before.st_mtime_ns


def test_sandbox_is_rebuilt_but_a_foreign_directory_is_never_wiped(tmp_path):
    now = datetime.now(UTC)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(demo.SandboxError, match="was not made by the demo"):
        demo.build_sandbox(foreign, now)
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(demo.SandboxError, match="not a directory"):
        demo.build_sandbox(a_file, now)

    empty = tmp_path / "empty"
    empty.mkdir()
    demo.build_sandbox(empty, now, with_restic=False)  # an empty directory is fine to use

    (empty / "stray.txt").write_text("left over")
    (empty / "backups" / "db-nightly" / "old.sql.gz").write_text("left over")
    later = now + timedelta(days=2)
    demo.build_sandbox(empty, later, with_restic=False)
    assert not (empty / "stray.txt").exists()
    assert not (empty / "backups" / "db-nightly" / "old.sql.gz").exists()
    newest = max(p.stat().st_mtime for p in (empty / "backups" / "db-nightly").iterdir())
    assert newest == pytest.approx((later - timedelta(hours=5)).timestamp(), abs=1)


def test_demo_database_is_inside_the_sandbox_unless_set(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.upper() == "DATABASE_URL":
            monkeypatch.delenv(key)
    root = tmp_path / "demo"
    default = Settings(_env_file=None)
    assert demo.database_url_for(default, root) == f"sqlite+aiosqlite:///{root / 'demo.db'}"

    explicit = "postgresql+asyncpg://postgres@127.0.0.1:5432/elsewhere"
    monkeypatch.setenv("DATABASE_URL", explicit)
    assert demo.database_url_for(Settings(_env_file=None), root) == explicit


async def test_demo_command_builds_prepares_and_serves(base_env, tmp_path):
    """The real `demo` command: its own SQLite database, a first scan at once, a clean stop."""
    port = free_port()
    root = tmp_path / "sandbox"
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "demo", "--dir", str(root), "--port", str(port),
            cwd=tmp_path, env=base_env, stdout=stdout, stderr=stderr,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_for_first_scan(process, base, err)
        # The verifier reads the verified jobs' files a moment after the start: their dumps
        # are then found corrupt and mismatched.
        status = await wait_for_verified(base, ("pg-verified", "docs-offsite"), err)
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0, err.read_text()

    restic = shutil.which("restic") is not None  # its job is ok (test_demo_restic_job_...)
    assert status["counts"] == {
        "ok": 4 + restic, "warning": 5, "critical": 6, "unknown": 1, "pending": 1, "paused": 1,
    }  # fmt: skip
    assert status["status"] == "critical"
    banner = out.read_text()
    assert str(root) in banner
    assert f"http://127.0.0.1:{port}/api/v1/status" in banner
    script = Path(sys.executable).with_name("backup-monitor")  # the venv's, off the PATH
    assert script.is_file()
    assert f"DATABASE_URL=sqlite+aiosqlite:///{root / 'demo.db'} {script} scan" in banner
    assert (root / "demo.db").is_file()
    assert "APScheduler scheduler stopped." in err.read_text()


async def test_demo_command_refuses_a_directory_it_did_not_make(base_env, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "demo", "--dir", str(mine), "--port", str(free_port()),
        cwd=tmp_path, env=base_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2, err.decode()
    assert out == b""
    [line] = err.decode().splitlines()
    assert line.startswith(f"backup-monitor: {mine} exists and was not made by the demo")
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


async def wait_for_verified(
    base: str, names: tuple[str, ...], stderr: Path, timeout: float = 60
) -> dict:
    """Poll until the named jobs are critical (verified), then answer /api/v1/status."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        while True:
            statuses = []
            for name in names:
                async with client.get(f"{base}/api/v1/jobs/{name}") as response:
                    statuses.append((await response.json())["status"])
            if all(status == "critical" for status in statuses):
                async with client.get(f"{base}/api/v1/status") as response:
                    return dict(await response.json())
            if loop.time() > deadline:
                pytest.fail(
                    f"{names} not verified within {timeout} s ({statuses}):\n{read(stderr)}"
                )
            await asyncio.sleep(0.1)


async def wait_for_first_scan(
    process: asyncio.subprocess.Process, base: str, stderr: Path, timeout: float = 60
) -> dict:
    """Poll until the first full scan has finished (scans of a few jobs, by the deadline tick
    or the file watcher, may start after it and end before it: the newest scan says nothing),
    then answer /api/v1/status; fail early if the process dies."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        while True:
            if process.returncode is not None:
                pytest.fail(f"demo exited with {process.returncode}:\n{read(stderr)}")
            try:
                async with client.get(f"{base}/api/v1/scans?limit=100") as response:
                    scans = (await response.json())["items"] if response.status == 200 else []
                if any(s["trigger"] == "schedule" and s["status"] == "finished" for s in scans):
                    async with client.get(f"{base}/api/v1/status") as response:
                        assert response.status == 200
                        return dict(await response.json())
            except aiohttp.ClientError:
                pass  # not listening yet
            if loop.time() > deadline:
                pytest.fail(f"no finished scan within {timeout} s:\n{read(stderr)}")
            await asyncio.sleep(0.1)
