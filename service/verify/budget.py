"""The service-wide verification byte budget: a token bucket shared by every worker thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Budget:
    """At most `rate` bytes per second, over every thread that takes from it (None: no limit).

    Thread-safe. `take(n)` blocks until `n` more bytes may be read, or returns False at once
    when `stop` is set (the wait is abandoned; nothing is read).
    """

    def __init__(self, rate: float | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        raise NotImplementedError

    @property
    def rate(self) -> float | None:
        """Bytes per second (None: unlimited)."""
        raise NotImplementedError

    def set_rate(self, rate: float | None) -> None:
        """Change the rate (a configuration reload); takes effect for the next `take`."""
        raise NotImplementedError

    def take(self, n: int, stop: threading.Event | None = None) -> bool:
        """Block until `n` bytes may be read; True, or False when `stop` was set first."""
        raise NotImplementedError
