"""The pure silence rules: matching, one-off and recurring windows (DST included), chains."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from service.notify.silences import (
    MAX_CHAIN,
    Recurrence,
    Silence,
    SilenceLookup,
    covering,
    next_boundary,
    silenced_until,
)


def at(text: str) -> datetime:
    """An aware UTC instant from 'YYYY-MM-DD HH:MM[:SS]'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def one_off(start: str, end: str, *, jobs=("db",), tags=(), ended: str | None = None, id=1):
    return Silence(
        id=id, comment="test", jobs=frozenset(jobs), tags=frozenset(tags),
        starts_at=at(start), ends_at=at(end), ended_at=at(ended) if ended else None,
    )  # fmt: skip


def recurring(cron: str, duration: int, zone: str = "UTC", *, ended: str | None = None, id=1):
    return Silence(
        id=id, comment="test", jobs=frozenset({"db"}),
        recurring=Recurrence(cron=cron, timezone=zone, duration=duration),
        ended_at=at(ended) if ended else None,
    )  # fmt: skip


H = 3600
NIGHTLY_PARIS = ("30 2 * * *", H, "Europe/Paris")  # 02:30 local for one hour


# (silences, now, expected silenced_until or None)
CASES = [
    # One-off: start inclusive, end exclusive.
    pytest.param(
        [one_off("2026-06-01 10:00", "2026-06-01 12:00")],
        "2026-06-01 09:59:59",
        None,
        id="one-off-before-start",
    ),
    pytest.param(
        [one_off("2026-06-01 10:00", "2026-06-01 12:00")],
        "2026-06-01 10:00",
        "2026-06-01 12:00",
        id="one-off-at-start-is-silenced",
    ),
    pytest.param(
        [one_off("2026-06-01 10:00", "2026-06-01 12:00")],
        "2026-06-01 11:59:59",
        "2026-06-01 12:00",
        id="one-off-just-before-end",
    ),
    pytest.param(
        [one_off("2026-06-01 10:00", "2026-06-01 12:00")],
        "2026-06-01 12:00",
        None,
        id="one-off-at-end-is-over",
    ),
    pytest.param(
        [one_off("2026-06-01 10:00", "2026-06-01 12:00", ended="2026-06-01 11:00")],
        "2026-06-01 10:30",
        "2026-06-01 11:00",
        id="ended-early-cuts-the-window",
    ),
    pytest.param(
        [one_off("2026-06-01 10:00", "2026-06-01 12:00", ended="2026-06-01 11:00")],
        "2026-06-01 11:00",
        None,
        id="ended-early-over-at-ended_at",
    ),
    pytest.param(
        [one_off("2026-06-01 10:00", "2026-06-01 12:00", ended="2026-06-01 09:00")],
        "2026-06-01 10:30",
        None,
        id="ended-before-it-began",
    ),
    # Overlapping and touching windows chain; a gap breaks the chain.
    pytest.param(
        [
            one_off("2026-06-01 10:00", "2026-06-01 12:00", id=1),
            one_off("2026-06-01 09:00", "2026-06-01 15:00", id=2),
        ],
        "2026-06-01 11:00",
        "2026-06-01 15:00",
        id="overlap-latest-end-wins",
    ),
    pytest.param(
        [
            one_off("2026-06-01 10:00", "2026-06-01 12:00", id=1),
            one_off("2026-06-01 11:00", "2026-06-01 14:00", id=2),
        ],
        "2026-06-01 10:30",
        "2026-06-01 14:00",
        id="overlap-ahead-chains",
    ),
    pytest.param(
        [
            one_off("2026-06-01 10:00", "2026-06-01 12:00", id=1),
            one_off("2026-06-01 12:00", "2026-06-01 13:00", id=2),
            one_off("2026-06-01 13:00", "2026-06-01 13:30", id=3),
        ],
        "2026-06-01 10:30",
        "2026-06-01 13:30",
        id="touching-windows-chain",
    ),
    pytest.param(
        [
            one_off("2026-06-01 10:00", "2026-06-01 12:00", id=1),
            one_off("2026-06-01 12:00:01", "2026-06-01 14:00", id=2),
        ],
        "2026-06-01 10:30",
        "2026-06-01 12:00",
        id="a-gap-ends-the-chain",
    ),
    # Recurring, UTC.
    pytest.param(
        [recurring("0 2 * * *", 2 * H)],
        "2026-06-01 02:00",
        "2026-06-01 04:00",
        id="nightly-at-fire",
    ),
    pytest.param([recurring("0 2 * * *", 2 * H)], "2026-06-01 04:00", None, id="nightly-at-end"),
    pytest.param(
        [recurring("0 2 * * *", 2 * H)], "2026-06-01 01:59:59", None, id="nightly-before-fire"
    ),
    pytest.param(
        [recurring("0 23 * * *", 3 * H)],
        "2026-06-02 01:30",
        "2026-06-02 02:00",
        id="spanning-midnight-began-on-the-previous-fire",
    ),
    pytest.param(
        [recurring("0 23 * * *", 3 * H)],
        "2026-06-01 23:00",
        "2026-06-02 02:00",
        id="spanning-midnight-at-fire",
    ),
    pytest.param(
        [recurring("0 2 * * 0", 2 * H)], "2026-06-07 03:00", "2026-06-07 04:00", id="weekly-sunday"
    ),
    pytest.param(
        [recurring("0 2 * * 0", 2 * H)], "2026-06-08 03:00", None, id="weekly-not-on-monday"
    ),
    pytest.param(
        [recurring("0 2 * * *", 2 * H, ended="2026-06-01 03:00")],
        "2026-06-01 02:30",
        "2026-06-01 03:00",
        id="recurring-ended-early",
    ),
    pytest.param(
        [recurring("0 2 * * *", 2 * H, ended="2026-06-01 03:00")],
        "2026-06-02 02:30",
        None,
        id="recurring-ended-opens-no-more-windows",
    ),
    # Europe/Paris, spring forward 2026-03-29: 02:00 CET -> 03:00 CEST, 02:30 does not exist.
    # cronsim (like Debian cron) fires at the end of the gap: 03:00 CEST = 01:00 UTC.
    pytest.param(
        [recurring(*NIGHTLY_PARIS)],
        "2026-03-29 00:59:59",
        None,
        id="spring-forward-before-the-gap-end",
    ),
    pytest.param(
        [recurring(*NIGHTLY_PARIS)],
        "2026-03-29 01:00",
        "2026-03-29 02:00",
        id="spring-forward-fires-at-03:00-CEST",
    ),
    pytest.param(
        [recurring(*NIGHTLY_PARIS)],
        "2026-03-28 01:30",
        "2026-03-28 02:30",
        id="the-night-before-02:30-CET",
    ),
    pytest.param(
        [recurring(*NIGHTLY_PARIS)],
        "2026-03-30 00:30",
        "2026-03-30 01:30",
        id="the-night-after-02:30-CEST",
    ),
    # Fall back 2026-10-25: 03:00 CEST -> 02:00 CET, 02:30 happens twice; the window opens
    # once, at the first 02:30 (CEST, 00:30 UTC), not again at the second (CET, 01:30 UTC).
    pytest.param(
        [recurring(*NIGHTLY_PARIS)],
        "2026-10-25 00:30",
        "2026-10-25 01:30",
        id="fall-back-first-02:30",
    ),
    pytest.param(
        [recurring(*NIGHTLY_PARIS)],
        "2026-10-25 01:29:59",
        "2026-10-25 01:30",
        id="fall-back-an-hour-later",
    ),
    pytest.param(
        [recurring(*NIGHTLY_PARIS)],
        "2026-10-25 01:30",
        None,
        id="fall-back-second-02:30-opens-nothing",
    ),
    pytest.param([recurring(*NIGHTLY_PARIS)], "2026-10-25 02:00", None, id="fall-back-after"),
    pytest.param(
        [recurring(*NIGHTLY_PARIS)],
        "2026-10-26 01:30",
        "2026-10-26 02:30",
        id="the-night-after-02:30-CET",
    ),
    # A one-off and a recurring one chain.
    pytest.param(
        [
            recurring("0 2 * * *", 2 * H, id=1),
            one_off("2026-06-01 03:30", "2026-06-01 06:00", id=2),
        ],
        "2026-06-01 02:15",
        "2026-06-01 06:00",
        id="recurring-then-one-off",
    ),
]


