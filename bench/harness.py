"""What the benchmarks share: a disposable database, the service and a bare aiohttp handler in
processes of their own, a webhook receiver, bulk rows made from the ORM models, a tree of job
directories (its jobs declared, a scan's totals), the report's small pieces (bench/probes.py
reads processes and the machine). The scripts beside this file are thin: each sets up its case,
measures it against a reference taken in the same run, and prints the ratio (see
bench/README.md).

A benchmark's database is dropped and recreated: its name (or SQLite file name) must contain
`bench`, or nothing is touched.

    python bench/harness.py --serve-bare PORT     # the bare handler (started by start_bare)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gzip
import json
import logging
import math
import multiprocessing
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from sqlalchemy import Column, Table, inspect
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import make_url

from service.config.jobsfile import apply_jobs
from service.core.jobspec import JobSpec, parse_job
from service.db import migrate
from service.scanner.scanner import ScanReport

REPO = Path(__file__).resolve().parent.parent
DAY_NS = 86_400 * 10**9
STARTUP_TIMEOUT = 60.0


class BenchError(Exception):
    """Something went wrong (not a missed target): reported, exit status 1."""


# --------------------------------------------------------------------------------------------
# The database: disposable, PostgreSQL or a SQLite file


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BenchError("a SQLite database must be a file (sqlite+aiosqlite:////path/to.db)")
    return Path(database)


def check_disposable(url: str, *, postgresql_only: str | None = None) -> None:
    """Refuse a database whose name does not say it is a benchmark's (it will be dropped);
    with `postgresql_only` (the reason), refuse anything but PostgreSQL through asyncpg."""
    parsed = make_url(url)
    if postgresql_only and (
        parsed.get_backend_name() != "postgresql" or parsed.get_driver_name() != "asyncpg"
    ):
        raise BenchError(
            f"this benchmark needs PostgreSQL (postgresql+asyncpg://...): {postgresql_only}"
        )
    name = sqlite_path(url).name if is_sqlite(url) else (parsed.database or "")
    if "bench" not in name:
        raise BenchError(
            f"refusing to drop and recreate database {name!r}: its name must contain 'bench'"
        )


def dsn(url: str, database: str | None = None) -> str:
    """asyncpg's form of a SQLAlchemy URL (to `database` when given)."""
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def pg_admin(url: str, statement: str) -> None:
    """Run `statement` on the server of `url`, connected to its `postgres` database."""
    connection = await asyncpg.connect(dsn(url, "postgres"), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def drop_database(url: str) -> None:
    """Drop the database (delete the SQLite file and its companions); blocking."""
    if is_sqlite(url):
        path = sqlite_path(url)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    name = make_url(url).database
    asyncio.run(pg_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def create_database(url: str) -> None:
    """Drop and recreate the database, then migrate it (blocking: no loop may be running)."""
    check_disposable(url)
    drop_database(url)
    if not is_sqlite(url):
        asyncio.run(pg_admin(url, f'CREATE DATABASE "{make_url(url).database}"'))
    migrate.upgrade(url)


@contextmanager
def fresh_database(url: str) -> Iterator[None]:
    """A created and migrated database (create_database) for the block, dropped after it; a
    failure to drop it is reported, never hiding the block's own error."""
    try:
        create_database(url)
        yield
    finally:
        try:
            drop_database(url)
        except Exception as exc:
            print(f"error: could not drop the database: {exc}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Trees of job directories, and a dump-like gzip file


def job_name(index: int, width: int) -> str:
    return f"job-{index:0{width}d}"


def build_tree(root: Path, jobs: int, files: int, seed: int = 1) -> dict[str, Any]:
    """J directories of F sparse files, 1-4 KiB, mtimes spread over the last F days.

    File k of F is (F - k) days old (plus up to 6 h of jitter), so the newest backup of every
    job is recent and every job judges `ok` with `every: 1d`. The same arguments make the same
    tree (each job's sizes and ages come from its own seeded generator).

    The files are made by forked worker processes (two per core, at most 8), each a range of
    job directories: creating a file is mostly the kernel's work (openat, ftruncate, futimens,
    close), which threads could only overlap as far as the GIL lets them. Call it before any
    thread or event loop is started (fork).
    """
    started = time.perf_counter()
    width = max(4, len(str(jobs)))
    now_ns = time.time_ns()
    workers = min(8, (os.cpu_count() or 2) * 2, jobs)
    step = max(1, math.ceil(jobs / (workers * 8)))  # several ranges a worker: they even out
    firsts = range(1, jobs + 1, step)
    lasts = [min(first + step - 1, jobs) for first in firsts]
    some_jobs = functools.partial(
        build_jobs, str(root), files=files, width=width, now_ns=now_ns, seed=seed
    )
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        total_bytes = sum(pool.map(some_jobs, firsts, lasts))
    return {
        "seconds": time.perf_counter() - started,
        "files": jobs * files,
        "apparent_bytes": total_bytes,
    }


def build_jobs(root: str, first: int, last: int, files: int, width: int, now_ns: int,
               seed: int) -> int:  # fmt: skip
    """Job directories `first`..`last` of build_tree, in a worker process: their bytes."""
    file_width = max(4, len(str(files)))
    total = 0
    for index in range(first, last + 1):
        rng = random.Random(seed * 1_000_003 + index)
        directory = os.path.join(root, job_name(index, width))
        os.mkdir(directory)
        # Files made relative to the directory's descriptor: the kernel resolves one name.
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for k in range(1, files + 1):
                size = rng.randint(1024, 4096)
                age_ns = (files - k) * DAY_NS + rng.randint(60, 6 * 3600) * 10**9
                mtime_ns = now_ns - age_ns
                name = f"backup-{k:0{file_width}d}.tar.gz"
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd)
                try:
                    os.ftruncate(fd, size)  # sparse: no data block is written
                    os.utime(fd, ns=(mtime_ns, mtime_ns))
                finally:
                    os.close(fd)
                total += size
        finally:
            os.close(dir_fd)
    return total


def job_spec(root: Path, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": {"every": "1d"},
        "source": {"type": "local", "path": str(root / name), "pattern": "*.tar.gz"},
    }


def job_specs(root: Path, jobs: int) -> list[JobSpec]:
    """The declarations of build_tree's J jobs, one per directory, in order."""
    width = max(4, len(str(jobs)))
    return [parse_job(job_spec(root, job_name(i, width))) for i in range(1, jobs + 1)]


async def declare_jobs(
    sessionmaker: Any, specs: Sequence[JobSpec], clock: Callable[[], datetime]
) -> None:
    """Declare the jobs (as a jobs file does, created at `clock()`); BenchError unless each one
    was created."""
    async with sessionmaker() as session:
        applied = await apply_jobs(session, specs, clock=clock)
    if len(applied.created) != len(specs):
        raise BenchError(f"declared {len(applied.created)} jobs, expected {len(specs)}")


def scan_totals(report: ScanReport) -> dict[str, int]:
    """What a scan found, summed over its jobs."""
    return {
        "jobs_scanned": len(report.jobs),
        "artifacts_new": sum(j.new for j in report.jobs),
        "artifacts_changed": sum(j.changed for j in report.jobs),
        "artifacts_gone": sum(j.gone for j in report.jobs),
        "errors": sum(1 for j in report.jobs if j.error),
    }


BLOCK = 16 * 1024
POOL = 512  # distinct 16 KiB blocks of text, in a random order: gzip's 32 KiB window sees no repeat


def dump_block(rng: random.Random) -> bytes:
    """16 KiB of dump-like text (SQL INSERT lines; ~3:1 under gzip)."""
    lines = []
    size = 0
    while size < BLOCK:
        day = f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
        line = (
            f"INSERT INTO orders VALUES ({rng.randrange(10**9)}, "
            f"'customer-{rng.randrange(10**6)}', {rng.random() * 1000:.2f}, "
            f"'{day} {rng.randrange(24):02d}:{rng.randrange(60):02d}:00', "
            f"'{rng.choice(['paid', 'open', 'shipped', 'refunded'])}');\n"
        )
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()[:BLOCK]


def write_gzip_dump(path: Path, megabytes: float, member_text_mb: int = 16) -> int:
    """A gzip file of at least `megabytes` MB (10**6 bytes) of compressed dump-like text: one
    gzip member of `member_text_mb` MB of text, compressed once (level 6, gzip's default) and
    written again and again (a valid multi-member gzip file; every member is decompressed and
    checked by a reader, so the work per byte is that of one long member). Its size."""
    rng = random.Random(14)
    pool = [dump_block(rng) for _ in range(POOL)]
    text = b"".join(rng.choices(pool, k=member_text_mb * 10**6 // BLOCK))
    member = gzip.compress(text, compresslevel=6, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for _ in range(max(1, math.ceil(megabytes * 10**6 / len(member)))):
            out.write(member)
    return path.stat().st_size


# --------------------------------------------------------------------------------------------
# Rows made from the models, for COPY

DIALECT = asyncpg_dialect()


def copy_columns(table: Table) -> tuple[Column[Any], ...]:
    """Every column of `table` but its generated primary key: the model decides what a row
    holds, so a column added to the model is copied too (or its default is)."""
    return tuple(column for column in table.columns if column is not table.autoincrement_column)


def orm_record(row: Any, columns: tuple[Column[Any], ...]) -> tuple[Any, ...]:
    """The values an ORM INSERT of `row` would send, for COPY: an attribute never set takes
    its column's Python default (as the ORM does at flush), and each value goes through its
    column type's bind processing for asyncpg (JSON as text, aware UTC datetimes)."""
    given = inspect(row).dict
    values = []
    for column in columns:
        if column.key in given:
            value = given[column.key]
        elif column.default is not None:
            default: Any = column.default
            value = default.arg(None) if default.is_callable else default.arg
        elif column.server_default is not None:
            raise BenchError(f"COPY cannot leave {column} to its server default: set it")
        else:
            value = None
        processor = column.type.dialect_impl(DIALECT).bind_processor(DIALECT)
        values.append(processor(value) if processor is not None and value is not None else value)
    return tuple(values)


# --------------------------------------------------------------------------------------------
# Servers in processes of their own


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


BARE_BODY = json.dumps({"status": "ok", "bench": "a constant answer"}).encode()


def serve_bare(port: int) -> None:
    """The reference: aiohttp with one handler returning a constant (run in its own process)."""

    async def constant(_request: web.Request) -> web.Response:
        return web.Response(body=BARE_BODY, content_type="application/json")

    logging.basicConfig(level=logging.WARNING)
    app = web.Application()
    app.router.add_get("/constant", constant)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM (aiohttp stops gracefully, and cProfile writes its file), then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(name: str, command: list[str], env: dict[str, str], port: int,
                 log_dir: Path) -> Server:  # fmt: skip
    log = log_dir / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
    return Server(name, process, f"http://127.0.0.1:{port}", log)


def start_service(url: str, token: str, log_dir: Path, profile: Path | None = None,
                  name: str = "service", **settings: str) -> Server:  # fmt: skip
    """`python -m service serve` on a free port: API_TOKEN `token`, the scheduler on but no
    full scan after the startup one (unless `settings` say otherwise), warnings only in its
    log (`log_dir`/`name`.log); `settings` (TICK_SECONDS="1", ...) are added to its
    environment."""
    port = free_port()
    env = {
        key: value for key, value in os.environ.items() if key not in ("JOBS_FILE", "SCAN_ROOTS")
    }
    env.update(
        DATABASE_URL=url,
        API_TOKEN=token,
        SCANNER_INTERVAL_MINUTES="10000",
        HOST="127.0.0.1",
        PORT=str(port),
        LOG_LEVEL="WARNING",
        LOG_FORMAT="text",
        AUTO_MIGRATE="true",
    )
    env.update(settings)
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
    command = [sys.executable, *profiler, "-m", "service", "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    return start_server(name, command, env, port, log_dir)


def start_bare(log_dir: Path) -> Server:
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(port)]
    return start_server("bare", command, dict(os.environ), port, log_dir)


async def wait_until(server: Server, session: aiohttp.ClientSession, path: str,
                     ready: Callable[[Any], bool], what: str) -> Any:  # fmt: skip
    """Poll `path` until it answers 200 with a JSON body that `ready` accepts."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if server.process.poll() is not None:
            raise BenchError(
                f"the {server.name} server exited ({server.process.returncode}):\n{server.tail()}"
            )
        try:
            async with session.get(server.base + path) as response:
                if response.status == 200:
                    body = await response.json()
                    if ready(body):
                        return body
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"{server.name}: {what} not seen within {STARTUP_TIMEOUT:g} s")
        await asyncio.sleep(0.1)


async def startup_scan(server: Server, session: aiohttp.ClientSession) -> None:
    """Until the service's status says its startup scan finished (`session` carries the
    token)."""
    await wait_until(
        server, session, "/api/v1/status",
        lambda body: (body.get("last_scan") or {}).get("status") == "finished",
        "the startup scan",
    )  # fmt: skip


class Receiver:
    """A webhook receiver in the benchmark's process: every body it was POSTed, with the
    time it arrived (wall clock), answered 204."""

    def __init__(self) -> None:
        self.bodies: list[tuple[datetime, dict[str, Any]]] = []
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.bodies.append((datetime.now(UTC), await request.json()))
        self._changed.set()
        return web.Response(status=204)

    async def until(self, count: int) -> None:
        """Until `count` bodies arrived (bound it with asyncio.timeout)."""
        while len(self.bodies) < count:
            self._changed.clear()
            await self._changed.wait()

    def first(self, kind: str) -> dict[str, datetime]:
        """When each job's first notice of `kind` (problem, recovery, ...) arrived."""
        arrived: dict[str, datetime] = {}
        for when, body in self.bodies:
            if body.get("kind") == kind:
                arrived.setdefault(body["job"], when)
        return arrived


# --------------------------------------------------------------------------------------------
# Reports


def percentile(ordered: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    if not ordered:
        return float("nan")
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def code_version() -> str:
    """The commit measured (with '+changes' when the work tree differs), or 'unknown'."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "service"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+changes" if dirty else "")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def summary(delays: list[float]) -> dict[str, float]:
    ordered = sorted(delays)
    return {
        "p50": statistics.median(ordered),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1],
        "min": ordered[0],
    }


async def wait_for(what: str, ready: Any, seconds: float) -> Any:
    """Poll `ready()` until it gives a true value; BenchError after `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            while True:  # the database is polled: nothing to wait on
                if value := await ready():
                    return value
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise BenchError(f"{what} not seen within {seconds:g} s") from None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the benchmarks' bare aiohttp handler")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", required=True)
    serve_bare(parser.parse_args().serve_bare)
