"""The dashboard's plain words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.http.web.words import (
    as_of,
    declared_size,
    describe_cron,
    describe_deadline,
    describe_declaration,
    describe_notify,
    exact_duration,
    relative_time,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("0 2 * * *", "every day at 02:00"),
        ("30 1 * * 1-5", "at 01:30, Monday through Friday"),
        ("*/15 * * * *", "every 15 minutes"),
        ("0 3 1 * *", "at 03:00, on day 1 of the month"),
    ],
)
def test_cron_in_words(expression, words):
    assert describe_cron(expression) == words


def test_the_issue_example():
    assert (
        describe_declaration(
            {"type": "local", "path": "/backups/db", "pattern": "*.sql.gz", "recursive": False},
            {"every": None, "cron": "0 2 * * *", "timezone": "Europe/Paris"},
            3600,
            {"min_size": 1048576, "max_size": None, "min_count": None, "max_size_drop": None},
        )
        == "a new *.sql.gz in /backups/db every day at 02:00 Europe/Paris, 1 h grace, "
        "at least 1 MiB"
    )


def test_heartbeat_every_rules():
    text = describe_declaration(
        None, {"every": 86400, "cron": None, "timezone": None}, 7200,
        {"min_size": None, "max_size": 2**30, "min_count": 7, "max_size_drop": 50.0},
    )  # fmt: skip
    assert text == (
        "a heartbeat every day, 2 h grace, at most 1 GiB, 7 files kept at least, "
        "no more than 50 % smaller than usual"
    )


@pytest.mark.parametrize(
    ("delta", "words"),
    [
        (timedelta(0), "just now"),
        (timedelta(hours=3), "3 h ago"),
        (timedelta(days=-2), "in 2 d"),
        (timedelta(minutes=-20), "in 20 min"),
    ],
)
def test_relative_time(delta, words):
    assert relative_time(NOW - delta, NOW) == words
    assert relative_time(None, NOW) == "—"


@pytest.mark.parametrize(
    ("seconds", "words"), [(3600, "1 h"), (5400, "1 h 30 min"), (93600, "1 d 2 h"), (45, "45 s"),
                           (0, "0 s"), (1209600, "2 w")],
)  # fmt: skip
def test_exact_duration(seconds, words):
    assert exact_duration(seconds) == words


def test_describe_notify() -> None:
    assert describe_notify(None, ("ops",)) == "tells ops (the default channels)"
    assert describe_notify({"channels": None}, ()) == "tells no one"
    assert describe_notify({"channels": []}, ("ops",)) == "tells no one (silenced)"
    assert (
        describe_notify({"channels": ["mail", "chat"], "renotify_every": 14400}, ("ops",))
        == "tells mail, chat, again every 4 h while critical"
    )
    assert (
        describe_notify({"channels": None, "after": 2, "for": 1800}, ("ops",))
        == "tells ops (the default channels), of a problem once it has lasted for 30 min and "
        "for 2 checks in a row"
    )
    assert describe_notify({"channels": ["ops"], "after": 1, "for": 0}, ()) == "tells ops"
    assert describe_notify({"channels": ["ops"], "after": 3}, ()) == (
        "tells ops, of a problem once it has lasted for 3 checks in a row"
    )


def test_as_of_says_when_a_judgement_was_made():
    assert as_of(None, NOW) == "—"
    assert as_of(NOW - timedelta(minutes=14), NOW) == "11:46 UTC"
    assert as_of(NOW - timedelta(days=1), NOW) == "2026-11-20 12:00 UTC"


def test_describe_held_says_why_and_when() -> None:
    from service.http.web.words import describe_held
    from service.notify.events import Hold, NoticeRule

    since = NOW - timedelta(minutes=5)
    until = since + timedelta(minutes=30)
    assert (
        describe_held(
            Hold("for", "problem", until), "critical", since, since, NoticeRule(1, 1800), NOW
        )
        == "critical since 11:55 UTC; you will be told at 12:25 UTC if it lasts (notify.for 30 min)"
    )
    # Warning first, critical since: both times; both conditions.
    assert describe_held(
        Hold("for", "problem", until, 2), "critical", since, NOW, NoticeRule(3, 1800), NOW
    ) == (
        "critical since 12:00 UTC (bad since 11:55 UTC); you will be told at 12:25 UTC if it "
        "lasts and if 2 more checks find it bad (notify.for 30 min, notify.after 3)"
    )
    assert describe_held(
        Hold("after", "problem", None, 1), "unknown", since, since, NoticeRule(2, 0), NOW
    ) == "unknown since 11:55 UTC; you will be told if the next check finds it bad too " \
        "(notify.after 2)"  # fmt: skip
    assert (
        describe_held(Hold("silence", "recovery", until), "ok", None, since, NoticeRule(), NOW)
        == "ok since 11:55 UTC; silenced until 12:25 UTC: the recovery notice goes out then"
    )


@pytest.mark.parametrize(
    ("size", "words"),
    [
        (10**9, "1 GB"),  # `min_size: 1GB`, not "953.7 MiB"
        (2**30, "1 GiB"),
        (1_500_000, "1.5 MB"),
        (3 * 2**19, "1.5 MiB"),
        (1000, "1 KB"),
        (1024, "1 KiB"),
        (512, "512 B"),
        (0, "0 B"),
        (1_234_567, "1234567 B"),  # no unit writes it exactly in fewer characters
    ],
)
def test_a_declared_size_reads_as_written(size: int, words: str) -> None:
    assert declared_size(size) == words


def test_a_deadline_in_the_past_is_overdue() -> None:
    assert describe_deadline(NOW - timedelta(hours=47), NOW) == "overdue by 47 h"
    assert describe_deadline(NOW + timedelta(hours=5), NOW) == "in 5 h"
    assert describe_deadline(None, NOW) == "—"
    assert (
        describe_deadline(NOW + timedelta(seconds=115), NOW, being_written=True)
        == "re-checked in 115 s: newest file being written"
    )
