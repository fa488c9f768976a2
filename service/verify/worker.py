"""A verification process: reads one local file through at the lowest CPU priority.

Reading an archive through is CPU work (inflating, hashing) that may take a core for minutes.
The service's verifier runs it here, one process per file, started in a session of its own
(`python -m service.verify.worker`), which lowers its own priority first: nice 19, and, where
Linux schedules each session as a group (autogroup: the service is not in a CPU cgroup of its
own), its group at nice 19 too. Scans, pings and the API then get the cores first; the reader
has what is left (bench/verify_scan.py measures it). A priority that cannot be lowered is said
on stderr and the file is read anyway.

The conversation, one JSON object a line: the service writes the request (`path`,
`artifact`, `size`, `mtime_us`, `archive`, `checksum`, `limits`, `grant`); before reading more
than it was granted, the worker writes `{"take": n}` (`grant` bytes at a time) and reads `go`
(read them) or `stop` (stop: the outcome is "stopped"); it ends with `{"outcome": {...}}`. The
byte budget stays in the service (one budget for every reader), and a worker whose service is
gone reads the end of its input and stops at its next ask.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from service.verify.formats import NOT_LISTED, Limits, Outcome, verify_file

NICE = 19
AUTOGROUP_TRIES = 5  # the kernel takes one autogroup change per 100 ms from unprivileged users


def lower_priority() -> list[str]:
    """Make this process the last to get a CPU; what could not be done, said."""
    failed = []
    try:
        os.nice(NICE - os.nice(0))
    except OSError as exc:
        failed.append(f"nice {NICE}: {exc.strerror}")
    try:
        with open("/proc/self/autogroup") as autogroup:
            if autogroup.read().split()[-1] == str(NICE):
                return failed
    except (OSError, IndexError):  # no autogroup here: nice is what counts
        return failed
    for attempt in range(AUTOGROUP_TRIES):
        try:
            with open("/proc/self/autogroup", "w") as autogroup:
                autogroup.write(str(NICE))
            return failed
        except OSError as exc:
            if attempt == AUTOGROUP_TRIES - 1:
                failed.append(f"autogroup nice {NICE}: {exc.strerror}")
            time.sleep(0.15)
    return failed


class ServiceBudget:
    """The service's byte budget, asked over the pipes `grant` bytes at a time (fewer round
    trips through the service's event loop); each ask waits for its `go`."""

    def __init__(self, asks: IO[str], answers: IO[str], grant: int) -> None:
        self.asks = asks
        self.answers = answers
        self.grant = grant
        self.allowed = 0  # granted and not read yet

    def take(self, n: int, stop: threading.Event | None = None) -> bool:
        while self.allowed < n:
            ask = max(n - self.allowed, self.grant)
            self.asks.write(json.dumps({"take": ask}) + "\n")
            self.asks.flush()
            if self.answers.readline().strip() != "go":  # "stop", or the end: the service left
                return False
            self.allowed += ask
        self.allowed -= n
        return True


def verify(request: dict[str, Any], budget: ServiceBudget) -> Outcome:
    """The request's file, verified (not the version listed: NOT_LISTED, as the other sources)."""
    path = request["path"]
    try:
        stat = os.stat(path)
    except OSError as exc:
        return Outcome("unreadable", f"{path} cannot be read: {exc.strerror}", 0, 0.0)
    if stat.st_size != request["size"] or stat.st_mtime_ns // 1000 != request["mtime_us"]:
        return NOT_LISTED
    return verify_file(
        Path(path),
        archive=request["archive"],
        checksum=request["checksum"],
        limits=Limits(**request["limits"]),
        budget=budget,
        artifact=request["artifact"],
    )


def main() -> int:
    for problem in lower_priority():
        print(f"verification worker: cannot lower its priority ({problem})", file=sys.stderr)
    request = json.loads(sys.stdin.readline())
    outcome = verify(request, ServiceBudget(sys.stdout, sys.stdin, request["grant"]))
    with contextlib.suppress(BrokenPipeError):  # the service is gone
        print(json.dumps({"outcome": dataclasses.asdict(outcome)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
