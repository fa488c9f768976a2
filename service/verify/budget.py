"""The service-wide verification byte budget: a token bucket shared by every worker thread and
every worker process that takes from it."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any, Protocol


class StopSignal(Protocol):
    """What tells a reader to stop: a threading.Event, or a multiprocessing one (the readers in
    worker processes)."""

    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class SharedStop:
    """A stop signal that worker processes share (given to them when they start): a flag in
    shared memory, polled. Not a multiprocessing.Event: its `set` waits for every process
    waiting on it to wake, and one that was killed while waiting never does (the service
    would hang at its next stop)."""

    POLL = 0.05  # seconds between two looks of a waiting reader

    def __init__(self) -> None:
        self._flag = multiprocessing.get_context("spawn").RawValue("b", 0)

    def set(self) -> None:
        self._flag.value = 1

    def clear(self) -> None:
        self._flag.value = 0

    def is_set(self) -> bool:
        return bool(self._flag.value)

    def wait(self, timeout: float | None = None) -> bool:
        """Until set (True) or `timeout` seconds passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = self.POLL if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, self.POLL))
        return True


class Budget:
    """At most `rate` bytes per second, over every thread and process that takes from it (None:
    no limit).

    It is the virtual-scheduling form of a token bucket (GCRA): each `take(n)` reserves the next
    n / rate seconds of the shared timeline under a lock and sleeps until its reservation
    begins. Takers are served in the order they ask; an idle budget saves nothing up (no burst
    after a pause: a burst is what starves the disks for the others).

    The rate and the timeline live in shared memory (`state`): a worker process given `state`
    when it starts makes `Budget(state=...)`, and takes from the same budget. The clock must be
    the same in all of them (time.monotonic is, on one machine).
    """

    def __init__(
        self,
        rate: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        state: Any = None,
    ) -> None:
        self._clock = clock
        if state is None:  # [rate (0: unlimited), when the timeline is free, bytes taken]
            state = multiprocessing.get_context("spawn").Array("d", 3)
            self._state = state
            self.set_rate(rate)
        else:
            self._state = state

    @property
    def state(self) -> Any:
        """The shared rate and timeline: give it to a worker process when it starts."""
        return self._state

    @property
    def rate(self) -> float | None:
        """Bytes per second (None: unlimited)."""
        rate = float(self._state[0])
        return rate if rate > 0 else None

    @property
    def taken(self) -> int:
        """The bytes taken so far, by every thread and process (what the readers have read)."""
        return int(self._state[2])

    def set_rate(self, rate: float | None) -> None:
        """Change the rate (a configuration reload); takes effect for the next `take`."""
        if rate is not None and not rate > 0:
            raise ValueError(f"a budget is a positive number of bytes per second, not {rate!r}")
        self._state[0] = rate or 0.0

    def take(self, n: int, stop: StopSignal | None = None) -> bool:
        """Block until `n` bytes may be read; True, or False when `stop` was set first."""
        if stop is not None and stop.is_set():
            return False
        if n <= 0:
            return True
        state = self._state
        with state.get_lock():
            state[2] += n
            rate = float(state[0])
            if rate <= 0:
                return True
            now = self._clock()
            start = max(state[1], now)
            state[1] = start + n / rate
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
