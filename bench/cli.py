"""Start-up of the command line (issue 16): `backup-monitor --help` and `scan --job X` of one
small job on a migrated database, whole processes, against `python -c pass` in the same run.

Each command runs `--runs` times (default 5), the three interleaved so that a change of load
hits them alike; the report gives each one's median wall time and CPU time (user + system) and
the ratio to `python -c pass`, and which heavy packages each imported (`python -X importtime`):
`--help` none, a scan of a database already at head not alembic.

Bytecode is cached as in an installed service (the image compiles it at build, pip at install):
in a directory of this run (PYTHONPYCACHEPREFIX, PYTHONDONTWRITEBYTECODE unset), filled by one
untimed run of each command.

    python bench/cli.py [--runs 5] [--database-url URL] [--json]

The database is dropped and recreated (its name must contain `bench`); by default a SQLite file
in a temporary directory, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    REPO,
    BenchError,
    check_disposable,
    code_version,
    create_database,
    drop_database,
    verdict,
)

JOB = "bench-small"
FILES = 3
HELP_TARGET = 0.3  # seconds, median wall time (issue 16)
SCAN_TARGET = 1.0
HEAVY = ("sqlalchemy", "aiohttp", "alembic", "pydantic", "apprise", "asyncpg", "yaml")
TIMEOUT = 120


@dataclass
class Measure:
    name: str
    command: list[str]
    expected_code: int = 0
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    heavy_imports: list[str] = field(default_factory=list)

    def run(self, env: dict[str, str], cwd: Path) -> str:
        """One run, timed (wall clock and the child's CPU); its standard output."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(
            self.command, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
        )
        self.wall.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != self.expected_code:
            raise BenchError(
                f"{' '.join(self.command)} exited {done.returncode}, not {self.expected_code}:\n"
                f"{done.stdout}{done.stderr}"
            )
        return done.stdout

    def find_heavy_imports(self, env: dict[str, str], cwd: Path) -> None:
        """The heavy top-level packages the command imports (from -X importtime)."""
        command = [self.command[0], "-X", "importtime", *self.command[1:]]
        done = subprocess.run(
            command, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
        )
        imported = {
            line.rpartition("|")[2].strip().split(".")[0]
            for line in done.stderr.splitlines()
            if line.startswith("import time:")
        }
        self.heavy_imports = sorted(imported & set(HEAVY))

    def summary(self, reference: Measure | None) -> dict[str, Any]:
        wall = statistics.median(self.wall)
        result: dict[str, Any] = {
            "name": self.name,
            "command": " ".join(
                Path(part).name if part == sys.executable else part for part in self.command
            ),
            "runs": len(self.wall),
            "wall_median": wall,
            "cpu_median": statistics.median(self.cpu),
            "heavy_imports": self.heavy_imports,
        }
        if reference is not None:
            result["ratio"] = wall / statistics.median(reference.wall)
        return result


def child_env(url: str, pycache: Path) -> dict[str, str]:
    """This environment without the service's own settings files, bytecode cached in `pycache`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("JOBS_FILE", "SCAN_ROOTS", "CHANNELS_FILE", "PYTHONDONTWRITEBYTECODE")
    }
    env.update(
        DATABASE_URL=url, LOG_LEVEL="WARNING", AUTO_MIGRATE="true", PYTHONPYCACHEPREFIX=str(pycache)
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def declare_job(directory: Path, env: dict[str, str]) -> None:
    """A job of FILES small files, declared with `jobs apply` (untimed)."""
    backups = directory / "backups"
    backups.mkdir()
    for index in range(FILES):
        (backups / f"db-{index}.sql.gz").write_bytes(b"x" * 1024)
    jobs = directory / "jobs.yaml"
    jobs.write_text(
        f"jobs:\n  - name: {JOB}\n    source: {{type: local, path: {json.dumps(str(backups))},"
        ' pattern: "*.sql.gz"}\n    schedule: {every: 1d}\n    grace: 1d\n'
    )
    command = [sys.executable, "-m", "service", "jobs", "apply", str(jobs)]
    done = subprocess.run(
        command, env=env, cwd=directory, capture_output=True, text=True, timeout=TIMEOUT
    )
    if done.returncode != 0:
        raise BenchError(f"jobs apply exited {done.returncode}:\n{done.stdout}{done.stderr}")


def measure(url: str, runs: int, directory: Path) -> dict[str, Any]:
    env = child_env(url, directory / "pycache")
    create_database(url)
    try:
        declare_job(directory, env)
        python = sys.executable
        reference = Measure("python -c pass", [python, "-c", "pass"])
        help_ = Measure("--help", [python, "-m", "service", "--help"])
        scan = Measure(f"scan --job {JOB}", [python, "-m", "service", "scan", "--job", JOB])
        measures = [reference, help_, scan]
        for one in measures:  # untimed: fills the bytecode cache, checks the output
            out = one.run(env, directory)
            one.wall.clear()
            one.cpu.clear()
            one.find_heavy_imports(env, directory)
            if one is scan and f"OK      {JOB}" not in out:
                raise BenchError(f"the scan did not find {JOB} OK:\n{out}")
        for _ in range(runs):
            for one in measures:
                one.run(env, directory)
    finally:
        drop_database(url)
    results = [one.summary(None if one is reference else reference) for one in measures]
    return {
        "code_version": code_version(),
        "database": "sqlite" if url.startswith("sqlite") else "postgresql",
        "runs": runs,
        "results": results,
        "targets": {
            "--help": {"seconds": HELP_TARGET, "met": results[1]["wall_median"] <= HELP_TARGET},
            "scan": {"seconds": SCAN_TARGET, "met": results[2]["wall_median"] <= SCAN_TARGET},
            "help_imports_nothing_heavy": not results[1]["heavy_imports"],
            "scan_at_head_without_alembic": "alembic" not in results[2]["heavy_imports"],
        },
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"command-line start-up, {result['runs']} runs each, medians; database: "
        f"{result['database']}; code {result['code_version']}"
    ]
    for one in result["results"]:
        ratio = f"  {one['ratio']:5.1f}x python -c pass" if "ratio" in one else ""
        heavy = ", ".join(one["heavy_imports"]) or "none"
        lines.append(
            f"  {one['name']:<24} wall {one['wall_median']:6.3f} s  cpu {one['cpu_median']:6.3f} s"
            f"{ratio}  heavy imports: {heavy}"
        )
    targets = result["targets"]
    lines.append(
        f"  target --help <= {HELP_TARGET} s: {verdict(targets['--help']['met'])}; "
        f"scan <= {SCAN_TARGET} s: {verdict(targets['scan']['met'])}; "
        f"--help imports nothing heavy: {verdict(targets['help_imports_nothing_heavy'])}; "
        f"scan at head without alembic: {verdict(targets['scan_at_head_without_alembic'])}"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary directory")
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bm-bench-cli-") as temporary:
        directory = Path(temporary)
        url = args.database_url or f"sqlite+aiosqlite:///{directory / 'bm_bench_cli.db'}"
        try:
            check_disposable(url)
            result = measure(url, args.runs, directory)
        except BenchError as exc:
            print(f"bench/cli.py: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
