"""JSON API benchmark: /api/v1/jobs and /api/v1/status with J jobs and J x A artifacts on
PostgreSQL, under C concurrent clients, against a bare aiohttp handler measured in the same run.

    .venv/bin/python bench/api.py [--jobs 10000] [--artifacts-per-job 100] [--concurrency 50]
                                  [--seconds 10] [--warmup 2] [--targets jobs,status,...]
                                  [--auth env|db] [--database-url URL] [--json] [--profile DIR]

Creates and migrates a fresh PostgreSQL database, then starts two servers, each in its own
process so that the load generator shares neither their CPU nor their GIL:

- the service itself (`python -m service serve`, i.e. `backup-monitor serve`), with API_TOKEN
  set, the scheduler on and SCANNER_INTERVAL_MINUTES=10000;
- a bare aiohttp application with one handler returning a constant JSON body (the reference).

The service's scheduler scans once at startup: it does so while the database is still empty,
and the jobs (declared through `parse_job` + `new_job`, with the state a scan leaves: status,
reasons, latest artifact, deadlines) and the artifacts are bulk-loaded with COPY only once that
scan has finished, then VACUUM ANALYZE. No scan runs during the measurement (checked at the end).

Each target is first checked once (status 200 and the right answer: totals, names, counts),
then loaded from this process by C asyncio workers looping over one shared aiohttp
ClientSession (connector limit C, keep-alive), every request sending `Authorization: Bearer
<token>`: a warm-up, and without a pause the measured period (only the requests started in it
count). Reported per target: requests/s and its ratio to the bare handler, p50 / p90 / p99 / max
latency, non-200 answers and client errors, and the CPU used meanwhile (100 % = one core) by
the server process, by the PostgreSQL backends of the benchmark database (both also per
request), by this load generator and by everything else on the machine. Target (the issue's):
p99 < 50 ms for /api/v1/jobs?limit=100 and /api/v1/status at 50 concurrent clients; the other
lines are for comparison. The database is dropped at the end. Exit status: 0 whatever the
targets say (PASS/FAIL is printed); 1 on an error, a wrong answer, any non-200 response, or a
scan during the measurements.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from sqlalchemy.engine import make_url

from service.core.jobspec import parse_job
from service.db.models import Job
from service.http.web.paging import JOBS_PER_PAGE
from service.http.web.queries import STATUS_ORDER
from service.http.web.views import TOKEN_COOKIE
from service.store.jobs import new_job
from service.store.tokens import hash_token, new_token

from harness import (
    BenchError,
    Server,
    check_disposable,
    code_version,
    copy_columns,
    create_database,
    drop_database,
    dsn,
    orm_record,
    percentile,
    start_bare,
    start_service,
    verdict,
    wait_until,
)
from probes import BackendCpu, machine_cpu, process_cpu_seconds

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/bm_bench_api"
TARGET_P99_MS = 50.0
DASHBOARD_P99_MS = 300.0  # the issue's, for `/` at 2 000 jobs

KINDS = ("pg", "mysql", "files", "mail", "vm", "ldap", "git", "s3sync")
# How a fleet of backups looks on a normal day: mostly ok, a few in every other state.
STATUS_WEIGHTS = {"ok": 70, "warning": 8, "critical": 7, "unknown": 5, "pending": 5, "paused": 5}
QUERY_TEXT = "mysql"
LAST_PAGE = 100  # the dashboard's last page at 10 000 jobs (past the end: the last page)
RULES: tuple[dict[str, Any], ...] = (
    {"min_size": "1MiB", "max_size_drop": "50%"},
    {"min_count": 7},
    {},
)


# --------------------------------------------------------------------------------------------
# The data: jobs as a scan leaves them, and their artifacts


@dataclass
class Fleet:
    """The jobs generated, and what the API must answer about them."""

    jobs: list[Job]
    newest: dict[str, tuple[datetime, int]]  # job name -> mtime and size of its newest artifact
    statuses: Counter[str] = field(default_factory=Counter)

    @staticmethod
    def matches(job: Job, text: str) -> bool:
        """What `?q=text` selects: case-insensitive text in the name or the description."""
        return text.lower() in job.name.lower() or text.lower() in job.description.lower()


def _reason(code: str, severity: str, message: str) -> list[dict[str, str]]:
    return [{"code": code, "severity": severity, "message": message}]


def build_fleet(count: int, per_job: int, now: datetime, seed: int = 1) -> Fleet:
    """`count` declared jobs (realistic declarations, validated by parse_job) with the state a
    scan leaves, for `per_job` artifacts each. Every job gets its artifact rows, a pending one
    too (as if its files did not match yet): only the listing's cost matters here."""
    statuses = list(STATUS_WEIGHTS)
    weights = list(STATUS_WEIGHTS.values())
    created = now - timedelta(days=per_job + 300)
    fleet = Fleet(jobs=[], newest={})
    for index in range(count):
        rng = random.Random(seed * 1_000_003 + index)
        kind = KINDS[index % len(KINDS)]
        name = f"{kind}-{index:05d}"
        host = f"host-{index % 250:03d}"
        declared: dict[str, Any] = {
            "name": name,
            "description": f"{kind} backup of {host}, kept 100 days",
            "tags": ["prod" if index % 5 else "staging", f"team-{index % 7}", kind],
            "source": {"type": "local", "path": f"/srv/backups/{host}/{name}",
                       "pattern": "*.tar.gz"},
            "schedule": {"every": "1d"} if index % 5 else
                        {"cron": "30 2 * * *", "timezone": "Europe/Paris"},
            "grace": "2h",
            "rules": RULES[index % len(RULES)],
        }  # fmt: skip
        status = rng.choices(statuses, weights)[0]
        declared["paused"] = status == "paused"
        # A pending job was declared recently and has no backup yet.
        job = new_job(
            parse_job(declared), now - timedelta(hours=1) if status == "pending" else created
        )
        # The newest backup: a few hours old, days old for a late (critical) job.
        age = (
            timedelta(days=3, hours=rng.randint(0, 20))
            if status == "critical"
            else timedelta(hours=rng.randint(1, 20), minutes=rng.randint(0, 59))
        )
        newest = now - age
        size = rng.randint(200, 2000) * 1024 * 1024
        newest_path = f"{name}-{per_job:04d}.tar.gz"
        latest: dict[str, Any] | None = {
            "path": newest_path, "size": size, "mtime": newest.isoformat()
        }  # fmt: skip
        deadline: datetime | None = newest + timedelta(days=1, hours=2)
        reasons: list[dict[str, str]] = []
        if status == "warning":
            reasons = _reason(
                "size_drop", "warning",
                f"newest backup {newest_path} is {size // 2**20} MiB, 61 % smaller than the "
                "median of the previous 10 (1.2 GiB); the limit is a 50 % drop",
            )  # fmt: skip
        elif status == "critical":
            due = (newest + timedelta(days=1, hours=2)).strftime("%Y-%m-%d %H:%M UTC")
            reasons = _reason(
                "late", "critical",
                f"newest backup {newest_path} is 3d {age.seconds // 3600}h old; "
                f"a new one was due by {due}",
            )  # fmt: skip
        elif status == "unknown":
            source = declared["source"]["path"]
            reasons = _reason(
                "source_error", "unknown", f"cannot list {source}: [Errno 13] Permission denied"
            )
        elif status == "pending":
            latest, deadline = None, now + timedelta(hours=rng.randint(1, 26))
        elif status == "paused":
            deadline = None
        job.status = status
        job.reasons = reasons
        job.latest_artifact = latest
        job.artifact_count = 0 if latest is None else per_job
        job.checked_at = now - timedelta(minutes=rng.randint(0, 14))
        job.status_changed_at = now - timedelta(days=rng.randint(0, 60), minutes=rng.randint(0, 9))
        job.next_check_at = deadline
        job.listing_digest = hashlib.blake2b(name.encode(), digest_size=20).hexdigest()
        fleet.jobs.append(job)
        fleet.newest[name] = (newest, size)
        fleet.statuses[status] += 1
    return fleet


