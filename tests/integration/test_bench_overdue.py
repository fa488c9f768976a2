"""bench/overdue.py runs at a tiny size (SQLite, a real `serve` process): it must keep working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_overdue_benchmark_runs_at_a_tiny_size(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'bm_bench_overdue.db'}"
    command = [
        sys.executable, str(REPO / "bench" / "overdue.py"), "--events", "2", "--spread", "0.5",
        "--tick", "0.5", "--max-duration", "1", "--database-url", url, "--json",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["events"] == 2
    # The detection itself (the bound the issue sets) is asserted in test_overdue.py; here
    # only that every hang was seen, well before any full scan could have come.
    assert 0 <= result["status"]["max"] < 10
    assert result["webhook"]["max"] >= result["status"]["min"]