@pytest.mark.parametrize(("silences", "now", "expected"), CASES)
def test_silenced_until(silences, now, expected):
    expected_at = at(expected) if expected is not None else None
    assert silenced_until("db", (), silences, at(now)) == expected_at


def test_one_lookup_for_many_jobs_answers_as_the_functions_do():
    silences = [
        one_off("2026-06-01 10:00", "2026-06-01 12:00", jobs=("a",), id=1),
        one_off("2026-06-01 11:30", "2026-06-01 14:00", tags=("db",), jobs=(), id=2),
        recurring("0 2 * * *", 2 * H, id=3),
    ]
    jobs = [("a", ()), ("a", ("db",)), ("db", ()), ("b", ("db",)), ("c", ())]
    for now in ("2026-06-01 02:30", "2026-06-01 10:30", "2026-06-01 12:00", "2026-06-01 13:00"):
        lookup = SilenceLookup(silences, at(now))
        for name, tags in jobs * 2:  # asked twice: the windows cached answer the same
            assert lookup.silenced_until(name, tags) == silenced_until(
                name, tags, silences, at(now)
            )
            assert lookup.next_boundary(name, tags) == next_boundary(name, tags, silences, at(now))
            assert lookup.covering(name, tags) == covering(name, tags, silences, at(now))


@pytest.mark.parametrize("cron", ["0 */6 * * *", "0 * * * *", "* * * * *"])
def test_windows_that_always_overlap_are_followed_as_far_as_max_chain(cron):
    silence = recurring(cron, 6 * H)
    now = at("2026-06-01 05:00")
    until = silenced_until("db", (), [silence], now)
    assert until is not None and until > now
    assert next_boundary("db", (), [silence], now) == until


