"""Which status changes are news, and when a critical notice is repeated (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.notify.events import event_row, notice_kind, renotify_at

NOW = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("notified", "status", "kind"),
    [
        (None, "ok", None),  # a new job found fine
        (None, "critical", "problem"),  # a new job found broken
        (None, "paused", None),
        ("ok", "warning", "problem"),
        ("ok", "critical", "problem"),
        ("ok", "unknown", "problem"),
        ("warning", "critical", "problem"),  # worse
        ("critical", "warning", "problem"),  # better, but still not ok
        ("critical", "ok", "recovery"),
        ("warning", "ok", "recovery"),
        ("unknown", "ok", "recovery"),
        ("critical", "critical", None),  # told already (e.g. critical, paused, critical)
        ("ok", "ok", None),
        ("critical", "paused", None),  # someone paused it: they know
        ("critical", "pending", None),
        ("ok", "paused", None),
    ],
)
def test_notice_kind(notified, status, kind):
    assert notice_kind(notified, status) == kind


def test_renotify_at():
    hour = 3600
    # Becoming critical starts the clock; staying critical keeps the scheduled reminder.
    assert renotify_at("critical", "ok", None, hour, NOW) == NOW + timedelta(hours=1)
    scheduled = NOW + timedelta(minutes=5)
    assert renotify_at("critical", "critical", scheduled, hour, NOW) == scheduled
    # A reminder interval set while critical counts from now.
    assert renotify_at("critical", "critical", None, hour, NOW) == NOW + timedelta(hours=1)
    # Leaving critical, or no interval: no reminder.
    assert renotify_at("warning", "critical", scheduled, hour, NOW) is None
    assert renotify_at("ok", "critical", scheduled, hour, NOW) is None
    assert renotify_at("critical", "ok", None, None, NOW) is None


def test_event_row_carries_the_notice():
    reasons = [{"code": "stale", "severity": "critical", "message": "no new file for 2 days"}]
    latest = {"path": "/b/a.dump", "size": 10, "mtime": NOW.isoformat()}
    first, second = (
        event_row(
            job_id=7,
            job_name="db",
            kind="problem",
            status="critical",
            previous_status="ok",
            reasons=reasons,
            latest_artifact=latest,
            channels=("ops",),
            now=NOW,
        )
        for _ in range(2)
    )
    assert first["event_id"] != second["event_id"]  # a fresh id for each event
    assert first["payload"]["event_id"] == first["event_id"]
    assert (first["job_id"], first["job_name"], first["kind"]) == (7, "db", "problem")
    assert first["channels"] == ["ops"] and first["routed_at"] is None
    payload = first["payload"]
    assert (payload["status"], payload["previous_status"]) == ("critical", "ok")
    assert payload["reasons"] == reasons and payload["latest_artifact"] == latest
    assert payload["occurred_at"] == NOW.isoformat()
