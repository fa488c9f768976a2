"""A rescan of a restic repository whose snapshots' sizes are already known, through the
service's restic source, against the bare `restic snapshots --json` (issue 13, Performance:
"a rescan of a repository with 500 snapshots whose sizes are already known costs one
`snapshots --json`").

    .venv/bin/python bench/repos.py [--snapshots 500] [--runs 5] [--borg-archives 0] [--json]

The repository is real (made by `restic init` and one `restic backup` of a tiny file); the
other snapshots are written straight into it, encrypted with the repository's own master key
(`restic cat masterkey`) the way restic writes them (AES-256-CTR + Poly1305-AES, the file named
by its SHA-256): 500 `restic backup` runs take ~7 minutes here (each run derives the key with
scrypt, ~0.6 s), this takes a second. `restic snapshots` then lists all of them (checked).

Each run times `restic snapshots --json` (the reference, the same environment) and the source's
`list()` with every size known (the scanner's rescan: sizes read back, never computed). Target:
the source's median ≤ 1.2 × the bare median, and no `restic stats` run. Exit status: 0
whatever the target says (PASS/FAIL printed); 1 on an error (a miscount, a stats run).

With --borg-archives N the same is measured for borg (`borg list --json` against the borg
source with every size known; no `borg info` allowed), on N archives made by `borg create`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service.core.jobspec import BorgSource, ResticSource
from service.scanner.sources.borg import BorgListing
from service.scanner.sources.restic import ResticListing

from harness import BenchError, code_version, verdict

PASSWORD = "bench-password"
TARGET_RATIO = 1.2


def restic(args: list[str], env: Mapping[str, str]) -> str:
    done = subprocess.run(
        ["restic", *args], env=dict(env), capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"restic {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def encrypt(master: Mapping[str, Any], plaintext: bytes) -> bytes:
    """restic's encryption of a repository file: IV, AES-256-CTR, Poly1305-AES of the
    ciphertext (key r, and s = AES-128 of the IV under k)."""
    encrypt_key = base64.b64decode(master["encrypt"])
    k = base64.b64decode(master["mac"]["k"])
    r = base64.b64decode(master["mac"]["r"])
    iv = os.urandom(16)
    body = Cipher(algorithms.AES(encrypt_key), modes.CTR(iv)).encryptor().update(plaintext)
    ecb = Cipher(algorithms.AES(k), modes.ECB()).encryptor()
    s = ecb.update(iv) + ecb.finalize()
    mac = Poly1305.generate_tag(r + s, body)  # Poly1305 clamps r as restic does
    return iv + body + mac


def make_repository(base: Path, count: int) -> tuple[dict[str, str], list[str], int]:
    """A restic repository with `count` snapshots; its environment, snapshot ids, and the
    restore size every snapshot has (they share one tree)."""
    password_file = base / "password"
    password_file.write_text(PASSWORD + "\n")
    data = base / "data"
    data.mkdir()
    (data / "db.dump").write_bytes(os.urandom(1000))
    env = {
        "PATH": os.environ.get("PATH", os.defpath), "HOME": str(base), "TZ": "UTC",
        "LANG": "C.UTF-8", "RESTIC_REPOSITORY": str(base / "repo"),
        "RESTIC_PASSWORD_FILE": str(password_file),
    }  # fmt: skip
    restic(["init"], env)
    start = datetime(2025, 1, 1, 2, 0, tzinfo=UTC)
    restic(["backup", "--time", start.strftime("%Y-%m-%d %H:%M:%S"), str(data)], env)
    (first,) = json.loads(restic(["snapshots", "--json"], env))
    size = json.loads(restic(["stats", "--json", "--mode", "restore-size", first["id"]], env))
    master = json.loads(restic(["cat", "masterkey"], env))
    snapshot = json.loads(restic(["cat", "snapshot", first["id"]], env))
    directory = base / "repo" / "snapshots"
    for number in range(1, count):
        moment = start + timedelta(days=number)
        snapshot["time"] = moment.isoformat().replace("+00:00", "Z")
        sealed = encrypt(master, json.dumps(snapshot).encode())
        (directory / hashlib.sha256(sealed).hexdigest()).write_bytes(sealed)
    listed = json.loads(restic(["snapshots", "--json"], env))
    if len(listed) != count:
        raise BenchError(f"restic lists {len(listed)} snapshots, {count} were made")
    return env, [item["id"] for item in listed], int(size["total_size"])


class StatsCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stats = 0  # restic stats runs
        self.infos = 0  # borg info runs

    def emit(self, record: logging.LogRecord) -> None:
        arguments = getattr(record, "arguments", None)
        if record.getMessage() == "tool run" and arguments:
            self.stats += arguments[0] == "stats"
            self.infos += arguments[0] == "info"


async def measure(env: dict[str, str], ids: list[str], size: int, runs: int) -> dict[str, Any]:
    source = ResticSource(
        type="restic", repository=env["RESTIC_REPOSITORY"],
        password_file=env["RESTIC_PASSWORD_FILE"],
    )  # fmt: skip
    sizes = dict.fromkeys(ids, size)

    async def known() -> Mapping[str, int]:
        return sizes

    counter = StatsCounter()
    runner_log = logging.getLogger("service.scanner.sources.process")
    runner_log.addHandler(counter)
    runner_log.setLevel(logging.DEBUG)
    bare: list[float] = []
    adapter: list[float] = []
    old_home = os.environ.get("HOME")
    os.environ["HOME"] = env["HOME"]  # the same cache for both
    try:
        for _ in range(runs):
            started = time.perf_counter()
            answer = await asyncio.to_thread(restic, ["snapshots", "--json"], env)
            bare.append(time.perf_counter() - started)
            if len(json.loads(answer)) != len(ids):
                raise BenchError("the bare listing miscounted")
            started = time.perf_counter()
            listing = await ResticListing(source, known).list()
            adapter.append(time.perf_counter() - started)
            if len(listing.entries) != len(ids) or listing.warnings:
                raise BenchError(f"the source listed {len(listing.entries)} of {len(ids)}")
    finally:
        runner_log.removeHandler(counter)
        if old_home is not None:
            os.environ["HOME"] = old_home
    if counter.stats:
        raise BenchError(f"the rescan ran restic stats {counter.stats} times")
    ratio = statistics.median(adapter) / statistics.median(bare)
    return {
        "bare_median_s": round(statistics.median(bare), 4),
        "source_median_s": round(statistics.median(adapter), 4),
        "ratio": round(ratio, 3),
        "stats_runs": counter.stats,
        "target_ratio": TARGET_RATIO,
        "pass": ratio <= TARGET_RATIO,
    }


def make_borg_repository(base: Path, count: int) -> tuple[dict[str, str], list[str]]:
    """A borg repository with `count` archives of a tiny file (one `borg create` each: borg's
    format is not written by hand here; ~0.6 s an archive)."""
    data = base / "borg-data"
    data.mkdir()
    (data / "db.dump").write_bytes(os.urandom(1000))
    env = {
        "PATH": os.environ.get("PATH", os.defpath), "HOME": str(base), "TZ": "UTC",
        "LANG": "C.UTF-8", "BORG_REPO": str(base / "borg-repo"), "BORG_PASSPHRASE": PASSWORD,
    }  # fmt: skip

    def borg(*args: str) -> str:
        done = subprocess.run(["borg", *args], env=env, capture_output=True, text=True,
                              timeout=600, cwd=data, check=False)  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"borg {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    borg("init", "--encryption=repokey")
    start = datetime(2025, 1, 1, 2, 0, tzinfo=UTC)
    for number in range(count):
        stamp = (start + timedelta(days=number)).strftime("%Y-%m-%dT%H:%M:%S")
        borg("create", "--timestamp", stamp, f"::nightly-{number:04d}", ".")
    names = [a["name"] for a in json.loads(borg("list", "--json"))["archives"]]
    if len(names) != count:
        raise BenchError(f"borg lists {len(names)} archives, {count} were made")
    return env, names


async def measure_borg(env: dict[str, str], names: list[str], runs: int) -> dict[str, Any]:
    """The same comparison for borg: `borg list --json` against the source with sizes known."""
    os.environ["BORG_BENCH_PASSPHRASE"] = PASSWORD
    source = BorgSource(
        type="borg", repository=env["BORG_REPO"], passphrase="${BORG_BENCH_PASSPHRASE}"
    )
    sizes = dict.fromkeys(names, 1000)

    async def known() -> Mapping[str, int]:
        return sizes

    counter = StatsCounter()
    runner_log = logging.getLogger("service.scanner.sources.process")
    runner_log.addHandler(counter)
    runner_log.setLevel(logging.DEBUG)
    bare: list[float] = []
    adapter: list[float] = []
    old_home = os.environ.get("HOME")
    os.environ["HOME"] = env["HOME"]
    try:
        for _ in range(runs):
            started = time.perf_counter()
            done = await asyncio.to_thread(
                subprocess.run, ["borg", "list", "--json"], env=env, capture_output=True,
                timeout=600, check=True,
            )  # fmt: skip
            bare.append(time.perf_counter() - started)
            if len(json.loads(done.stdout)["archives"]) != len(names):
                raise BenchError("the bare borg listing miscounted")
            started = time.perf_counter()
            listing = await BorgListing(source, known).list()
            adapter.append(time.perf_counter() - started)
            if len(listing.entries) != len(names) or listing.warnings:
                raise BenchError(f"the borg source listed {len(listing.entries)} of {len(names)}")
    finally:
        runner_log.removeHandler(counter)
        if old_home is not None:
            os.environ["HOME"] = old_home
    if counter.infos:
        raise BenchError(f"the rescan ran borg info {counter.infos} times")
    ratio = statistics.median(adapter) / statistics.median(bare)
    return {
        "archives": len(names),
        "bare_median_s": round(statistics.median(bare), 4),
        "source_median_s": round(statistics.median(adapter), 4),
        "ratio": round(ratio, 3),
        "info_runs": counter.infos,
        "pass": ratio <= TARGET_RATIO,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snapshots", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--borg-archives", type=int, default=0,
                        help="also measure borg with this many archives (0: not)")  # fmt: skip
    options = parser.parse_args()
    if shutil.which("restic") is None:
        print("restic is not installed (`make tools` installs it)", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="bm-bench-repos-"))
    try:
        started = time.perf_counter()
        env, ids, size = make_repository(base, options.snapshots)
        made = time.perf_counter() - started
        result = asyncio.run(measure(env, ids, size, options.runs))
        if options.borg_archives:
            if shutil.which("borg") is None:
                raise BenchError("borg is not installed (`make tools` installs it)")
            borg_env, names = make_borg_repository(base, options.borg_archives)
            result["borg"] = asyncio.run(measure_borg(borg_env, names, options.runs))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result.update(snapshots=len(ids), runs=options.runs, setup_s=round(made, 2),
                  code=code_version())  # fmt: skip
    if options.json:
        print(json.dumps(result))
        return 0
    print(f"restic repository with {len(ids)} snapshots, sizes known (made in {made:.1f} s); "
          f"{options.runs} runs, code {result['code']}")  # fmt: skip
    print(f"  bare `restic snapshots --json`: median {result['bare_median_s'] * 1000:.0f} ms")
    print(f"  the restic source's rescan:     median {result['source_median_s'] * 1000:.0f} ms"
          f" ({result['stats_runs']} restic stats runs)")  # fmt: skip
    print(f"  ratio {result['ratio']:.2f} (target ≤ {TARGET_RATIO}): {verdict(result['pass'])}")
    if "borg" in result:
        borg = result["borg"]
        print(f"borg repository with {borg['archives']} archives, sizes known")
        print(f"  bare `borg list --json`:      median {borg['bare_median_s'] * 1000:.0f} ms")
        print(f"  the borg source's rescan:     median {borg['source_median_s'] * 1000:.0f} ms"
              f" ({borg['info_runs']} borg info runs)")  # fmt: skip
        print(f"  ratio {borg['ratio']:.2f} (target ≤ {TARGET_RATIO}): {verdict(borg['pass'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
