"""What the benchmarks read about processes and the machine (Linux /proc): a process's CPU
seconds, the PostgreSQL backends serving a database and their CPU, the machine's busy time, this
process's RSS and its high-water mark, the event loop's lag, and cProfile around a block.

Each reader is a plain function or a small sampler with start/stop (or `with`); none of them
changes what it measures, beyond the sampler's own small task.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAG_INTERVAL = 0.010


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
