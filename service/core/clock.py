"""Time as the code sees it: a `Clock` is any callable that returns the current time, aware
and in UTC. Components take one (`clock=utcnow` by default) so that tests set the time
instead of waiting for it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The current time, aware, in UTC: the default clock."""
    return datetime.now(UTC)
