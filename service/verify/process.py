"""Verifying local files in worker processes that yield the CPU to everything else.

Reading an archive through is CPU work (inflating, hashing) that may take a core for minutes.
It runs in worker processes (a ProcessPoolExecutor made by the service's verifier, spawned, so
nothing of the service's state is copied into them) that lower their own priority when they
start: nice 19, and, where the kernel groups processes by session for scheduling (Linux's
autogroup, on when the service is not in a CPU cgroup of its own), a session and a group of
their own at nice 19 too. A scan, a ping or the API then gets the cores first; the verifier has
whatever is left (measured in bench/verify_scan.py). A priority that cannot be lowered (no
/proc, a read-only one) is left as it is.

Each worker process holds what its initializer was given (the shared byte budget, the stop
signal) in one module-level slot: it is that process's own state, set once when it starts, and
never set in the service's process.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.verify.budget import Budget, StopSignal
from service.verify.formats import NOT_LISTED, Limits, Outcome, verify_file

NICE = 19


@dataclass(frozen=True, slots=True)
class _Worker:
    budget: Budget
    stop: StopSignal


_worker: list[_Worker] = []  # this worker process's own state (see the module docstring)


class _StopOrOrphan:
    """The service's stop signal, also set when the service is gone (this process was left
    alone: a reader of a 50 GB file must not go on for nobody)."""

    def __init__(self, stop: StopSignal) -> None:
        self.stop = stop
        self.parent = os.getppid()

    def is_set(self) -> bool:
        return self.stop.is_set() or os.getppid() != self.parent

    def wait(self, timeout: float | None = None) -> bool:
        if self.stop.wait(timeout):
            return True
        return self.is_set()


def lower_priority() -> None:
    """Make this process the last to get a CPU (see the module docstring); best effort."""
    with contextlib.suppress(OSError):
        os.setsid()  # a session of its own: its own autogroup, and no terminal's Ctrl-C
    with contextlib.suppress(OSError):
        os.nice(NICE - os.nice(0))
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as autogroup:
        autogroup.write(str(NICE))


def start_worker(budget_state: Any, stop: StopSignal) -> None:
    """The initializer of a worker process: its priority, its budget and stop signal."""
    # The service stops its workers through `stop`; a signal meant for the service (a Ctrl-C,
    # systemd's SIGTERM to the whole unit) must not kill one in the middle of a read.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    lower_priority()
    _worker[:] = [_Worker(Budget(state=budget_state), _StopOrOrphan(stop))]


def verify_local(
    path: str,
    artifact: str,
    size: int,
    mtime_us: int,
    archive: bool,
    checksum: bool,
    limits: Limits,
) -> Outcome:
    """Verify one local file (in a worker process); `artifact`: its path in its source. A file
    that is not the version listed (its size or time in microseconds differ: it is being
    rewritten, the next listing will say) is "changed", as is one that changes while it is read
    (verify_file sees that)."""
    (worker,) = _worker
    try:
        stat = os.stat(path)
    except OSError as exc:
        return Outcome("unreadable", f"{path} cannot be read: {exc.strerror}", 0, 0.0)
    if stat.st_size != size or stat.st_mtime_ns // 1000 != mtime_us:
        return NOT_LISTED
    return verify_file(
        Path(path),
        archive=archive,
        checksum=checksum,
        limits=limits,
        budget=worker.budget,
        stop=worker.stop,
        artifact=artifact,
    )