ARTIFACT_COLUMNS = ("job_id", "path", "size", "mtime", "first_seen", "last_seen")


def artifact_records(fleet: Fleet, ids: dict[str, int], per_job: int, now: datetime,
                     seed: int = 2) -> Iterator[tuple[Any, ...]]:  # fmt: skip
    """`per_job` artifacts a job, one a day, the newest at the job's latest_artifact mtime."""
    day = timedelta(days=1)
    for job in fleet.jobs:
        rng = random.Random(seed * 1_000_003 + ids[job.name])
        job_id, name, (newest, newest_size) = ids[job.name], job.name, fleet.newest[job.name]
        for k in range(1, per_job + 1):
            mtime = newest - (per_job - k) * day
            first_seen = mtime + timedelta(seconds=rng.randint(60, 900))
            size = newest_size if k == per_job else rng.randint(200, 2000) * 1024 * 1024
            yield job_id, f"{name}-{k:04d}.tar.gz", size, mtime, first_seen, now


@dataclass
class LoadReport:
    jobs_seconds: float = 0.0
    artifacts_seconds: float = 0.0
    vacuum_seconds: float = 0.0
    fleet_seconds: float = 0.0
    artifacts: int = 0

    @property
    def total_seconds(self) -> float:
        return self.fleet_seconds + self.jobs_seconds + self.artifacts_seconds + self.vacuum_seconds