def test_a_window_every_hour_longer_than_the_hour_keeps_the_job_silenced():
    silence = recurring("0 * * * *", 90 * 60)
    # 10:10 is covered by the 09:00 window (until 10:30) and the 10:00 one (until 11:30), and
    # every later one: the chain is followed MAX_CHAIN windows ahead.
    until = silenced_until("db", (), [silence], at("2026-06-01 10:10"))
    assert until is not None
    assert until >= at("2026-06-01 11:30")
    assert until <= at("2026-06-01 10:00") + timedelta(hours=MAX_CHAIN + 2)


@pytest.mark.parametrize(
    ("jobs", "tags", "job", "job_tags", "matches"),
    [
        (("db",), (), "db", (), True),
        (("db",), (), "web", ("db",), False),  # a job name is not a tag
        ((), ("db",), "pg", ("db", "prod"), True),
        ((), ("db",), "pg", ("prod",), False),
        (("web",), ("db",), "web", (), True),  # names OR tags
        (("web",), ("db",), "pg", ("db",), True),
        (("web",), ("db",), "pg", ("prod",), False),
    ],
)
def test_matching_is_names_or_tags(jobs, tags, job, job_tags, matches):
    silence = one_off("2026-06-01 10:00", "2026-06-01 12:00", jobs=jobs, tags=tags)
    found = silenced_until(job, job_tags, [silence], at("2026-06-01 11:00"))
    assert (found is not None) is matches


def test_silences_of_other_jobs_do_not_chain():
    silences = [
        one_off("2026-06-01 10:00", "2026-06-01 12:00", jobs=("db",), id=1),
        one_off("2026-06-01 11:00", "2026-06-01 14:00", jobs=("web",), id=2),
    ]
    assert silenced_until("db", (), silences, at("2026-06-01 10:30")) == at("2026-06-01 12:00")


@pytest.mark.parametrize(
    ("silences", "now", "expected"),
    [
        ([one_off("2026-06-01 10:00", "2026-06-01 12:00")], "2026-06-01 09:00",
         "2026-06-01 10:00"),
        ([one_off("2026-06-01 10:00", "2026-06-01 12:00")], "2026-06-01 10:00",
         "2026-06-01 12:00"),
        ([one_off("2026-06-01 10:00", "2026-06-01 12:00")], "2026-06-01 12:00", None),
        ([recurring("0 2 * * *", 2 * H)], "2026-06-01 04:00", "2026-06-02 02:00"),
        ([recurring("0 2 * * *", 2 * H)], "2026-06-01 03:00", "2026-06-01 04:00"),
        ([recurring(*NIGHTLY_PARIS)], "2026-03-28 12:00", "2026-03-29 01:00"),
        ([recurring(*NIGHTLY_PARIS)], "2026-10-25 01:30", "2026-10-26 01:30"),
        ([recurring("0 2 * * *", 2 * H, ended="2026-06-01 00:00")], "2026-06-01 01:00", None),
        ([one_off("2026-06-01 10:00", "2026-06-01 12:00", id=1),
          one_off("2026-06-01 08:00", "2026-06-01 09:00", id=2)], "2026-06-01 07:00",
         "2026-06-01 08:00"),
    ],
)  # fmt: skip
def test_next_boundary(silences, now, expected):
    found = next_boundary("db", (), silences, at(now))
    assert found == (at(expected) if expected else None)


def test_covering_names_each_silence_latest_end_first():
    first = one_off("2026-06-01 10:00", "2026-06-01 12:00", id=1)
    second = one_off("2026-06-01 09:00", "2026-06-01 15:00", id=2)
    later = one_off("2026-06-01 13:00", "2026-06-01 16:00", id=3)
    found = covering("db", (), [first, second, later], at("2026-06-01 11:00"))
    assert [(silence.id, end) for silence, end in found] == [
        (2, at("2026-06-01 15:00")),
        (1, at("2026-06-01 12:00")),
    ]


def test_a_naive_now_is_a_bug():
    with pytest.raises(ValueError, match="aware"):
        silenced_until("db", (), [], datetime(2026, 6, 1))


def test_a_silence_is_one_off_or_recurring():
    with pytest.raises(ValueError, match="either starts_at and ends_at"):
        Silence(id=None, comment="", starts_at=at("2026-06-01 10:00"))
    with pytest.raises(ValueError, match="either starts_at and ends_at"):
        Silence(
            id=None, comment="", starts_at=at("2026-06-01 10:00"),
            ends_at=at("2026-06-01 11:00"), recurring=Recurrence("0 2 * * *", "UTC", 60),
        )  # fmt: skip


def test_the_rules_import_no_io():
    code = (
        "import sys; import service.notify.silences; "
        "bad = {'sqlalchemy', 'aiohttp', 'asyncio', 'socket'} & set(sys.modules); "
        "print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
