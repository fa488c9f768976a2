"""The service-wide verification byte budget: a token bucket shared by every worker thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Pacer(Protocol):
    """What paces a reader: `take(n)` returns once `n` bytes may be read (False: stop)."""

    def take(self, n: int, stop: threading.Event | None = None) -> bool: ...


class Budget:
    """At most `rate` bytes per second, over every thread that takes from it (None: no limit).

    Thread-safe. It is the virtual-scheduling form of a token bucket (GCRA): each `take(n)`
    reserves the next n / rate seconds of the shared timeline under a lock and sleeps until its
    reservation begins. Threads are served in the order they ask; an idle budget saves nothing
    up (no burst after a pause: a burst is what starves the disks for the others). `taken`
    counts the bytes taken so far: what the readers have read, as they read it.
    """

    def __init__(self, rate: float | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._rate: float | None = None
        self._free_at = 0.0  # when the timeline is free: the next reservation starts there
        self._taken = 0
        self.set_rate(rate)

    @property
    def rate(self) -> float | None:
        """Bytes per second (None: unlimited)."""
        return self._rate

    @property
    def taken(self) -> int:
        """The bytes taken so far, by every thread."""
        return self._taken

    def set_rate(self, rate: float | None) -> None:
        """Change the rate (a configuration reload); takes effect for the next `take`."""
        if rate is not None and not rate > 0:
            raise ValueError(f"a budget is a positive number of bytes per second, not {rate!r}")
        with self._lock:
            self._rate = rate

    def take(self, n: int, stop: threading.Event | None = None) -> bool:
        """Block until `n` bytes may be read; True, or False when `stop` was set first."""
        if stop is not None and stop.is_set():
            return False
        if n <= 0:
            return True
        with self._lock:
            self._taken += n
            rate = self._rate
            if rate is None:
                return True
            now = self._clock()
            start = max(self._free_at, now)
            self._free_at = start + n / rate
            wait = start - now  # the reservation's start, from now
        # The bytes are read at the start of their slot; the slot itself is paid by whoever
        # comes next, so a lone reader of k chunks waits (k - 1) slots in all, a steady stream
        # exactly `rate`.
        if wait <= 0:
            return True
        if stop is None:
            time.sleep(wait)
            return True
        return not stop.wait(wait)
