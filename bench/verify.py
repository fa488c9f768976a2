"""Verification engine throughput against the standard tools, on the same file, in the same run:
service.verify's gzip check against `gzip -t`, and its sha256 against `sha256sum`.

    .venv/bin/python bench/verify.py [--size 1GB] [--runs 3] [--dir DIR] [--json]

It writes dump-like text of `--size` bytes (SQL INSERT lines, ~3:1 under gzip), compresses it
with `gzip -6` (what a backup script writes), reads the file once untimed (the page cache warm
for every side), then times each side `--runs` times, alternating, and keeps the best. The
service side runs `verify_file` in this process with an unlimited budget: `archive` alone for
gzip (the gzip stream read through, every member's CRC and length checked), `checksum` alone
for sha256 (a SHA256SUMS written beside the file, as sha256sum writes it). Throughput is the
compressed file's bytes per second; a ratio is the tool's time over ours (1.0: as fast).

Targets (issue 14): gzip >= 0.8x `gzip -t`, checksum >= 0.9x `sha256sum`. Exit status 1 when a
verification does not say ok or the digests differ; 0 whatever the targets say (PASS/FAIL is
printed).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from service.core.units import parse_size
from service.verify.budget import Budget
from service.verify.formats import Limits, verify_file

from harness import POOL, dump_block


def write_dump(path: Path, size: int) -> None:
    rng = random.Random(14)
    pool = [dump_block(rng) for _ in range(POOL)]
    with open(path, "wb") as file:
        left = size
        while left > 0:
            piece = b"".join(rng.choices(pool, k=64))[:left]
            file.write(piece)
            left -= len(piece)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run_tool(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1GB", help="bytes of text before compression (1GB)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each side (best kept)")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (a temp dir)")
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    args = parser.parse_args()
    for tool in ("gzip", "sha256sum"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: it is the reference")
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="bm_bench_verify_", dir=args.dir) as work:
        dump = Path(work) / "dump.sql"
        write_dump(dump, size)
        subprocess.run(["gzip", "-6", str(dump)], check=True)
        gz = dump.with_name("dump.sql.gz")
        compressed = gz.stat().st_size
        digest = run_tool(["sha256sum", str(gz)]).split()[0]
        (gz.parent / "SHA256SUMS").write_text(f"{digest}  {gz.name}\n")
        with open(gz, "rb") as file:  # the page cache: warm for every side
            while file.read(1 << 20):
                pass
        unlimited = Budget(None)
        problems = []

        def ours_gzip() -> None:
            outcome = verify_file(gz, archive=True, checksum=False, limits=Limits(),
                                  budget=unlimited)  # fmt: skip
            if not outcome.ok or outcome.checked != ("gzip",):
                problems.append(f"gzip verification: {outcome.result}: {outcome.detail}")

        def ours_sha256() -> None:
            outcome = verify_file(gz, archive=False, checksum=True, limits=Limits(),
                                  budget=unlimited)  # fmt: skip
            if not outcome.ok or outcome.digest != digest:
                problems.append(f"sha256 verification: {outcome.result}: {outcome.detail}")

        sides = {
            "gzip -t": lambda: run_tool(["gzip", "-t", str(gz)]),
            "verify gzip": ours_gzip,
            "sha256sum": lambda: run_tool(["sha256sum", str(gz)]),
            "verify sha256": ours_sha256,
        }
        best = {name: float("inf") for name in sides}
        for _ in range(max(1, args.runs)):
            for name, action in sides.items():
                best[name] = min(best[name], timed(action))
    mb = compressed / 1e6
    report = {
        "text_bytes": size,
        "compressed_bytes": compressed,
        "runs": args.runs,
        "seconds": best,
        "mb_per_s": {name: mb / seconds for name, seconds in best.items()},
        "gzip_ratio": best["gzip -t"] / best["verify gzip"],
        "sha256_ratio": best["sha256sum"] / best["verify sha256"],
        "problems": problems,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"file: {size / 1e6:.0f} MB of dump-like text, {mb:.0f} MB gzipped; best of "
              f"{args.runs}")  # fmt: skip
        for name, seconds in best.items():
            print(f"  {name:<14} {seconds:8.3f} s  {mb / seconds:8.1f} MB/s")
        for label, ratio, target in (("gzip", report["gzip_ratio"], 0.8),
                                     ("sha256", report["sha256_ratio"], 0.9)):  # fmt: skip
            verdict = "PASS" if ratio >= target else "FAIL"
            print(f"{label}: {ratio:.2f}x the tool (target >= {target}x): {verdict}")
        for problem in problems:
            print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
