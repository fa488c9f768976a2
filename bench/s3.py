"""S3 listing benchmark: N objects listed through the service's S3 adapter against a bare
aiobotocore paginated listing with the same client settings, in the same run.

    .venv/bin/python bench/s3.py [--objects 100000] [--runs 3] [--json]

Starts moto's S3 server (tests/moto_peer.py, in its own process, on a free loopback port) and
fills one bucket with N objects under `bench/` through the peer's seeding route (moto's PutObject
takes ~12 ms an object here). Then, --runs times, alternating, each in a fresh process of its
own (`--child MODE`), after an untimed warm-up listing of an empty prefix in that process (the
imports, botocore's model, the client):

- bare: `get_paginator("list_objects_v2").paginate(Bucket, Prefix="bench/", Delimiter="/")`,
  1 000 keys a page, with the adapter's client settings (path addressing, its timeouts and
  retries), counting the keys and adding up their sizes, keeping nothing;
- service: `S3Listing(S3Source(...)).list()`, the adapter the scanner runs, which keeps every
  entry (key below the prefix, size, mtime) and its details (ETag, storage class); then,
  reported apart, the lister's `finish` (ordering and fingerprint, in a thread in the service).

Reported: the best time of each, their ratio (target: service ≤ 1.5 × bare), the client
process's CPU time of each (moto's own work, most of the wall time, is the same for both; the CPU
ratio shows the adapter's cost alone, steadier on a busy machine), and the service
process's memory growth over the listing, its peak RSS (VmHWM, reset after the warm-up) less
its RSS before (target: ≤ 50 MB for 100 000 objects). Exit status 0 whatever the targets say
(PASS/FAIL is printed); 1 on an error or a wrong count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
from harness import BenchError, verdict

REPO = harness.REPO
PREFIX = "bench/"
SECRET_VARIABLE = "BM_BENCH_S3_SECRET"
TARGET_RATIO = 1.5
TARGET_GROWTH_MB = 50.0
SEED_CHUNK = 10_000


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/self/status")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: /proc/self/clear_refs, value 5)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


# --- the measured side: one process per measurement ------------------------------------------


async def child(mode: str, peer: dict[str, Any], bucket: str) -> dict[str, Any]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    from service.core.jobspec import S3Source
    from service.scanner.sources import s3
    from service.scanner.sources.fingerprint import finish

    def spec(prefix: str) -> S3Source:
        return S3Source(type="s3", bucket=bucket, prefix=prefix, exclude=[],
                        endpoint_url=f"http://127.0.0.1:{peer['port']}", addressing="path",
                        access_key_id=peer["access_key_id"],
                        secret_access_key="${" + SECRET_VARIABLE + "}")  # fmt: skip

    environ = {SECRET_VARIABLE: peer["secret_access_key"]}
    # The bare listing builds its client exactly as the adapter does (s3.S3Listing.list).
    config = AioConfig(
        s3={"addressing_style": "path"}, connect_timeout=s3.CONNECT_TIMEOUT,
        read_timeout=s3.READ_TIMEOUT,
        retries={"mode": "standard", "total_max_attempts": s3.ATTEMPTS},
        user_agent_extra="backup-monitor",
    )  # fmt: skip

    async def bare(prefix: str) -> tuple[int, int]:
        session = get_session()
        session.register_component("data_loader", await s3._prepare())
        count = total = 0
        async with session.create_client(
            "s3", endpoint_url=f"http://127.0.0.1:{peer['port']}", region_name="us-east-1",
            aws_access_key_id=peer["access_key_id"],
            aws_secret_access_key=peer["secret_access_key"], config=config,
        ) as client:  # fmt: skip
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, Delimiter="/", PaginationConfig={"PageSize": 1000}
            )
            async for page in pages:
                for item in page.get("Contents", ()):
                    count += 1
                    total += item["Size"]
        return count, total

    async def service(prefix: str) -> Any:
        return await s3.S3Listing(spec(prefix), environ=environ).list()

    run = bare if mode == "bare" else service
    await run("warm-up/")  # untimed: imports, botocore's model, aiohttp
    rss_before = status_kib("VmRSS")
    peak_reset = reset_peak()
    started, cpu = time.perf_counter(), time.process_time()
    listed = await run(PREFIX)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = status_kib("VmHWM") if peak_reset else status_kib("VmRSS")
    result: dict[str, Any] = {"mode": mode, "seconds": seconds, "cpu_seconds": cpu,
                              "growth_mb": (peak - rss_before) / 1024}  # fmt: skip
    if mode == "bare":
        result["count"], result["bytes"] = listed
    else:
        result["count"] = len(listed.entries)
        result["bytes"] = sum(entry[1] for entry in listed.entries)
        result["details"] = len(listed.details)
        started = time.perf_counter()
        finish(listed)
        result["finish_seconds"] = time.perf_counter() - started
    return result


def measure(mode: str, peer: dict[str, Any], bucket: str) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode,
               "--peer", json.dumps(peer), "--bucket", bucket]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "AWS_EC2_METADATA_DISABLED": "true"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800,
                          check=False, cwd=REPO)  # fmt: skip
    if done.returncode != 0:
        raise BenchError(f"the {mode} listing failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


# --- the peer ---------------------------------------------------------------------------------


def start_peer(log: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    with log.open("wb") as errors:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "moto_peer.py")], stdout=subprocess.PIPE,
            stderr=errors, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith(b"{"):
        process.kill()
        process.wait()
        raise BenchError(f"moto's server did not start: {log.read_text(errors='replace')[-2000:]}")
    peer: dict[str, Any] = json.loads(line)
    return process, peer


def seed(peer: dict[str, Any], bucket: str, count: int) -> int:
    """N objects under PREFIX (sizes 0..999 bytes), in chunks; their total size."""
    total = 0
    for start in range(0, max(count, 1), SEED_CHUNK):
        items = [{"key": f"{PREFIX}{n:07d}.tar.gz", "size": n % 1000}
                 for n in range(start, min(start + SEED_CHUNK, count))]  # fmt: skip
        total += sum(item["size"] for item in items)  # type: ignore[misc]
        request = urllib.request.Request(
            f"http://127.0.0.1:{peer['port']}/_peer/objects",
            data=json.dumps({"bucket": bucket, "objects": items}).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=600) as answer:
            if json.load(answer) != {"objects": len(items)}:
                raise BenchError("the peer did not store every object")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=100_000, help="objects (100000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each; the best counts (3)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--child", choices=["bare", "service"], help=argparse.SUPPRESS)
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, json.loads(args.peer), args.bucket))))
        return 0

    say = (lambda _m: None) if args.json else (lambda m: print(m, flush=True))
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bm-bench-s3-moto-{os.getpid()}.log"
    process, peer = start_peer(log)
    try:
        bucket = "bm-bench-s3"
        started = time.perf_counter()
        total = seed(peer, bucket, args.objects)
        say(f"{args.objects} objects put in moto in {time.perf_counter() - started:.1f} s")
        runs: dict[str, list[dict[str, Any]]] = {"bare": [], "service": []}
        for _ in range(args.runs):
            for mode in ("bare", "service"):
                result = measure(mode, peer, bucket)
                if (result["count"], result["bytes"]) != (args.objects, total):
                    raise BenchError(
                        f"{mode} listed {result['count']} objects ({result['bytes']} bytes), "
                        f"not {args.objects} ({total} bytes)"
                    )
                if mode == "service" and result["details"] != args.objects:
                    raise BenchError(f"details of {result['details']} objects, not all")
                runs[mode].append(result)
                say(
                    f"  {mode:7} {result['seconds']:.3f} s (client CPU "
                    f"{result['cpu_seconds']:.3f} s), memory +{result['growth_mb']:.1f} MB"
                )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.unlink(missing_ok=True)

    bare = min(r["seconds"] for r in runs["bare"])
    service = min(r["seconds"] for r in runs["service"])
    growth = max(r["growth_mb"] for r in runs["service"])
    finish = min(r["finish_seconds"] for r in runs["service"])
    ratio = service / bare if bare else float("inf")
    bare_cpu = min(r["cpu_seconds"] for r in runs["bare"])
    service_cpu = min(r["cpu_seconds"] for r in runs["service"])
    report = {
        "objects": args.objects, "runs": args.runs, "code_version": harness.code_version(),
        "bare_seconds": bare, "service_seconds": service, "ratio": ratio,
        "ratio_target": TARGET_RATIO, "ratio_ok": ratio <= TARGET_RATIO,
        "bare_cpu_seconds": bare_cpu, "service_cpu_seconds": service_cpu,
        "cpu_ratio": service_cpu / bare_cpu if bare_cpu else None,
        "finish_seconds": finish, "ratio_with_finish": (service + finish) / bare if bare else None,
        "service_growth_mb": growth,
        "bare_growth_mb": max(r["growth_mb"] for r in runs["bare"]),
        "growth_target_mb": TARGET_GROWTH_MB, "growth_ok": growth <= TARGET_GROWTH_MB,
    }  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"S3 listing of {args.objects} objects (moto, best of {args.runs}), "
          f"code {report['code_version']}")  # fmt: skip
    print(f"  bare aiobotocore paginator  {bare:8.3f} s")
    print(f"  service adapter (list)      {service:8.3f} s   ratio {ratio:.2f} "
          f"(target <= {TARGET_RATIO}) {verdict(report['ratio_ok'])}")  # fmt: skip
    print(
        f"  client CPU: bare {bare_cpu:.3f} s, service {service_cpu:.3f} s, ratio "
        f"{report['cpu_ratio']:.2f} (moto's own time is in the wall times above)"
    )
    print(f"  + ordering and fingerprint  {finish:8.3f} s   ratio with it "
          f"{report['ratio_with_finish']:.2f}")  # fmt: skip
    print(f"  memory growth of the listing {growth:.1f} MB (target <= {TARGET_GROWTH_MB:g} MB) "
          f"{verdict(report['growth_ok'])}; bare {report['bare_growth_mb']:.1f} MB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