async def load_data(url: str, fleet: Fleet, per_job: int, now: datetime,
                    report: LoadReport) -> None:  # fmt: skip
    connection = await asyncpg.connect(dsn(url), timeout=10)
    try:
        started = time.perf_counter()
        columns = copy_columns(Job.__table__)
        await connection.copy_records_to_table(
            "jobs",
            records=(orm_record(job, columns) for job in fleet.jobs),
            columns=[column.name for column in columns],
        )
        ids = {
            row["name"]: row["id"] for row in await connection.fetch("SELECT id, name FROM jobs")
        }
        report.jobs_seconds = time.perf_counter() - started

        started = time.perf_counter()
        # The rows are consistent by construction: skip the per-row foreign-key trigger
        # (superuser only; without the privilege, the load is just slower).
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await connection.execute("SET session_replication_role = replica")
        result = await connection.copy_records_to_table(
            "artifacts",
            records=artifact_records(fleet, ids, per_job, now),
            columns=ARTIFACT_COLUMNS,
        )
        report.artifacts = int(result.split()[-1])
        await connection.execute("RESET session_replication_role")
        report.artifacts_seconds = time.perf_counter() - started

        started = time.perf_counter()
        await connection.execute("VACUUM (ANALYZE) jobs, artifacts, scan_runs, api_tokens")
        report.vacuum_seconds = time.perf_counter() - started
    finally:
        await connection.close()


async def create_db_token(url: str) -> str:
    """A read-only token stored in the database (checked by one query a request)."""
    token = new_token()
    connection = await asyncpg.connect(dsn(url), timeout=10)
    try:
        await connection.execute(
            "INSERT INTO api_tokens (name, token_hash, read_only, created_at)"
            " VALUES ('bench', $1, true, now())",
            hash_token(token),
        )
    finally:
        await connection.close()
    return token


async def count_scans(url: str) -> int:
    connection = await asyncpg.connect(dsn(url), timeout=10)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM scan_runs"))
    finally:
        await connection.close()


# --------------------------------------------------------------------------------------------
# Load


@dataclass(frozen=True)
class Target:
    key: str
    path: str
    server: str  # "bare" or "service"
    issue: bool = False  # one of the issue's targets
    check: Callable[[Any, Fleet], list[str]] | None = None
    html: bool = False  # the body is a page (checked as text), not JSON
    p99_ms: float = TARGET_P99_MS


