"""SFTP source benchmark: a directory of N files on a real OpenSSH sshd, listed through the
service's sftp adapter against a bare asyncssh listing, in the same run.

    .venv/bin/python bench/sftp.py [--files 20000] [--rounds 3] [--json]

Starts its own sshd (Debian's openssh-server) on a free loopback port with a fresh host key and
client key in a temporary directory, fills a directory with N small files, then times, best of
`rounds` (interleaved, each first in turn, after one untimed warm-up of each):

- bare: asyncssh.connect with the same options the adapter uses (the key, the known_hosts, no
  agent, no ~/.ssh), the directory read as a stream (`scandir`), the regular files kept as
  (name, size, mtime);
- adapter: `SftpListing.list()` (connect, stat the root, scandir, match, build the entries);
- service: the lister's `list_remote` (the adapter, then the listing ordered and fingerprinted
  in a worker thread), what a scan pays per sftp job.

The ratio service/bare is the one to read (target: at most 1.5, the issue's target for S3); the
client's CPU time is reported beside it (steadier than wall time on a busy machine; the sshd's
work is the same for all three).
Exit status 0 whatever the ratio; non-zero only when something went wrong (wrong counts).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncssh

from service.core.jobspec import SftpSource
from service.scanner.sources.lister import list_remote
from service.scanner.sources.sftp import SftpListing

from harness import BenchError, code_version, free_port, verdict

TARGET = 1.5
SSHD = "/usr/sbin/sshd"


def tool(name: str, *candidates: str) -> str:
    found = shutil.which(name) or next((c for c in candidates if os.access(c, os.X_OK)), None)
    if found is None:
        raise BenchError(f"{name} is not installed (`make tools` installs it)")
    return found


@contextmanager
def sshd(base: Path) -> Iterator[tuple[int, Path, Path]]:
    """A running sshd: (port, client key, known_hosts); stopped and waited for at the end."""
    keygen = tool("ssh-keygen")
    for name in ("host_key", "client_key"):
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)], check=True
        )
    (base / "authorized_keys").write_text((base / "client_key.pub").read_text())
    root = os.geteuid() == 0
    if root:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"ListenAddress 127.0.0.1:{port}",
                f"HostKey {base / 'host_key'}",
                f"PidFile {base / 'sshd.pid'}",
                f"AuthorizedKeysFile {base / 'authorized_keys'}",
                "AuthenticationMethods publickey",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                f"UsePAM {'yes' if root else 'no'}",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    log = base / "sshd.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [tool("sshd", SSHD), "-D", "-e", "-f", str(config)],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while "Server listening" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"sshd did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        host_key = " ".join((base / "host_key.pub").read_text().split()[:2])
        known_hosts = base / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_key}\n")
        yield port, base / "client_key", known_hosts
    finally:
        process.terminate()
        process.wait(10)


def fill(directory: Path, count: int) -> None:
    directory.mkdir()
    stamp = time.time() - 86400
    for index in range(count):
        path = directory / f"backup-{index:07d}.tar.gz"
        path.write_bytes(b"x" * (index % 97))
        os.utime(path, (stamp + index, stamp + index))


async def bare(source: SftpListing) -> int:
    """The reference: the adapter's own connection options, the directory read as a stream
    (scandir), each regular file kept as (name, size, mtime)."""
    options = await source._options(*await asyncio.to_thread(source._read_files))
    files = []
    spec = source.spec
    async with asyncssh.connect(spec.host, spec.port, config=None, **options) as connection:
        sftp = await connection.start_sftp_client(path_encoding=None)
        async for entry in sftp.scandir(spec.path.encode()):
            if entry.attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
                files.append((entry.filename, entry.attrs.size, entry.attrs.mtime))
    return len(files)


async def adapter(source: SftpListing) -> int:
    return len((await source.list()).entries)


async def service(source: SftpListing) -> int:
    listing = await list_remote(source, asyncio.Semaphore(1), 600)
    if not hasattr(listing, "entries"):
        raise BenchError(f"the listing failed: {listing}")
    assert listing.fingerprint is not None  # type: ignore[union-attr]
    return len(listing.entries)  # type: ignore[union-attr]


async def measure(source: SftpListing, files: int, rounds: int) -> dict[str, Any]:
    ways: dict[str, Callable[[SftpListing], Awaitable[int]]] = {
        "bare": bare, "adapter": adapter, "service": service,
    }  # fmt: skip
    best = dict.fromkeys(ways, float("inf"))
    cpu = dict.fromkeys(ways, float("inf"))
    counts: dict[str, int] = {}
    names = list(ways)
    for round_ in range(rounds + 1):  # round 0: the warm-up, untimed
        for name in names[round_ % 3 :] + names[: round_ % 3]:  # each first in turn
            way = ways[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            counts[name] = await way(source)
            elapsed = time.perf_counter() - start
            if round_:
                best[name] = min(best[name], elapsed)
                cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    wrong = {name: count for name, count in counts.items() if count != files}
    if wrong:
        raise BenchError(f"wrong counts (expected {files}): {wrong}")
    return {
        "files": files,
        "rounds": rounds,
        "seconds": {name: round(value, 4) for name, value in best.items()},
        "cpu_seconds": {name: round(value, 4) for name, value in cpu.items()},
        "ratio_service_vs_bare": round(best["service"] / best["bare"], 3),
        "ratio_adapter_vs_bare": round(best["adapter"] / best["bare"], 3),
        "cpu_ratio_service_vs_bare": round(cpu["service"] / cpu["bare"], 3),
        "target": TARGET,
        "code": code_version(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sftp-") as temporary:
            base = Path(temporary)
            fill(base / "remote", args.files)
            with sshd(base) as (port, client_key, known_hosts):
                spec = SftpSource.model_validate(
                    {
                        "type": "sftp", "host": "127.0.0.1", "port": port,
                        "username": getpass.getuser(), "key_file": str(client_key),
                        "known_hosts": str(known_hosts), "path": str(base / "remote"),
                        "pattern": "*.tar.gz",
                    }
                )  # fmt: skip
                result = asyncio.run(measure(SftpListing(spec), args.files, args.rounds))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    seconds, cpu = result["seconds"], result["cpu_seconds"]
    print(f"sftp listing of {args.files} files (best of {args.rounds}), code {result['code']}")
    for name in ("bare", "adapter", "service"):
        times = f"{seconds[name] * 1000:9.1f} ms (this process's CPU {cpu[name] * 1000:.1f} ms)"
        print(f"  {name:8} {times}")
    ratio = result["ratio_service_vs_bare"]
    print(
        f"  service / bare = {ratio:.2f} (target <= {TARGET}: {verdict(ratio <= TARGET)}); "
        f"adapter / bare = {result['ratio_adapter_vs_bare']:.2f}; CPU service / bare = "
        f"{result['cpu_ratio_service_vs_bare']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
