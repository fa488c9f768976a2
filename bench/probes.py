"""What the benchmarks read about processes and the machine (Linux /proc): a process's CPU
seconds, the PostgreSQL backends serving a database and their CPU, the machine's busy time, this
process's RSS and its high-water mark (and its children's), the event loop's lag, an HTTP
endpoint's latency seen from another process, and cProfile around a block.

Each reader is a plain function or a small sampler with start/stop (or `with`); none of them
changes what it measures, beyond the sampler's own small task (or its client process).

    python bench/probes.py --probe-http URL    # the HTTP client (started by HttpProbe)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import http.client
import json
import math
import os
import resource
import select
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAG_INTERVAL = 0.010
# The HTTP probe: a request every 15 ms, each given 1 s (a Kubernetes liveness probe's default
# timeout) before it counts as failed.
HTTP_INTERVAL = 0.015
HTTP_TIMEOUT = 1.0
HTTP_STARTUP_TIMEOUT = 60.0  # the client's start-up, on a loaded machine
THIS_SCRIPT = str(Path(__file__).resolve())


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_system_seconds(pid: int) -> float:
    """stime of a process alone (the kernel's share: system calls, the network stack)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def backends_of(database: str) -> list[int]:
    """The PostgreSQL backends connected to `database`, by their process title
    (`postgres: 15/main: USER DATABASE HOST(PORT) STATE`)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                title = cmdline.read().decode(errors="replace").split()
        except OSError:
            continue
        if title[:1] == ["postgres:"] and database in title[2:]:
            found.append(int(entry.name))
    return found


@dataclass
class BackendCpu:
    """The CPU of the PostgreSQL backends serving one database, sampled every `interval`
    (backends come and go as the pool opens and closes overflow connections): a backend seen
    at the first sample counts from there, a later one from zero; one that exits loses at most
    its last interval."""

    database: str
    interval: float = 0.2
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    new: int = 0  # backends started during the measurement
    _task: asyncio.Task[None] | None = None

    def sample(self, initial: bool = False) -> None:
        for pid in backends_of(self.database):
            cpu = process_cpu_seconds(pid)
            if pid not in self.first:
                self.first[pid] = cpu if initial else 0.0
                self.new += 0 if initial else 1
            self.last[pid] = max(cpu, self.last.get(pid, 0.0))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.sample()

    def start(self) -> None:
        if self.database:
            self.sample(initial=True)
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> float:
        if self._task is None:
            return 0.0
        self._task.cancel()
        self.sample()
        return sum(self.last[pid] - self.first[pid] for pid in self.first)


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together since boot."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _proc_status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def current_rss_mb() -> float | None:
    return _proc_status_mb("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0), so VmHWM is this scan's peak."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def peak_since_reset_mb() -> float | None:
    return _proc_status_mb("VmHWM")


def children_of(pid: int) -> list[int]:
    """Every process under `pid`, children and theirs (Linux /proc/PID/task/TID/children)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue  # gone meanwhile
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children", encoding="ascii") as children:
                    pids = [int(child) for child in children.read().split()]
            except OSError:
                continue
            found += pids
            todo += pids
    return found


def rss_mb_of(pid: int) -> float:
    """A process's VmRSS (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class TreeRss:
    """The RSS of this process and of the processes under it (a scan's walker processes)
    summed, sampled every `interval` beside the block (`with`): the highest sum seen, and the
    children's share of it. A sample, not a high-water mark: a peak between two samples is
    missed. `exclude`: processes left out (a probe's client)."""

    exclude: set[int] = field(default_factory=set)
    interval: float = 0.05
    peak_mb: float = 0.0
    children_mb: float = 0.0  # at the peak
    most_children: int = 0
    _task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        children = [pid for pid in children_of(os.getpid()) if pid not in self.exclude]
        own = rss_mb_of(os.getpid())
        theirs = sum(rss_mb_of(pid) for pid in children)
        self.most_children = max(self.most_children, len(children))
        if own + theirs > self.peak_mb:
            self.peak_mb, self.children_mb = own + theirs, theirs

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def __enter__(self) -> TreeRss:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.sample()

    def summary(self) -> dict[str, Any]:
        return {
            "peak_mb": round(self.peak_mb, 1),
            "children_mb": round(self.children_mb, 1),
            "most_children": self.most_children,
        }


@dataclass
class LagMonitor:
    """A ticker beside the scan: how late does a 10 ms sleep wake up?"""

    interval: float = LAG_INTERVAL
    lags: list[float] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.interval)
            self.lags.append(max(0.0, loop.time() - started - self.interval))

    def __enter__(self) -> LagMonitor:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.lags)
        if not ordered:
            return {"samples": 0, "max_ms": None, "p99_ms": None, "over_50ms": 0}
        return {
            "samples": len(ordered),
            "max_ms": round(ordered[-1] * 1000, 2),
            "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2),
            "over_50ms": sum(1 for lag in ordered if lag > 0.050),
        }


def nearest_rank(ordered: list[float], q: float) -> float:
    """The smallest value with at least q of the values at or below it (`ordered` non-empty)."""
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def probe_http(url: str, interval: float, timeout: float) -> None:
    """The client of HttpProbe, in a process of its own (so that it shares neither the GIL nor
    the event loop of what it measures): GET `url` on a new connection (as a liveness checker
    does) every `interval` s, until its standard input closes. Prints "ready" after the first
    request (not counted), then at the end one JSON list of [milliseconds, ok] per request; a
    request that failed or took `timeout` s counts as failed, with at least `timeout` s."""
    parts = urllib.parse.urlsplit(url)
    results: list[tuple[float, bool]] = []
    next_at = time.perf_counter()
    first = True
    while True:
        started = time.perf_counter()
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        try:
            connection.request("GET", parts.path or "/")
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
        finally:
            connection.close()
        seconds = time.perf_counter() - started
        ok = ok and seconds < timeout
        if first:
            print("ready", flush=True)
            first = False
        else:
            results.append((round(1000 * (seconds if ok else max(seconds, timeout)), 3), ok))
        # Sleep until the next request is due, or until stdin closes (the stop).
        next_at = max(next_at + interval, time.perf_counter())
        if select.select([sys.stdin], [], [], max(0.0, next_at - time.perf_counter()))[0]:
            break
    print(json.dumps(results), flush=True)


@dataclass
class HttpProbe:
    """GET `url` every `interval` s from another process while the block runs (`async with`):
    what a liveness checker sees of this process's event loop. `summary()` gives the latency
    of the requests made during the block (a failed one counts as `timeout`)."""

    url: str
    interval: float = HTTP_INTERVAL
    timeout: float = HTTP_TIMEOUT
    results: list[tuple[float, bool]] = field(default_factory=list)
    _process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> HttpProbe:
        self._process = process = await asyncio.create_subprocess_exec(
            sys.executable, THIS_SCRIPT, "--probe-http", self.url,
            "--interval", str(self.interval), "--timeout", str(self.timeout),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            async with asyncio.timeout(HTTP_STARTUP_TIMEOUT):
                line = await process.stdout.readline()
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            process.kill()
            await process.wait()
            raise RuntimeError(f"the HTTP probe of {self.url} did not start ({line!r})")
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def __aexit__(self, *_exc: object) -> None:
        process = self._process
        assert process is not None
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.close()  # its stop: it ends the request in hand and prints the results
        try:
            async with asyncio.timeout(self.timeout + HTTP_STARTUP_TIMEOUT):
                output = await process.stdout.read()
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(f"the HTTP probe of {self.url} did not stop") from None
        if process.returncode != 0:
            raise RuntimeError(f"the HTTP probe of {self.url} exited {process.returncode}")
        self.results = [(ms, ok) for ms, ok in json.loads(output)]

    def summary(self) -> dict[str, Any]:
        ordered = sorted(ms for ms, _ok in self.results)
        if not ordered:
            return {"requests": 0, "failed": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
        return {
            "requests": len(ordered),
            "failed": sum(1 for _ms, ok in self.results if not ok),
            "p50_ms": nearest_rank(ordered, 0.50),
            "p99_ms": nearest_rank(ordered, 0.99),
            "max_ms": ordered[-1],
        }


class Profiler:
    """cProfile around one block, dumped to DIR/NAME.prof (no-op without --profile)."""

    def __init__(self, directory: Path | None, name: str) -> None:
        self.path = directory / f"{name}.prof" if directory else None
        self.profile = cProfile.Profile() if directory else None

    def __enter__(self) -> Profiler:
        if self.profile:
            self.profile.enable()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.profile and self.path:
            self.profile.disable()
            self.profile.dump_stats(self.path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the HTTP client of HttpProbe")
    parser.add_argument("--probe-http", metavar="URL", required=True)
    parser.add_argument("--interval", type=float, default=HTTP_INTERVAL)
    parser.add_argument("--timeout", type=float, default=HTTP_TIMEOUT)
    arguments = parser.parse_args()
    probe_http(arguments.probe_http, arguments.interval, arguments.timeout)
