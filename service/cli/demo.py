"""`backup-monitor demo`: a sandbox of backup files with a job in every status, to serve.

The sandbox is rebuilt on every run, relative to the current time, so that the first scan shows
each status and each reason code the evaluation knows: healthy dumps, a late one, a truncated
one, a shrinking one, a missing one, an unreadable source, a pending job, a paused job ...

- `build_sandbox(root, now)` writes the files (sizes and modification times) and `jobs.yml`;
- `prepare(settings, root, now)` migrates the database, applies `jobs.yml` and backdates the
  jobs that must look old;
- `start(settings, directory, now)` does both and starts the dump in progress; `banner` says
  where to look. The command line (service/cli/main.py) prints it and serves the sandbox's settings
  like `backup-monitor serve`: this module serves nothing and never imports the command line.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from cronsim import CronSim
from sqlalchemy import update

from service.config.jobsfile import apply_jobs, load_declarations
from service.core.paths import path_within_roots
from service.db import migrate
from service.db.engine import create_engine, create_sessionmaker
from service.db.models import Job
from service.runtime.startup import EXIT_USAGE, StartupError, database_step, safe_url
from service.settings import Settings

MARKER = ".backup-monitor-demo"
JOBS_FILE = "jobs.yml"
DATABASE_FILE = "demo.db"
BACKUPS_DIR = "backups"
# Jobs are declared "now"; all but the pending one are then made to look a month old, so that
# an empty source is `missing` rather than `pending` and the history looks lived-in.
BACKDATE = timedelta(days=30)
PENDING_JOBS = frozenset({"photos-weekly"})

KiB = 1024
MiB = 1024 * KiB
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


class SandboxError(Exception):
    """The sandbox cannot be built where asked (e.g. a directory the demo did not make)."""


@dataclass(frozen=True, slots=True)
class DemoFile:
    path: str  # relative to the job's source directory
    size: int
    mtime: datetime
    # The bytes, for files the demo verifies (real archives, sidecars); None: `size` zeros
    # (sparse: no disk space used).
    content: bytes | None = None


@dataclass(slots=True)
class DemoJob:
    """One job of the demo: its declaration (as it appears in jobs.yml) and its files."""

    name: str
    shows: str  # the comment above the job in jobs.yml
    declaration: dict[str, Any]
    files: list[DemoFile] = field(default_factory=list)
    # False for the job whose source directory must not exist (status unknown).
    create_source: bool = True
    # A file still being written when the demo starts (its first size is in `files`): the demo
    # grows it to this size, a step every few seconds, as a dump in progress does.
    growing: DemoGrowth | None = None


@dataclass(frozen=True, slots=True)
class DemoGrowth:
    path: str  # relative to the job's source directory, one of the job's files
    final_size: int
    seconds: float  # how long the writing lasts


def demo_jobs(backups: Path, now: datetime) -> list[DemoJob]:
    """Every job of the demo, its files timed relative to `now` (aware)."""

    def daily(
        prefix: str, suffix: str, newest: datetime, sizes: Sequence[int], *, folder: str = ""
    ) -> list[DemoFile]:
        """One file a day, the newest first in `sizes`, named after its (UTC) date."""
        files = []
        for index, size in enumerate(sizes):
            mtime = newest - index * DAY
            name = f"{prefix}{mtime.astimezone(UTC):%Y-%m-%d}{suffix}"
            files.append(DemoFile(f"{folder}/{name}" if folder else name, size, mtime))
        return files

    def source(name: str, pattern: str = "*", *, recursive: bool = False) -> dict[str, Any]:
        spec: dict[str, Any] = {"type": "local", "path": str(backups / name)}
        if pattern != "*":
            spec["pattern"] = pattern
        if recursive:
            spec["recursive"] = True
        return spec

    nightly = {"every": "1d"}
    paris_cron = "30 1 * * *"
    vm_newest = now - 4 * HOUR
    # Between 1 and 2 MiB, varying from day to day.
    db_sizes = [MiB + 64 * KiB * ((index * 5) % 14 + 1) for index in range(14)]
    # The newest is 2 MiB; the previous ones have a median of exactly 10 MiB: an 80 % drop.
    crm_steps = (-4, 2, -1, 4, 0, -3, 1, 3, -2)
    crm_sizes = [2 * MiB] + [10 * MiB + step * 100 * KiB for step in crm_steps]
    # Tonight's ERP dump started a moment ago: 256 KiB so far, the usual ones are 3 MiB.
    erp_dumps = daily("erp-", ".sql.gz", now - DAY, [3 * MiB + index * KiB for index in range(6)])
    erp_writing = DemoFile(f"erp-{now.astimezone(UTC):%Y-%m-%d}.sql.gz", 256 * KiB, now)
    # Verified jobs: real gzip archives, read whole by the verifier once they have settled.
    # Last night's pg dump was cut short (the disk filled up): its gzip stream ends mid-way.
    pg_dumps = []
    for index, f in enumerate(daily("pg-", ".sql.gz", now - 3 * HOUR, [0] * 4)):
        data = gzip.compress(demo_dump(f.path, 2000 + index), mtime=0)
        data = data if index else data[: len(data) // 2]
        pg_dumps.append(DemoFile(f.path, len(data), f.mtime, data))
    # Each archive with its sha256 sidecar; the newest one's bytes changed after the sum was
    # written (a copy that went wrong).
    copies: list[DemoFile] = []
    for index, f in enumerate(daily("docs-", ".tar.gz", now - 2 * HOUR, [0] * 4)):
        data = gzip.compress(demo_dump(f.path, 500 + index), mtime=0)
        summed = data if index else data[:-1] + bytes([data[-1] ^ 0xFF])
        name = f.path.rsplit("/", 1)[-1]
        sidecar = f"{hashlib.sha256(summed).hexdigest()}  {name}\n".encode()
        copies.append(DemoFile(f.path, len(data), f.mtime, data))
        copies.append(DemoFile(f.path + ".sha256", len(sidecar), f.mtime, sidecar))
    return [
        DemoJob(
            "db-nightly",
            "ok: a healthy nightly database dump, 14 days kept, the newest from last night",
            {
                "description": "PostgreSQL dump of the main database",
                "tags": ["db", "prod"],
                "source": source("db-nightly", "*.sql.gz"),
                "schedule": nightly,
                "grace": "1h",
                "rules": {"min_size": "1MiB", "min_count": 7, "max_size_drop": "50%"},
            },
            daily("db-", ".sql.gz", now - 5 * HOUR, db_sizes),
        ),
        DemoJob(
            "wiki-paris",
            "ok: a cron schedule in a time zone (01:30 every night, Paris time)",
            {
                "description": "Wiki export, written at 01:30 Paris time",
                "tags": ["wiki"],
                "source": source("wiki-paris", "*.tar.zst"),
                "schedule": {"cron": paris_cron, "timezone": "Europe/Paris"},
                "grace": "1h",
            },
            [
                DemoFile(f"wiki-{fire.astimezone(UTC):%Y-%m-%d}.tar.zst", 300 * KiB + index, fire)
                for index, fire in enumerate(
                    cron_fires(paris_cron, ZoneInfo("Europe/Paris"), now, 7, late=4 * 60)
                )
            ],
        ),
        DemoJob(
            "vm-images",
            "ok: a recursive source, one subdirectory per host (other files are ignored)",
            {
                "description": "Nightly disk images of the virtual machines",
                "tags": ["vm"],
                "source": source("vm-images", "*.qcow2", recursive=True),
                "schedule": nightly,
                "grace": "2h",
                "rules": {"min_count": 6},
            },
            [
                *daily("web01-", ".qcow2", vm_newest, [20 * MiB] * 3, folder="web01"),
                *daily("db01-", ".qcow2", vm_newest, [24 * MiB] * 3, folder="db01"),
                DemoFile("db01/README.txt", 200, now - 40 * DAY),
            ],
        ),
        DemoJob(
            "app-late",
            "critical (late): a daily backup whose newest file is 3 days old",
            {
                "description": "Application data; the backup script stopped running",
                "tags": ["app"],
                "source": source("app-late", "*.tar.gz"),
                "schedule": nightly,
                "grace": "1h",
                "rules": {"min_size": "1MiB"},
            },
            daily("app-", ".tar.gz", now - 3 * DAY, [5 * MiB] * 7),
        ),
        DemoJob(
            "uploads-truncated",
            "critical (too_small): last night's archive is 120 bytes; at least 1 MiB expected",
            {
                "description": "User uploads; the disk filled up during the last run",
                "tags": ["files"],
                "source": source("uploads-truncated", "*.tar"),
                "schedule": nightly,
                "grace": "1h",
                "rules": {"min_size": "1MiB"},
            },
            daily("uploads-", ".tar", now - 2 * HOUR, [120] + [3 * MiB // 2] * 6),
        ),
        DemoJob(
            "erp-dump-writing",
            "ok (being written): tonight's dump is still being written; its size is judged "
            "once it settles (source.settle, 2 min by default), not while it grows",
            {
                "description": "ERP database dump, written in place by pg_dump | gzip",
                "tags": ["db"],
                "source": source("erp-dump-writing", "*.sql.gz"),
                "schedule": nightly,
                "grace": "1h",
                "rules": {"min_size": "2MiB", "max_size_drop": "50%"},
            },
            [erp_writing, *erp_dumps],
            growing=DemoGrowth(erp_writing.path, final_size=3 * MiB, seconds=600),
        ),
        DemoJob(
            "mail-relay",
            "critical (late), silenced: a maintenance window covers it now (see `silences:` at "
            "the end); it is judged and shown as always, its notices wait for the window's end",
            {
                "description": "Mail relay spool; the relay is being moved to a new host",
                "tags": ["mail", "maintenance"],
                "source": source("mail-relay", "*.tar.gz"),
                "schedule": nightly,
                "grace": "1h",
            },
            daily("relay-", ".tar.gz", now - 2 * DAY, [MiB] * 5),
        ),
        DemoJob(
            "files-missing",
            "critical (missing): declared a month ago, not a single backup since",
            {
                "description": "File server backup that was never set up",
                "tags": ["files"],
                "source": source("files-missing"),
                "schedule": nightly,
                "grace": "1h",
            },
        ),
        DemoJob(
            "crm-shrinking",
            "warning (size_drop): the newest dump is 80 % smaller than the usual ones",
            {
                "description": "CRM database dump; a table went missing from the export",
                "tags": ["db"],
                "source": source("crm-shrinking", "*.dump"),
                "schedule": nightly,
                "grace": "1h",
                "rules": {"max_size_drop": "50%"},
            },
            daily("crm-", ".dump", now - 3 * HOUR, crm_sizes),
        ),
        DemoJob(
            "mail-archive",
            "warning (too_few): 7 archives should be kept, only 3 are there",
            {
                "description": "Mail archive; the rotation deletes too much",
                "tags": ["mail"],
                "source": source("mail-archive", "*.mbox.gz"),
                "schedule": nightly,
                "grace": "1h",
                "rules": {"min_count": 7},
            },
            daily("mail-", ".mbox.gz", now - 4 * HOUR, [2 * MiB] * 3),
        ),
        DemoJob(
            "ledger-retention",
            "warning (retention_gap): 7 daily and 4 weekly backups should be kept; the "
            "rotation keeps 5 nights, so 2 days and the older weeks have none",
            {
                "description": "Accounting ledger; its rotation was set to 5 copies by mistake",
                "tags": ["db", "audit"],
                "source": source("ledger-retention", "*.sql.gz"),
                "schedule": {"cron": "15 3 * * *", "timezone": "Europe/Paris"},
                "grace": "1h",
                "retention": {"daily": 7, "weekly": 4},
            },
            [
                DemoFile(f"ledger-{fire.astimezone(UTC):%Y-%m-%d}.sql.gz", MiB + index, fire)
                for index, fire in enumerate(
                    cron_fires("15 3 * * *", ZoneInfo("Europe/Paris"), now, 5, late=6 * 60)
                )
            ],
        ),
        DemoJob(
            "reports-oversized",
            "warning (too_large): the newest export is above its 5 MiB maximum",
            {
                "description": "Reporting export; something started logging into it",
                "tags": ["reports"],
                "source": source("reports-oversized", "*.csv.gz"),
                "schedule": nightly,
                "grace": "1h",
                "rules": {"max_size": "5MiB"},
            },
            daily("reports-", ".csv.gz", now - 6 * HOUR, [8 * MiB] + [4 * MiB] * 4),
        ),
        DemoJob(
            "nvr-clock-ahead",
            "warning (future_mtime): the recorder's clock is 6 hours ahead",
            {
                "description": "Video recorder export; its clock drifted",
                "tags": ["cctv"],
                "source": source("nvr-clock-ahead", "*.mp4"),
                "schedule": nightly,
                "grace": "1h",
            },
            daily("nvr-", ".mp4", now + 6 * HOUR, [3 * MiB] * 5),
        ),
        DemoJob(
            "nas-offsite",
            "unknown (source_error): the directory does not exist (a mount that is not there)",
            {
                "description": "Off-site copy on the NAS; the share is not mounted",
                "tags": ["offsite"],
                "source": source("nas-offsite", "*.tar.gz"),
                "schedule": nightly,
                "grace": "1h",
            },
            create_source=False,
        ),
        DemoJob(
            "photos-weekly",
            "pending: declared just now, weekly; the first backup is not due yet",
            {
                "description": "Weekly photo library backup, new this week",
                "tags": ["files"],
                "source": source("photos-weekly", "*.tar"),
                "schedule": {"every": "1w"},
                "grace": "1d",
            },
        ),
        DemoJob(
            "pg-verified",
            "critical (corrupt), once verified: last night's dump is a truncated gzip stream; "
            "the verifier reads every dump whole (verify.archive) a few seconds after the start",
            {
                "description": "Accounting database dump, verified by reading it through",
                "tags": ["db", "verified"],
                "source": source("pg-verified", "*.sql.gz"),
                "schedule": nightly,
                "grace": "1h",
                "verify": {"archive": True, "every": "7d", "unverified_after": "1d"},
            },
            pg_dumps,
        ),
        DemoJob(
            "docs-offsite",
            "critical (checksum_mismatch), once verified: the newest archive does not match "
            "the sha256 sidecar written next to it (verify.checksum: sidecar)",
            {
                "description": "Document archive copied off-site with its checksums",
                "tags": ["files", "verified"],
                "source": source("docs-offsite", "*.tar.gz"),
                "schedule": nightly,
                "grace": "1h",
                "verify": {"archive": True, "checksum": "sidecar"},
            },
            copies,
        ),
        DemoJob(
            "legacy-ftp",
            "paused: a retired server; its old backups would be late, but nobody is told",
            {
                "description": "Old FTP server, kept for reference",
                "tags": ["legacy"],
                "source": source("legacy-ftp", "*.tar.gz"),
                "schedule": nightly,
                "grace": "1h",
                "paused": True,
            },
            daily("ftp-", ".tar.gz", now - 90 * DAY, [MiB] * 3),
        ),
    ]


def demo_dump(name: str, rows: int) -> bytes:
    """Some SQL worth compressing: `rows` INSERT statements."""
    lines = [f"-- {name}\n"]
    insert = "INSERT INTO ledger VALUES ({0}, 'entry {0}', {1});\n"  # a file's text, no query
    lines += [insert.format(row, row * 37 % 1000) for row in range(rows)]
    return "".join(lines).encode()


def grow(path: Path, growth: DemoGrowth, *, step_seconds: float = 5.0) -> None:
    """Write `path` as a dump in progress does: a larger size and a new modification time every
    `step_seconds`, until it reaches its final size after `growth.seconds`. Blocks: run it in a
    thread. Stops quietly when the file is gone (the sandbox was rebuilt)."""
    start = os.stat(path).st_size
    steps = max(1, round(growth.seconds / step_seconds))
    for step in range(1, steps + 1):
        time.sleep(step_seconds)
        size = start + (growth.final_size - start) * step // steps
        try:
            with open(path, "r+b") as handle:
                handle.truncate(size)
        except FileNotFoundError:
            return


def start_writers(backups: Path, jobs: Sequence[DemoJob]) -> list[threading.Thread]:
    """A daemon thread per demo file still being written (they end with the process)."""
    threads = []
    for job in jobs:
        if job.growing is None:
            continue
        path = backups / job.name / job.growing.path
        thread = threading.Thread(
            target=grow, args=(path, job.growing), name=f"demo-writer-{job.name}", daemon=True
        )
        thread.start()
        threads.append(thread)
    return threads


def demo_silences(now: datetime) -> list[dict[str, Any]]:
    """The demo's recurring silence: a daily window that opened an hour before `now` (on the
    hour, UTC) and lasts 3 hours, so it covers the demo for its first hour or more."""
    opened = (now - HOUR).astimezone(UTC)
    return [
        {
            "name": "relay-migration",
            "tags": ["maintenance"],
            "cron": f"0 {opened.hour} * * *",
            "timezone": "UTC",
            "duration": "3h",
            "comment": "ops: moving the mail relay (daily window while the move lasts)",
        }
    ]


def cron_fires(
    expression: str, zone: ZoneInfo, now: datetime, count: int, *, late: int
) -> list[datetime]:
    """The last `count` fire times before `now`, newest first, each `late` seconds after the
    fire (as a real backup finishes a little after it starts), never after `now`."""
    fires: Iterator[datetime] = CronSim(expression, now.astimezone(zone), reverse=True)
    times = []
    for fire in fires:
        moment = min(fire.astimezone(UTC) + timedelta(seconds=late), now)
        if fire.astimezone(UTC) <= now:
            times.append(moment)
        if len(times) == count:
            break
    return times


def build_sandbox(root: Path, now: datetime, *, with_restic: bool | None = None) -> Path:
    """(Re)build the demo tree under `root` for the instant `now`; return the jobs.yml path.

    `root` is wiped first, but only when it was made by the demo (it holds the marker file) or
    is an empty directory: anything else raises SandboxError and nothing is touched.
    `with_restic` (default: when `restic` is on PATH) adds a restic repository and its job.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    root = root.resolve()
    prepare_root(root)
    (root / MARKER).write_text(
        "Made by `backup-monitor demo`. This directory is wiped and rebuilt by each run.\n",
        encoding="utf-8",
    )
    backups = root / BACKUPS_DIR
    backups.mkdir()
    jobs = demo_jobs(backups, now)
    for job in jobs:
        if not job.create_source:
            continue
        directory = backups / job.name
        directory.mkdir()
        for demo_file in job.files:
            write_file(
                directory / demo_file.path, demo_file.size, demo_file.mtime, demo_file.content
            )
    if with_restic is None:
        with_restic = shutil.which("restic") is not None
    if with_restic:
        build_restic_repository(root, now)
        jobs.append(restic_job(root))
    jobs_file = root / JOBS_FILE
    jobs_file.write_text(render_jobs_file(jobs, root, demo_silences(now)), encoding="utf-8")
    return jobs_file


