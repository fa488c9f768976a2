"""Which status changes are news, and when a critical notice is repeated (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.notify.events import (
    News,
    event_row,
    judgement_changed,
    news,
    notice_kind,
    problem_codes,
    reason_changes,
    reason_codes,
    renotify_at,
)
from service.notify.notice import Notice

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


LATE, SMALL, DROP = "late", "too_small", "size_drop"


@pytest.mark.parametrize(
    ("notified", "status", "told", "codes", "due", "kind"),
    [
        # The status rules hold whatever the reasons.
        ("ok", "critical", None, {LATE}, False, "problem"),
        ("critical", "ok", {LATE}, set(), False, "recovery"),
        ("critical", "warning", {LATE}, {DROP}, False, "problem"),
        # The same bad status for another set of reasons is news, both ways.
        ("critical", "critical", {LATE}, {LATE, SMALL, DROP}, False, "changed"),
        ("critical", "critical", {LATE, SMALL}, {SMALL}, False, "changed"),
        ("warning", "warning", {DROP}, {"too_few"}, False, "changed"),
        ("unknown", "unknown", {"source_error"}, {"scan_error"}, False, "changed"),
        # The same set (messages may differ: an age that grew) is not.
        ("critical", "critical", {LATE}, {LATE}, False, None),
        ("critical", "critical", {LATE, SMALL}, {SMALL, LATE}, False, None),
        # What was told is not known (a pause in between): the same status tells nothing.
        ("critical", "critical", None, {SMALL}, False, None),
        # A due reminder, only while critical as told; a change is told instead of one.
        ("critical", "critical", {LATE}, {LATE}, True, "reminder"),
        ("critical", "critical", None, {LATE}, True, "reminder"),
        ("critical", "critical", {LATE}, {SMALL}, True, "changed"),
        ("warning", "warning", {DROP}, {DROP}, True, None),
        ("critical", "paused", {LATE}, set(), True, None),
    ],
)
def test_notice_kind_with_reasons(notified, status, told, codes, due, kind):
    assert notice_kind(notified, status, told, codes, reminder_due=due) == kind


# The severity of each code in these tables, as the evaluation gives it.
SEVERITY = {
    LATE: "critical", SMALL: "critical", "missing": "critical", DROP: "warning",
    "too_few": "warning", "bad_mtime": "warning", "source_error": "unknown",
    "scan_error": "unknown",
}  # fmt: skip


def reasons_of(codes):
    """Reasons with these codes, each at its severity (None stays None: not known)."""
    if codes is None:
        return None
    return [{"code": code, "severity": SEVERITY[code], "message": code} for code in sorted(codes)]


ERR = "source_error"


@pytest.mark.parametrize(
    ("stored", "stored_codes", "notified", "told", "due", "status", "codes", "expected"),
    [
        # late, then late and a truncated dump: a history row and a "changed" notice
        # (too_small is critical; size_drop, a warning, rides along).
        ("critical", {LATE}, "critical", {LATE}, False, "critical", {LATE, SMALL, DROP},
         News(True, "changed")),
        # The same judgement again (the age grew): nothing.
        ("critical", {LATE, SMALL, DROP}, "critical", {LATE, SMALL, DROP}, False, "critical",
         {LATE, SMALL, DROP}, News(False, None)),
        # One problem of two gone: recorded and told.
        ("critical", {LATE, SMALL}, "critical", {LATE, SMALL}, False, "critical", {LATE},
         News(True, "changed")),
        # Status changes as before.
        ("ok", set(), "ok", set(), False, "critical", {LATE}, News(True, "problem")),
        ("critical", {LATE}, "critical", {LATE}, False, "ok", set(), News(True, "recovery")),
        ("pending", set(), None, None, False, "ok", set(), News(True, None)),
        # Paused in between: resuming with the problems told is recorded, not told again...
        ("critical", {LATE}, "critical", {LATE}, False, "paused", set(), News(True, None)),
        ("paused", set(), "critical", {LATE}, False, "critical", {LATE}, News(True, None)),
        # ...resuming with another set of problems is told (it was silent before: a problem
        # that appeared across a pause was never announced), and so across pending.
        ("paused", set(), "critical", {LATE}, False, "critical", {LATE, SMALL},
         News(True, "changed")),
        ("paused", set(), "critical", {LATE}, False, "critical", {SMALL},
         News(True, "changed")),
        ("pending", set(), "critical", {LATE}, False, "critical", {LATE, SMALL},
         News(True, "changed")),
        # Told before the reasons were kept (not known): the same status tells nothing.
        ("paused", set(), "critical", None, False, "critical", {SMALL}, News(True, None)),
        # A reminder due: the judgement at its due time writes it, not a history row.
        ("critical", {LATE}, "critical", {LATE}, True, "critical", {LATE},
         News(False, "reminder")),
        ("critical", {LATE}, "critical", {LATE}, True, "critical", {SMALL},
         News(True, "changed")),
        ("critical", {LATE}, "critical", {LATE}, True, "ok", set(), News(True, "recovery")),
        # A warning gaining a second reason is told the same way.
        ("warning", {DROP}, "warning", {DROP}, False, "warning", {DROP, "too_few"},
         News(True, "changed")),
        # Lower-severity notes beside the job's problems come and go unrecorded, untold: a
        # subdirectory that vanished mid-listing (unknown) beside a critical late, both ways.
        ("critical", {LATE}, "critical", {LATE}, False, "critical", {LATE, ERR},
         News(False, None)),
        ("critical", {LATE, ERR}, "critical", {LATE, ERR}, False, "critical", {LATE},
         News(False, None)),
        ("critical", {LATE}, "critical", {LATE}, False, "critical", {LATE, "bad_mtime", DROP},
         News(False, None)),
        ("warning", {DROP}, "warning", {DROP}, False, "warning", {DROP, ERR},
         News(False, None)),
        # ...and a reminder then carries them, as reasons, without calling them a change.
        ("critical", {LATE}, "critical", {LATE}, True, "critical", {LATE, ERR},
         News(False, "reminder")),
        # A job that is unknown compares its unknown problems.
        ("unknown", {ERR}, "unknown", {ERR}, False, "unknown", {"scan_error"},
         News(True, "changed")),
        # The same code at another status is a status change, as before.
        ("unknown", {ERR}, "unknown", {ERR}, False, "critical", {LATE, ERR},
         News(True, "problem")),
    ],
)  # fmt: skip
def test_news_of_a_judgement(stored, stored_codes, notified, told, due, status, codes, expected):
    got = news(
        stored=stored, stored_reasons=reasons_of(stored_codes), notified=notified,
        notified_reasons=reasons_of(told), reminder_due=due, status=status,
        reasons=reasons_of(codes),
    )  # fmt: skip
    assert got == expected


def test_problem_codes_are_those_at_the_status():
    reasons = reasons_of({LATE, SMALL, DROP, ERR})
    assert problem_codes("critical", reasons) == {LATE, SMALL}
    assert problem_codes("warning", reasons) == {DROP}
    assert problem_codes("unknown", reasons) == {ERR}
    assert problem_codes(None, reasons) == frozenset()


def test_reason_codes_changes_and_judgement_changed():
    reasons = [
        {"code": LATE, "severity": "critical", "message": "newest backup a is 83 s old"},
        {"code": SMALL, "severity": "critical", "message": "newest backup a is empty"},
    ]
    assert reason_codes(reasons) == {LATE, SMALL}
    assert reason_changes({LATE}, {LATE, SMALL, DROP}) == {"new": [DROP, SMALL], "gone": []}
    assert reason_changes({LATE, SMALL}, {DROP}) == {"new": [DROP], "gone": [LATE, SMALL]}
    assert not judgement_changed("critical", [LATE], "critical", {LATE})
    assert judgement_changed("critical", [LATE], "critical", {LATE, SMALL})
    assert judgement_changed("warning", [LATE], "critical", {LATE})


def test_a_changed_notice_says_what_is_new_and_what_is_gone():
    row = event_row(
        job_id=1, job_name="db", kind="changed", status="critical", previous_status="critical",
        reasons=[{"code": SMALL, "severity": "critical", "message": "newest backup a is empty"}],
        latest_artifact=None, channels=None, now=NOW,
        changes=reason_changes({LATE}, {SMALL}),
    )  # fmt: skip
    notice = Notice.from_json(row["payload"])
    assert row["payload"]["changes"] == {"new": [SMALL], "gone": [LATE]}
    assert Notice.from_json(notice.as_json()) == notice
    assert notice.subject() == "[backup-monitor] CRITICAL db: problem changed"
    lines = notice.text().splitlines()
    assert lines[:4] == [
        "db is still CRITICAL, and its problem changed.",
        "New: too_small",
        "Gone: late",
        "",
    ]
    assert "- newest backup a is empty" in lines
    # Other notices carry no "changes" (their JSON is as it was).
    assert "changes" not in event_row(
        job_id=1, job_name="db", kind="problem", status="critical", previous_status="ok",
        reasons=[], latest_artifact=None, channels=None, now=NOW,
    )["payload"]  # fmt: skip


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
    # A notice written with this judgement (a reminder, a change) starts the clock again.
    assert renotify_at("critical", "critical", scheduled, hour, NOW, told_now=True) == (
        NOW + timedelta(hours=1)
    )


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