def _check_page(keep: Callable[[Job], bool]) -> Callable[[Any, Fleet], list[str]]:
    """The check of a `?limit=100` page of the jobs that `keep` selects: total and names."""

    def check(body: Any, fleet: Fleet) -> list[str]:
        problems = []
        names = sorted(job.name for job in fleet.jobs if keep(job))
        if body.get("total") != len(names):
            problems.append(f"total {body.get('total')}, expected {len(names)}")
        got = [item.get("name") for item in body.get("items", [])]
        if got != names[:100]:
            problems.append(f"{len(got)} items {got[:2]}..., expected {names[:2]}...")
        return problems

    return check


def _check_status(body: Any, fleet: Fleet) -> list[str]:
    problems = []
    if body.get("jobs") != len(fleet.jobs):
        problems.append(f"jobs {body.get('jobs')}, expected {len(fleet.jobs)}")
    counts = {status: fleet.statuses.get(status, 0) for status in STATUS_WEIGHTS}
    if body.get("counts") != counts:
        problems.append(f"counts {body.get('counts')}, expected {counts}")
    if (body.get("last_scan") or {}).get("status") != "finished":
        problems.append(f"last_scan {body.get('last_scan')}")
    return problems


def _check_dashboard(page: int) -> Callable[[Any, Fleet], list[str]]:
    """The check of the dashboard's page `page` (the last one when there are fewer): its
    rows, worst first then by name, and the summary counts of every job."""

    def check(body: Any, fleet: Fleet) -> list[str]:
        problems = []
        ordered = sorted(fleet.jobs, key=lambda job: (STATUS_ORDER[job.status], job.name))
        shown_page = min(page, max(1, -(-len(ordered) // JOBS_PER_PAGE)))
        start = (shown_page - 1) * JOBS_PER_PAGE
        names = [job.name for job in ordered[start : start + JOBS_PER_PAGE]]
        got = re.findall(r'<tr data-job="([^"]+)"', body)
        if got != names:
            problems.append(f"{len(got)} rows {got[:2]}..., expected {names[:2]}...")
        counts = dict(re.findall(r'data-status="(\w+)"><strong>(\d+)</strong>', body))
        expected = {status: str(fleet.statuses.get(status, 0)) for status in STATUS_WEIGHTS}
        if {status: counts.get(status) for status in expected} != expected:
            problems.append(f"counts {counts}, expected {expected}")
        return problems

    return check


TARGETS = (
    Target("bare", "/constant", "bare",
           check=lambda body, _fleet: [] if body.get("status") == "ok" else [f"body {body}"]),
    Target("live", "/health/live", "service",
           check=lambda body, _fleet: [] if body == {"status": "ok"} else [f"body {body}"]),
    Target("jobs", "/api/v1/jobs?limit=100", "service", issue=True,
           check=_check_page(lambda _job: True)),
    Target("status", "/api/v1/status", "service", issue=True, check=_check_status),
    Target("critical", "/api/v1/jobs?limit=100&status=critical", "service",
           check=_check_page(lambda job: job.status == "critical")),
    Target("q", f"/api/v1/jobs?limit=100&q={QUERY_TEXT}", "service",
           check=_check_page(lambda job: Fleet.matches(job, QUERY_TEXT))),
    Target("dashboard", "/", "service", check=_check_dashboard(1), html=True,
           p99_ms=DASHBOARD_P99_MS),
    Target("dashboard-last", f"/?page={LAST_PAGE}", "service", check=_check_dashboard(LAST_PAGE),
           html=True, p99_ms=DASHBOARD_P99_MS),
)  # fmt: skip
TARGET_KEYS = tuple(target.key for target in TARGETS)


@dataclass
class Measure:
    latencies: list[float]
    errors: Counter[str]
    seconds: float
    # CPU seconds used during the measurement: the server process, the PostgreSQL backends
    # serving the benchmark database, this process, and every CPU of the machine.
    server_cpu: float
    postgres_cpu: float
    client_cpu: float
    machine_cpu: float
    new_connections: int  # PostgreSQL backends started during the measurement

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())


async def drive(session: aiohttp.ClientSession, url: str, concurrency: int, warmup: float,
                seconds: float, server_pid: int, database: str = "") -> Measure:  # fmt: skip
    """`concurrency` workers sending requests back to back for `warmup` + `seconds`; only the
    requests started after the warm-up count. The load does not stop in between, so the
    measurement starts with the connections (the client's and the service's pool) in use."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    clock = time.perf_counter
    boundary = clock() + warmup
    deadline = boundary + seconds
    postgres = BackendCpu(database)
    before: dict[str, Any] = {}

    async def worker() -> None:
        while (started := clock()) < deadline:
            try:
                async with session.get(url) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                if started >= boundary:
                    errors[type(exc).__name__] += 1
                continue
            if started < boundary:
                continue
            if status == 200:
                latencies.append(clock() - started)
            else:
                errors[f"HTTP {status}"] += 1

    async def start_measuring() -> None:
        await asyncio.sleep(max(0.0, boundary - clock()))
        before.update(
            time=clock(), server=process_cpu_seconds(server_pid), client=time.process_time(),
            machine=machine_cpu(),
        )  # fmt: skip
        postgres.start()

    await asyncio.gather(start_measuring(), *(worker() for _ in range(concurrency)))
    elapsed = clock() - before["time"]
    postgres_cpu = postgres.stop()
    machine_after = machine_cpu()
    busy = machine_after[0] - before["machine"][0]
    total = machine_after[1] - before["machine"][1]
    return Measure(
        latencies=latencies,
        errors=errors,
        seconds=elapsed,
        server_cpu=process_cpu_seconds(server_pid) - before["server"],
        postgres_cpu=postgres_cpu,
        new_connections=postgres.new,
        client_cpu=time.process_time() - before["client"],
        # busy jiffies over all jiffies, of all CPUs together: as seconds of one CPU
        machine_cpu=busy / total * (os.cpu_count() or 1) * elapsed if total else 0.0,
    )


def summarize(target: Target, measure: Measure, body_bytes: int) -> dict[str, Any]:
    ordered = sorted(measure.latencies)
    rps = measure.requests / measure.seconds

    def percent(cpu_seconds: float) -> float:
        return round(100 * cpu_seconds / measure.seconds, 1)

    p99 = percentile(ordered, 0.99) * 1000
    return {
        "target": target.key,
        "path": target.path,
        "issue_target": target.issue,
        "requests": measure.requests,
        "seconds": round(measure.seconds, 3),
        "requests_per_second": round(rps, 1),
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 2),
        "p90_ms": round(percentile(ordered, 0.90) * 1000, 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else None,
        "errors": dict(measure.errors),
        "body_bytes": body_bytes,
        # CPU in % of one core (100 % = one core busy all along), and per request
        "server_cpu_percent": percent(measure.server_cpu),
        "server_cpu_ms_per_request": round(1000 * measure.server_cpu / max(1, measure.requests), 3),
        "postgres_cpu_percent": percent(measure.postgres_cpu),
        "postgres_cpu_ms_per_request": round(
            1000 * measure.postgres_cpu / max(1, measure.requests), 3
        ),
        "postgres_new_connections": measure.new_connections,
        "client_cpu_percent": percent(measure.client_cpu),
        "machine_cpu_percent": percent(measure.machine_cpu),
        "other_cpu_percent": percent(
            measure.machine_cpu - measure.server_cpu - measure.postgres_cpu - measure.client_cpu
        ),
        "p99_target_ms": target.p99_ms,
        "pass": bool(ordered) and p99 < target.p99_ms and not measure.errors,
    }


async def probe(session: aiohttp.ClientSession, url: str, html: bool) -> tuple[Any, int]:
    """One request outside the measurement: the body (parsed, or text for a page) and its
    size."""
    async with session.get(url) as response:
        raw = await response.read()
        if response.status != 200:
            raise BenchError(f"GET {url}: HTTP {response.status}: {raw[:300]!r}")
    return raw.decode() if html else json.loads(raw), len(raw)


# --------------------------------------------------------------------------------------------
# The run


async def run(args: argparse.Namespace, log_dir: Path, say: Callable[[str], None]
              ) -> dict[str, Any]:  # fmt: skip
    url = args.database_url
    bootstrap = "bench-" + new_token()  # API_TOKEN (at least 16 characters)
    profile = args.profile / "service.prof" if args.profile else None
    servers: list[Server] = []
    try:
        bare = start_bare(log_dir)
        servers.append(bare)
        service = start_service(url, bootstrap, log_dir, profile)
        servers.append(service)
        token = await create_db_token(url) if args.auth == "db" else bootstrap
        # The API reads the bearer token, the dashboard its login cookie.
        headers = {"Authorization": f"Bearer {token}", "Cookie": f"{TOKEN_COOKIE}={token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            await wait_until(bare, session, "/constant", lambda _body: True, "an answer")
            say("waiting for the service and its startup scan (on the empty database) ...")
            await wait_until(
                service, session, "/api/v1/status",
                lambda body: (body.get("last_scan") or {}).get("status") not in (None, "running"),
                "a finished startup scan",
            )  # fmt: skip
        scans_before = await count_scans(url)

        say(f"loading {args.jobs} jobs and {args.jobs * args.artifacts_per_job} artifacts ...")
        loaded = LoadReport()
        now = datetime.now(UTC)
        started = time.perf_counter()
        fleet = build_fleet(args.jobs, args.artifacts_per_job, now)
        loaded.fleet_seconds = time.perf_counter() - started
        await load_data(url, fleet, args.artifacts_per_job, now, loaded)
        say(
            f"  declared in {loaded.fleet_seconds:.1f} s, jobs copied in"
            f" {loaded.jobs_seconds:.1f} s, artifacts in {loaded.artifacts_seconds:.1f} s,"
            f" VACUUM ANALYZE {loaded.vacuum_seconds:.1f} s"
        )
        if loaded.artifacts != args.jobs * args.artifacts_per_job:
            raise BenchError(f"{loaded.artifacts} artifacts copied")

        targets = [t for t in TARGETS if t.key == "bare" or t.key in args.targets]
        pids = {"bare": bare.process.pid, "service": service.process.pid}
        bases = {"bare": bare.base, "service": service.base}
        load_before = os.getloadavg()
        results = []
        connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=args.concurrency)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(
            headers=headers, connector=connector, timeout=timeout
        ) as session:
            for target in targets:
                target_url = bases[target.server] + target.path
                body, size = await probe(session, target_url, target.html)
                problems = target.check(body, fleet) if target.check else []
                if problems:
                    raise BenchError(f"GET {target.path}: wrong answer: {'; '.join(problems)}")
                say(f"{target.path}: {args.warmup:g} s warm-up, {args.seconds:g} s measured ...")
                server_pid = pids[target.server]
                database = make_url(url).database or "" if target.server == "service" else ""
                measure = await drive(
                    session, target_url, args.concurrency, args.warmup, args.seconds,
                    server_pid, database,
                )  # fmt: skip
                results.append(summarize(target, measure, size))
        load_after = os.getloadavg()
        scans_after = await count_scans(url)
    finally:
        codes = {server.name: server.stop() for server in servers}
    bad_exits = {name: code for name, code in codes.items() if code not in (0, None)}
    if bad_exits:
        say(f"warning: server exit codes {bad_exits}; logs in {log_dir}")
    bare_rps, bare_p99 = results[0]["requests_per_second"], results[0]["p99_ms"]
    for result in results:
        result["vs_bare"] = round(result["requests_per_second"] / bare_rps, 4)
        # On a loaded machine the bare handler's own p99 says how much is the machine's.
        result["p99_vs_bare"] = round(result["p99_ms"] / bare_p99, 2) if bare_p99 else None
    return {
        "database": make_url(url).render_as_string(hide_password=True),
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "code": code_version(),
        "cpus": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in load_after],
        "jobs": args.jobs,
        "artifacts": loaded.artifacts,
        "job_statuses": dict(fleet.statuses),
        "load_seconds": {
            "declare": round(loaded.fleet_seconds, 2),
            "copy_jobs": round(loaded.jobs_seconds, 2),
            "copy_artifacts": round(loaded.artifacts_seconds, 2),
            "vacuum_analyze": round(loaded.vacuum_seconds, 2),
            "total": round(loaded.total_seconds, 2),
        },
        "concurrency": args.concurrency,
        "warmup_seconds": args.warmup,
        "measured_seconds": args.seconds,
        "auth": args.auth,
        "scans_during_run": scans_after - scans_before,
        "results": results,
        "profile": str(profile) if profile else None,
    }


def print_report(result: dict[str, Any]) -> None:
    load = result["load_seconds"]
    before = " ".join(f"{v:.2f}" for v in result["load_average_before"])
    after = " ".join(f"{v:.2f}" for v in result["load_average_after"])
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(result["job_statuses"].items()))
    auth = ("API_TOKEN (no query)" if result["auth"] == "env"
            else "a token stored in api_tokens (one query a request)")  # fmt: skip
    lines = [
        f"backup-monitor API benchmark — {result['database']}"
        f" (code {result['code']}, Python {result['python']}, aiohttp {result['aiohttp']})",
        f"machine: {result['cpus']} CPUs; load average {before} before the measurements,"
        f" {after} after (1, 5, 15 min)",
        f"data: {result['jobs']} jobs ({statuses}) and {result['artifacts']} artifacts,"
        f" loaded in {load['total']:.1f} s (declare {load['declare']:.1f} s, COPY jobs"
        f" {load['copy_jobs']:.1f} s, COPY artifacts {load['copy_artifacts']:.1f} s,"
        f" VACUUM ANALYZE {load['vacuum_analyze']:.1f} s)",
        f"load: {result['concurrency']} concurrent clients in one process (one aiohttp"
        f" ClientSession, connector limit {result['concurrency']}, keep-alive), auth {auth};"
        f" {result['warmup_seconds']:g} s warm-up + {result['measured_seconds']:g} s measured"
        " per target; the service and the bare handler each run in their own process",
        "",
        f"{'target':42} {'req/s':>7} {'vs bare':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
        f" {'max ms':>8} {'non-200':>7} {'bytes':>6}",
    ]
    names = {}
    for r in result["results"]:
        names[r["target"]] = ("* " if r["issue_target"] else "  ") + (
            "bare aiohttp handler (constant)" if r["target"] == "bare" else r["path"]
        )
        lines.append(
            f"{names[r['target']]:42} {r['requests_per_second']:7.0f} {r['vs_bare']:7.3f}"
            f" {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {r['p99_ms']:8.2f} {r['max_ms']:8.2f}"
            f" {sum(r['errors'].values()):7d} {r['body_bytes']:6d}"
        )
    lines += [
        "(* = the issue's targets; non-200 = other statuses and client errors)",
        "",
        "CPU during each measurement, in % of one core (the machine has"
        f" {result['cpus'] * 100} %), and per request:",
        f"{'target':42} {'server':>7} {'ms/req':>7} {'postgres':>8} {'ms/req':>7}"
        f" {'new conns':>9} {'load gen':>8} {'others':>7} {'machine':>7}",
    ]
    for r in result["results"]:
        lines.append(
            f"{names[r['target']]:42} {r['server_cpu_percent']:6.0f}%"
            f" {r['server_cpu_ms_per_request']:7.3f} {r['postgres_cpu_percent']:7.0f}%"
            f" {r['postgres_cpu_ms_per_request']:7.3f} {r['postgres_new_connections']:9d}"
            f" {r['client_cpu_percent']:7.0f}%"
            f" {r['other_cpu_percent']:6.0f}% {r['machine_cpu_percent']:6.0f}%"
        )
    clients = result["concurrency"]
    lines += [
        "(server: the process answering; postgres: the backends connected to the benchmark"
        " database, and new conns: how many of them started during the measurement; load gen:"
        " this process; others: the rest of the machine)",
        f"(with {clients} clients each waiting for its answer, mean latency = {clients} / req/s:"
        f" a p99 under {TARGET_P99_MS:g} ms needs well over"
        f" {clients / (TARGET_P99_MS / 1000):.0f} req/s)",
        "",
    ]
    for r in result["results"]:
        if r["target"] == "bare":
            continue
        mark = " (issue target)" if r["issue_target"] else ""
        lines.append(
            f"{r['path']:42} p99 {r['p99_ms']:8.2f} ms, {r['p99_vs_bare']}x the bare"
            f" handler's (target < {r['p99_target_ms']:g} ms)"
            f"  {verdict(r['pass'])}{mark}"
        )
    errors = {r["path"]: r["errors"] for r in result["results"] if r["errors"]}
    lines.append(f"errors: {errors}" if errors else "errors: none (every response was 200)")
    lines.append(f"scans during the run: {result['scans_during_run']} (expected 0)")
    if result.get("profile"):
        lines.append(
            f"(service profiled with cProfile: its times are inflated) {result['profile']}"
        )
    print("\n".join(lines))


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs (10000)")
    parser.add_argument("--artifacts-per-job", type=int, default=100,
                        help="artifacts per job (100)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent clients (50)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measured seconds per target (10)")  # fmt: skip
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target (2)")
    parser.add_argument("--targets", default=",".join(TARGET_KEYS[1:]),
                        help=f"comma-separated, among {', '.join(TARGET_KEYS[1:])} (all); the"
                        " bare handler is always measured")  # fmt: skip
    parser.add_argument("--auth", choices=("env", "db"), default="env",
                        help="send API_TOKEN (env, default) or a token stored in the database"
                        )  # fmt: skip
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL,
                        help="dropped and recreated; its name must contain 'bench'")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run the service under cProfile: DIR/service.prof")  # fmt: skip
    args = parser.parse_args(argv)
    args.targets = [key.strip() for key in args.targets.split(",") if key.strip()]
    unknown = [key for key in args.targets if key not in TARGET_KEYS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}")
    if args.jobs < 1 or args.artifacts_per_job < 1 or args.concurrency < 1:
        parser.error("--jobs, --artifacts-per-job and --concurrency must be at least 1")
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be positive and --warmup not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def say(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr, flush=True)

    database_created = False
    log_dir: Path | None = None  # the servers' output, kept when something went wrong
    try:
        check_disposable(args.database_url, postgresql_only="it loads its data with COPY")
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
        say(f"machine: {os.cpu_count()} CPUs, load average {load}")
        say("creating and migrating the database ...")
        database_created = True
        create_database(args.database_url)
        log_dir = Path(tempfile.mkdtemp(prefix="bm-bench-api-"))
        result = asyncio.run(run(args, log_dir, say))
    except (BenchError, OSError, asyncpg.PostgresError, aiohttp.ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if log_dir is not None:
            print(f"(server logs in {log_dir})", file=sys.stderr)
        return 1
    finally:
        if database_created:
            try:
                drop_database(args.database_url)
            except Exception as exc:  # report, but do not hide the main error
                print(f"error: could not drop the database: {exc}", file=sys.stderr)

    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    shutil.rmtree(log_dir, ignore_errors=True)
    failed = [r["path"] for r in result["results"] if r["errors"]]
    if failed or result["scans_during_run"]:
        print(f"error: non-200 answers ({failed}) or a scan during the run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
