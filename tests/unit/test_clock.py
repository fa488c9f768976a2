"""The default clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.core.clock import utcnow


def test_utcnow_is_aware_utc_and_now():
    before = datetime.now(UTC)
    now = utcnow()
    after = datetime.now(UTC)
    assert now.tzinfo is UTC
    assert before <= now <= after
    assert now.utcoffset() == timedelta(0)
