"""Every benchmark in bench/ runs at a tiny size (seconds each), so that a change of the schema
or of an interface a benchmark uses fails `make test` instead of rotting the benchmark unseen.

The numbers are not looked at (bench/README.md's targets are for full-size runs on an idle
machine): only that each script runs to its end, exit status 0, with its own correctness
checks passed (counts, every ping stored, every notice delivered once). bench/overdue.py has
its own test (test_bench_overdue.py). PostgreSQL benchmarks get a database of their own on the
test server (a `bench` name: the scripts drop and recreate it); an unreachable server skips,
and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.support import TEST_DATABASE_URL, in_thread, missing, pg_admin

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 120


@pytest.fixture
def bench_pg_url() -> Iterator[str]:
    """A database name on the test PostgreSQL server for one benchmark run: the benchmark
    creates (and drops) it itself; dropped here too if the run died half-way."""
    try:
        in_thread(lambda: asyncio.run(pg_admin("SELECT 1")))
    except Exception as exc:
        missing(f"PostgreSQL at {make_url(TEST_DATABASE_URL)!r} is unreachable: {exc}")
    name = f"bm_bench_smoke_{uuid.uuid4().hex[:12]}"
    yield make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    in_thread(lambda: asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')))


def run_bench(script: str, env: dict[str, str], *arguments: str) -> str:
    """Run bench/`script` with `arguments`; its standard output, or a failure with its output."""
    command = [sys.executable, str(REPO / "bench" / script), *arguments]
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture
def bench_url(request, tmp_path):
    """A function: the database URL for a benchmark on `kind` (postgresql or sqlite)."""

    def url(kind: str) -> str:
        if kind == "sqlite":
            return f"sqlite+aiosqlite:///{tmp_path / 'bm_bench_scan.db'}"
        bench_url: str = request.getfixturevalue("bench_pg_url")
        return bench_url

    return url


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_the_scan_benchmark_runs_at_a_tiny_size(kind, bench_url, base_env):
    if shutil.which("find") is None:
        missing("find is missing (findutils): bench/scan.py measures the scanner against it")
    url = bench_url(kind)
    out = run_bench(
        "scan.py", base_env, "--jobs", "3", "--files", "4", "--rescans", "1",
        "--database-url", url, "--json",
    )  # fmt: skip
    result = json.loads(out)
    assert result["count_problems"] == []
    assert result["artifact_rows"] == 12
    assert result["first_scan"]["scan_run"]["artifacts_new"] == 12
    assert result["rescan"]["scan_run"]["artifacts_new"] == 0
    # /health/live probed from another process during each scan (a tiny scan may see none).
    live = [result["first_scan"]["health_live"], *result["rescan"]["health_live"]]
    assert len(live) == 2
    for scan in live:
        assert set(scan) == {"requests", "failed", "p50_ms", "p99_ms", "max_ms", "pass"}
        assert scan["failed"] == 0
        assert (scan["p99_ms"] is None) == (scan["requests"] == 0) == (scan["pass"] is None)
    assert result["health_live"]["target_p99_ms"] == 50
    assert "pass" in result["health_live"]


def test_the_ping_benchmark_runs_at_a_tiny_size(bench_pg_url, base_env):
    out = run_bench(
        "pings.py", base_env, "--jobs", "3", "--concurrency", "4", "--warmup", "0.1",
        "--seconds", "0.5", "--database-url", bench_pg_url,
    )  # fmt: skip
    found = re.search(r"pings answered OK: (\d+), stored: (\d+), failed requests: 0", out)
    assert found, out
    assert int(found[1]) == int(found[2]) > 0


def test_the_api_benchmark_runs_at_a_tiny_size(bench_pg_url, base_env):
    out = run_bench(
        "api.py", base_env, "--jobs", "30", "--artifacts-per-job", "2", "--concurrency", "2",
        "--warmup", "0", "--seconds", "0.3", "--database-url", bench_pg_url, "--json",
    )  # fmt: skip
    result = json.loads(out)
    assert result["jobs"] == 30
    assert result["artifacts"] == 60
    assert result["scans_during_run"] == 0
    measured = {r["target"]: r for r in result["results"]}
    assert set(measured) == {
        "bare",
        "live",
        "jobs",
        "status",
        "critical",
        "q",
        "dashboard",
        "dashboard-last",
    }
    assert all(r["requests"] > 0 and not r["errors"] for r in measured.values()), measured


def test_the_metrics_benchmark_runs_at_a_tiny_size(bench_pg_url, base_env):
    out = run_bench(
        "metrics.py", base_env, "--jobs", "6", "--requests", "3", "--database-url", bench_pg_url
    )
    assert "6 jobs on PostgreSQL" in out
    assert re.search(r"/ \(dashboard, 6 jobs\) server side p50 [\d.]+ ms", out), out


def test_the_notify_benchmark_runs_at_a_tiny_size(bench_pg_url, base_env):
    out = run_bench(
        "notify.py", base_env, "--jobs", "3", "--per-job", "2", "--concurrency", "2",
        "--database-url", bench_pg_url,
    )  # fmt: skip
    assert re.search(r"many jobs: 6 notices .* each exactly once: yes", out), out
    assert re.search(r"one job: 6 notices .* each exactly once: yes; in order: yes", out), out


def test_the_inserts_benchmark_runs_at_a_tiny_size(bench_pg_url, base_env):
    out = run_bench(
        "inserts.py", base_env, "--rows", "300", "--statements", "2", "--jobs", "2",
        "--database-url", bench_pg_url,
    )  # fmt: skip
    assert out.count("600 rows)") == 4, out


def test_the_cli_benchmark_runs_at_a_tiny_size(base_env, tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'bm_bench_cli.db'}"
    result = json.loads(
        run_bench("cli.py", base_env, "--runs", "1", "--database-url", url, "--json")
    )
    assert [r["name"] for r in result["results"]] == [
        "python -c pass",
        "--help",
        "scan --job bench-small",
    ]
    assert all(r["runs"] == 1 for r in result["results"])
    assert result["targets"]["help_imports_nothing_heavy"] is True
    assert result["targets"]["scan_at_head_without_alembic"] is True


def test_the_sftp_benchmark_runs_at_a_tiny_size(base_env):
    """Against its own real sshd: the adapter and the bare asyncssh listing count alike."""
    from tests.peers import SSHD, tool

    tool("sshd", SSHD)
    tool("ssh-keygen")
    result = json.loads(run_bench("sftp.py", base_env, "--files", "50", "--rounds", "1", "--json"))
    assert result["files"] == 50
    assert set(result["seconds"]) == {"bare", "adapter", "service"}
    assert all(value > 0 for value in result["seconds"].values())
    assert result["ratio_service_vs_bare"] > 0


def test_the_repos_benchmark_runs_at_a_tiny_size(base_env):
    for tool in ("restic", "borg"):
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed (`make tools` installs it)")
    result = json.loads(
        run_bench(
            "repos.py", base_env, "--snapshots", "5", "--runs", "1", "--borg-archives", "2",
            "--json",
        )
    )  # fmt: skip
    assert result["snapshots"] == 5
    assert result["stats_runs"] == 0
    assert result["bare_median_s"] > 0
    assert result["source_median_s"] > 0
    assert result["borg"]["archives"] == 2
    assert result["borg"]["info_runs"] == 0


def test_the_s3_benchmark_runs_at_a_tiny_size(base_env):
    try:
        import moto.server  # noqa: F401
    except ImportError:
        missing("moto[server] is not installed (`make venv` installs the dev dependencies)")
    result = json.loads(run_bench("s3.py", base_env, "--objects", "300", "--runs", "1", "--json"))
    # The script itself fails (exit 1) unless both sides listed all 300 objects, with details.
    assert result["objects"] == 300
    assert result["bare_seconds"] > 0 and result["service_seconds"] > 0
    assert result["service_growth_mb"] >= 0


def test_the_fleet_benchmark_runs_at_a_tiny_size(bench_pg_url, base_env):
    result = json.loads(
        run_bench(
            "fleet.py", base_env, "--jobs", "300", "--replicas", "3", "--cycles", "2",
            "--database-url", bench_pg_url, "--json",
        )
    )  # fmt: skip
    for cycle in result["cycles"]:
        assert cycle["each_job_once"] and cycle["share_min"] == cycle["share_max"] == 100
        assert cycle["rows_updated"] >= 600  # claimed and given back: two writes a job
    gone = result["after_one_replica_died"]
    assert gone["replicas"] == 2 and gone["each_job_once"] and gone["share_max"] == 150


def test_the_verification_benchmark_runs_at_a_tiny_size(base_env):
    result = json.loads(
        run_bench("verify_health.py", base_env, "--megabytes", "2", "--baseline-seconds", "0.2")
    )
    assert result["file_bytes"] > 2_000_000  # random data: gzip makes it no smaller
    assert result["during_ms"]["n"] >= 1 and result["baseline_ms"]["n"] >= 1


def test_the_verify_benchmark_runs_at_a_tiny_size(base_env):
    for tool in ("gzip", "sha256sum"):
        if shutil.which(tool) is None:
            missing(f"{tool} is missing: bench/verify.py measures the verification against it")
    result = json.loads(run_bench("verify.py", base_env, "--size", "2MB", "--runs", "1", "--json"))
    # The script itself fails (exit 1) unless both verifications said ok with the right digest.
    assert result["problems"] == []
    assert result["text_bytes"] == 2_000_000
    assert 0 < result["compressed_bytes"] < 2_000_000
    assert set(result["seconds"]) == {"gzip -t", "verify gzip", "sha256sum", "verify sha256"}
    assert result["gzip_ratio"] > 0 and result["sha256_ratio"] > 0


def test_the_verify_scan_benchmark_runs_at_a_tiny_size(base_env, bench_pg_url):
    # Slow budgets, so that a few MB last every rescan (the script fails when one does not).
    result = json.loads(
        run_bench(
            "verify_scan.py", base_env, "--jobs", "20", "--files", "2", "--megabytes", "4",
            "--runs", "1", "--rate", "1000000", "--unlimited-rate", "2000000",
            "--database-url", bench_pg_url, "--json",
        )
    )  # fmt: skip
    assert result["jobs"] == 20 and result["file_bytes"] >= 4_000_000
    for mode in ("alone", "budget", "unlimited"):
        assert len(result[mode]["runs"]) == 1 and result[mode]["best_seconds"] > 0
    assert result["budget"]["verify_mb_per_s"][0] > 0
    assert isinstance(result["pass"], bool)


def test_the_watch_refresh_benchmark_runs_at_a_tiny_size(base_env):
    out = run_bench("watch_refresh.py", base_env, "--jobs", "30", "--refreshes", "1")
    assert "check() (/health/ready's watch check)" in out