# The restic repository of the demo (when restic is installed): three nightly snapshots of a
# laptop's documents, the newest from 3 hours ago; its password in a file of the sandbox.
RESTIC_JOB = "laptop-restic"
RESTIC_DIR = "restic-repo"
RESTIC_PASSWORD_FILE = "restic-password"  # noqa: S105 (a file name)
RESTIC_CACHE_DIR = "restic-cache"


def restic_job(root: Path) -> DemoJob:
    return DemoJob(
        RESTIC_JOB,
        "ok: snapshots in a restic repository (each snapshot is a backup, sized once)",
        {
            "description": "Nightly restic snapshots of a laptop's documents",
            "tags": ["files", "restic"],
            "source": {
                "type": "restic",
                "repository": str(root / RESTIC_DIR),
                "password_file": str(root / RESTIC_PASSWORD_FILE),
                "host": "laptop",
                "env": {"RESTIC_CACHE_DIR": str(root / RESTIC_CACHE_DIR)},
            },
            "schedule": {"every": "1d"},
            "grace": "1h",
            "rules": {"min_size": "1KB"},
        },
    )


def build_restic_repository(root: Path, now: datetime) -> None:
    """A real restic repository under `root` with three snapshots (blocking: a few seconds)."""
    password_file = root / RESTIC_PASSWORD_FILE
    password_file.write_text(secrets.token_urlsafe(24) + "\n", encoding="utf-8")
    password_file.chmod(0o600)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(root),
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "RESTIC_REPOSITORY": str(root / RESTIC_DIR),
        "RESTIC_PASSWORD_FILE": str(password_file),
        "RESTIC_CACHE_DIR": str(root / RESTIC_CACHE_DIR),
    }

    def restic(*args: str) -> None:
        done = subprocess.run(
            ["restic", *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            said = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            # an OSError: the sandbox cannot be written (exit 1), not a usage error
            raise OSError(f"restic {args[0]} failed: {said[0]}")

    restic("init")
    documents = root / "restic-data" / "documents"
    for days in (2, 1, 0):
        documents.mkdir(parents=True, exist_ok=True)
        (documents / f"notes-{days}.txt").write_bytes(os.urandom(4 * KiB))
        taken = (now - days * DAY - 3 * HOUR).astimezone(UTC)
        restic("backup", "--host", "laptop", "--time", f"{taken:%Y-%m-%d %H:%M:%S}", str(documents))


def prepare_root(root: Path) -> None:
    """An empty `root`: created, or emptied when it is a previous sandbox."""
    if not root.exists():
        root.mkdir(parents=True)
        return
    if not root.is_dir():
        raise SandboxError(f"{root} exists and is not a directory; choose another --dir")
    children = list(root.iterdir())
    if not children:
        return
    if not (root / MARKER).is_file():
        raise SandboxError(
            f"{root} exists and was not made by the demo (no {MARKER} file in it); "
            "refusing to wipe it: choose another --dir"
        )
    for child in children:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def write_file(path: Path, size: int, mtime: datetime, content: bytes | None = None) -> None:
    """A file of `size` bytes (sparse: no disk space used), or of `content`, modified at
    `mtime`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        if content is None:
            handle.truncate(size)
        else:
            handle.write(content)
    stamp = mtime.timestamp()
    os.utime(path, (stamp, stamp))


def yaml_value(value: object) -> str:
    """One value in YAML flow style, on one line, keys in their declared order."""
    text: str = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
    return text.removesuffix("\n...\n").strip()


def render_jobs_file(
    jobs: Sequence[DemoJob], root: Path, silences: Sequence[dict[str, Any]] = ()
) -> str:
    lines = [
        "# The jobs of `backup-monitor demo`, one for each status a job can have.",
        f"# The files they watch are under {root / BACKUPS_DIR}.",
        "# Durations: 90s, 15m, 1h30m, 1d, 1w; sizes: 500KB, 1MiB, 2GB; percents: 50%.",
        "# Apply a file like this one with: backup-monitor jobs apply jobs.yml",
        "jobs:",
    ]
    for job in jobs:
        lines.append(f"  # {job.shows}")
        lines.append(f"  - name: {job.name}")
        for key, value in job.declaration.items():
            lines.append(f"    {key}: {yaml_value(value)}")
    if silences:
        lines.append("# Maintenance windows: notices of the jobs they cover wait for their end.")
        lines.append("silences:")
        for silence in silences:
            first, *rest = silence.items()
            lines.append(f"  - {first[0]}: {yaml_value(first[1])}")
            lines.extend(f"    {key}: {yaml_value(value)}" for key, value in rest)
    return "\n".join(lines) + "\n"


def database_url_for(settings: Settings, root: Path) -> str:
    """DATABASE_URL when it was set explicitly, else a SQLite file inside the sandbox."""
    if "database_url" in settings.model_fields_set:
        return settings.database_url
    return f"sqlite+aiosqlite:///{root.resolve() / DATABASE_FILE}"


async def prepare(settings: Settings, root: Path, now: datetime) -> str:
    """Migrate the demo's database, apply the sandbox's jobs.yml, backdate; return its URL."""
    url = database_url_for(settings, root)
    await asyncio.to_thread(migrate.upgrade, url)
    declared = load_declarations(root / JOBS_FILE, settings.scan_roots)
    specs = declared.jobs
    backdated = [spec.name for spec in specs if spec.name not in PENDING_JOBS]
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            await apply_jobs(session, specs, clock=lambda: now, silences=declared.silences)
            await session.execute(
                update(Job).where(Job.name.in_(backdated)).values(created_at=now - BACKDATE)
            )
            await session.commit()
    finally:
        await engine.dispose()
    return url


def browse_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - only to print a URL to open
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True, slots=True)
class Sandbox:
    """A demo built and prepared: where, and the settings to serve it with."""

    root: Path
    database_url: str
    own_database: bool  # False when DATABASE_URL was set: the demo jobs were added to it
    settings: Settings  # the caller's, on the demo's database, with nothing left to do at start


def start(settings: Settings, directory: Path, now: datetime) -> Sandbox:
    """Build the sandbox in `directory`, prepare its database, start the dump in progress.

    Raises StartupError: EXIT_USAGE for a directory the demo may not use (outside SCAN_ROOTS,
    not made by the demo), 1 when it cannot be written or the database cannot be prepared.
    """
    root = directory.expanduser().resolve()
    if settings.scan_roots and not path_within_roots(str(root), settings.scan_roots):
        roots = ", ".join(str(r) for r in settings.scan_roots)
        raise StartupError(
            f"the demo sandbox {root} is outside SCAN_ROOTS ({roots}); "
            "pass a --dir inside one of them or unset SCAN_ROOTS",
            code=EXIT_USAGE,
        )
    try:
        build_sandbox(root, now)
    except SandboxError as exc:
        raise StartupError(str(exc), code=EXIT_USAGE) from exc
    except OSError as exc:
        raise StartupError(f"cannot build the demo sandbox in {root}: {exc}") from exc

    url = database_url_for(settings, root)
    demo_settings = settings.model_copy(
        update={"database_url": url, "jobs_file": None, "auto_migrate": False}
    )
    database_step(
        demo_settings, "prepare the demo", lambda: asyncio.run(prepare(settings, root, now))
    )
    start_writers(root / BACKUPS_DIR, demo_jobs(root / BACKUPS_DIR, now))
    own = "database_url" not in settings.model_fields_set
    return Sandbox(root=root, database_url=url, own_database=own, settings=demo_settings)


def command_path() -> str:
    """How to run this command from another terminal: the `backup-monitor` script beside this
    interpreter (a virtualenv's bin/ is not on everyone's PATH), else its bare name."""
    script = Path(sys.executable).with_name("backup-monitor")
    return str(script) if script.is_file() else "backup-monitor"


def banner(sandbox: Sandbox, host: str, port: int) -> str:
    """Where to look, printed before serving."""
    base = f"http://{browse_host(host)}:{port}"
    shown_url = safe_url(sandbox.database_url)
    lines = [
        "backup-monitor demo",
        f"  sandbox:  {sandbox.root}  (backups in {BACKUPS_DIR}/, jobs declared in {JOBS_FILE})",
        f"  database: {shown_url}",
    ]
    if not sandbox.own_database:
        lines.append("            (DATABASE_URL is set: the demo jobs were added to it)")
    lines += [
        f"  open:     {base}/  (the dashboard)",
        f"            {base}/api/v1/status",
        f"            {base}/health/ready",
        "  scan from another terminal:",
        f"            DATABASE_URL={shlex.quote(shown_url)} {shlex.quote(command_path())} scan",
        "  The first scan runs now; stop with Ctrl-C.",
    ]
    return "\n".join(lines)
