"""bench/watch.py runs at a tiny size (SQLite, real `serve` processes): it must keep working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_watch_benchmark_runs_at_a_tiny_size(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'bm_bench_watch.db'}"
    command = [
        sys.executable, str(REPO / "bench" / "watch.py"), "--events", "3", "--spread", "0.5",
        "--idle-dirs", "5", "--idle-seconds", "1", "--settle", "0", "--database-url", url,
        "--json",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    latency = result["latency"]
    assert latency["events"] == 3
    # Every file landing was judged, well before any full scan (10 000 min away) could come; the
    # bound itself is asserted in test_watch.py.
    assert 0 <= latency["status"]["max"] < 10
    assert latency["webhook"]["max"] >= latency["status"]["min"]
    idle = result["idle"]
    assert idle["dirs"] == 5
    assert idle["on"]["seconds"] >= 1 and idle["off"]["seconds"] >= 1
