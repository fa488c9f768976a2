"""Retention slots (service.core.retention_slots): which periods a policy keeps, in which zone,
and which of them are expected to hold a backup. Table-driven: month ends, leap years, ISO week
53, DST changes, zones far from UTC, young jobs, schedules that leave periods empty."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from service.core.jobspec import RETENTION_KINDS, Retention, Schedule
from service.core.retention_slots import (
    SLOT_KINDS,
    Slot,
    gap_message,
    missing_slots,
    retention_slots,
    slots_of,
    window_start,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def local(zone: ZoneInfo, *parts: int, fold: int = 0) -> datetime:
    return datetime(*parts, tzinfo=zone, fold=fold).astimezone(UTC)  # type: ignore[misc]


def cron(expression: str = "0 3 * * *", zone: str | None = None) -> Schedule:
    return Schedule(cron=expression, timezone=zone)


@dataclass
class Case:
    name: str
    policy: dict[str, int]
    backups: list[datetime]
    now: datetime
    schedule: Schedule = field(default_factory=cron)
    grace: int = 3600
    created_at: datetime = LONG_AGO
    # label -> state, for each slot listed (newest first within each kind)
    expected: list[tuple[str, str]] = field(default_factory=list)


CASES = [
    Case(
        # 2026-02-01 00:30 in Paris is still January in UTC: the zone decides the month.
        "month end in the zone, not in UTC",
        {"monthly": 2},
        [local(PARIS, 2026, 2, 1, 0, 30)],
        now=local(PARIS, 2026, 3, 1, 10, 0),
        schedule=cron("30 0 1 * *", "Europe/Paris"),
        expected=[("2026-02", "kept"), ("2026-01", "missing")],
    ),
    Case(
        "the last minute of a 31-day month belongs to it",
        {"monthly": 3},
        [utc(2026, 1, 31, 23, 59), utc(2026, 3, 31, 23, 59), utc(2026, 4, 1, 0, 0)],
        now=utc(2026, 4, 2),
        schedule=cron("0 0 * * *"),
        expected=[("2026-04", "kept"), ("2026-03", "kept"), ("2026-02", "missing")],
    ),
    Case(
        "leap year: 29 February is a slot of its own",
        {"daily": 3},
        [utc(2028, 2, 28, 3), utc(2028, 3, 1, 3)],
        now=utc(2028, 3, 1, 10),
        expected=[("2028-03-01", "kept"), ("2028-02-29", "missing"), ("2028-02-28", "kept")],
    ),
    Case(
        "not a leap year: 28 February is followed by 1 March",
        {"daily": 3},
        [utc(2027, 2, 27, 3), utc(2027, 2, 28, 3), utc(2027, 3, 1, 3)],
        now=utc(2027, 3, 1, 10),
        expected=[("2027-03-01", "kept"), ("2027-02-28", "kept"), ("2027-02-27", "kept")],
    ),
    Case(
        "leap year: February has 29 days of backups in one monthly slot",
        {"monthly": 1},
        [utc(2028, 2, 29, 23, 30)],
        now=utc(2028, 3, 1, 1),
        expected=[("2028-02", "kept")],
    ),
    Case(
        # 2026 has 53 ISO weeks: Monday 2026-12-28 to Sunday 2027-01-03 is 2026-W53.
        "ISO week 53 spans the new year",
        {"weekly": 3},
        [utc(2027, 1, 2, 3), utc(2027, 1, 5, 3)],
        now=utc(2027, 1, 5, 12),
        expected=[("2027-W01", "kept"), ("2026-W53", "kept"), ("2026-W52", "missing")],
    ),
    Case(
        "ISO week 1 of 2026 begins in 2025",
        {"weekly": 2},
        [utc(2025, 12, 29, 3)],
        now=utc(2026, 1, 13, 12),
        expected=[("2026-W02", "missing"), ("2026-W01", "kept")],
    ),
    Case(
        # The spring-forward day is 23 hours long: 00:30 on the next day (22:30 UTC) is not
        # in it. The 02:30 fire does not exist that day: cron fires at 03:00 instead.
        "DST spring forward in Paris: a 23-hour day",
        {"daily": 3},
        [local(PARIS, 2026, 3, 28, 3), local(PARIS, 2026, 3, 30, 0, 30)],
        now=local(PARIS, 2026, 3, 30, 12),
        schedule=cron("30 2 * * *", "Europe/Paris"),
        expected=[("2026-03-30", "kept"), ("2026-03-29", "missing"), ("2026-03-28", "kept")],
    ),
    Case(
        "DST fall back in Paris: a 25-hour day holds its extra hour",
        {"daily": 2},
        # 02:30 twice on 2026-10-25: the second one is 01:30 UTC, still that day.
        [local(PARIS, 2026, 10, 25, 2, 30, fold=1), local(PARIS, 2026, 10, 24, 23, 59)],
        now=local(PARIS, 2026, 10, 26, 1),
        schedule=cron("30 2 * * *", "Europe/Paris"),
        expected=[("2026-10-25", "kept"), ("2026-10-24", "kept")],
    ),
    Case(
        "DST fall back in New York: the repeated 01:30 counts once, for its day",
        {"daily": 2},
        [local(NEW_YORK, 2026, 11, 1, 1, 30, fold=1), local(NEW_YORK, 2026, 10, 31, 1, 30)],
        now=local(NEW_YORK, 2026, 11, 2, 0, 30),
        schedule=cron("30 1 * * *", "America/New_York"),
        expected=[("2026-11-01", "kept"), ("2026-10-31", "kept")],
    ),
    Case(
        "DST spring forward in New York: the 02:30 fire runs at 03:00, the day is expected",
        {"daily": 2},
        [local(NEW_YORK, 2026, 3, 7, 2, 30)],
        now=local(NEW_YORK, 2026, 3, 9, 0, 30),
        schedule=cron("30 2 * * *", "America/New_York"),
        expected=[("2026-03-08", "missing"), ("2026-03-07", "kept")],
    ),
    Case(
        # 11:00 UTC is already 1 December in Kiritimati (+14): that day has no backup yet, so
        # the slots are the two completed local days, each kept by a backup made at 12:00 UTC
        # the UTC day before.
        "Pacific/Kiritimati (+14): the local day, not the UTC one",
        {"daily": 2, "monthly": 1},
        [utc(2026, 11, 28, 12), utc(2026, 11, 29, 12)],
        now=utc(2026, 11, 30, 11),
        schedule=cron("0 2 * * *", "Pacific/Kiritimati"),
        expected=[("2026-11-30", "kept"), ("2026-11-29", "kept"), ("2026-11", "kept")],
    ),
    Case(
        # 2026-12-01 05:00 UTC is 2026-11-30 18:00 in Pago Pago (-11): November's, and the
        # current local month, kept already.
        "Pacific/Pago_Pago (-11): a December UTC time kept for November",
        {"monthly": 2},
        [utc(2026, 12, 1, 5), utc(2026, 10, 15, 5)],
        now=utc(2026, 12, 1, 9),
        schedule=cron("0 18 * * *", "Pacific/Pago_Pago"),
        expected=[("2026-11", "kept"), ("2026-10", "kept")],
    ),
    Case(
        "the current day without a backup yet is not a slot: 3 completed days are",
        {"daily": 3},
        [utc(2026, 11, 27, 3), utc(2026, 11, 28, 3), utc(2026, 11, 29, 3)],
        now=utc(2026, 11, 30, 1),
        expected=[("2026-11-29", "kept"), ("2026-11-28", "kept"), ("2026-11-27", "kept")],
    ),
    Case(
        # What `restic forget --keep-daily 3` leaves when run after today's backup.
        "the current day with a backup is the first slot",
        {"daily": 3},
        [utc(2026, 11, 28, 3), utc(2026, 11, 29, 3), utc(2026, 11, 30, 3)],
        now=utc(2026, 11, 30, 12),
        expected=[("2026-11-30", "kept"), ("2026-11-29", "kept"), ("2026-11-28", "kept")],
    ),
    Case(
        "a job younger than a slot is not blamed for it",
        {"daily": 4, "monthly": 2},
        [utc(2026, 11, 29, 3)],
        now=utc(2026, 11, 30, 12),
        created_at=utc(2026, 11, 27, 15),
        expected=[
            ("2026-11-29", "kept"),
            ("2026-11-28", "missing"),
            ("2026-11-27", "not_expected"),
            ("2026-11-26", "not_expected"),
            ("2026-11", "kept"),
            ("2026-10", "not_expected"),
        ],
    ),
    Case(
        "a weekday schedule expects nothing on weekends",
        {"daily": 3},
        [utc(2026, 11, 27, 2, 10)],  # Friday
        now=utc(2026, 11, 30, 1),  # Monday, before its backup
        schedule=cron("0 2 * * 1-5"),
        expected=[
            ("2026-11-29", "not_expected"),
            ("2026-11-28", "not_expected"),
            ("2026-11-27", "kept"),
        ],
    ),
    Case(
        # 23:30 with an hour of grace may land on the next day without being late.
        "a fire whose grace ends after the day does not make the day expected",
        {"daily": 2},
        [utc(2026, 11, 28, 0, 20)],
        now=utc(2026, 11, 30, 12),
        schedule=cron("30 23 * * *"),
        expected=[("2026-11-29", "not_expected"), ("2026-11-28", "kept")],
    ),
    Case(
        "every 1d with grace: days are not checked, weeks are",
        {"daily": 2, "weekly": 2},
        [utc(2026, 11, 20, 3)],
        now=utc(2026, 11, 30, 12),
        schedule=Schedule(every=86400),
        expected=[
            ("2026-11-29", "not_expected"),
            ("2026-11-28", "not_expected"),
            ("2026-W48", "missing"),
            ("2026-W47", "kept"),
        ],
    ),
    Case(
        "every 12h without grace: each day is expected",
        {"daily": 2},
        [utc(2026, 11, 29, 3)],
        now=utc(2026, 11, 30, 1),
        schedule=Schedule(every=43200),
        grace=0,
        expected=[("2026-11-29", "kept"), ("2026-11-28", "missing")],
    ),
    Case(
        "yearly slots",
        {"yearly": 3},
        [utc(2024, 12, 31, 23), utc(2026, 1, 1, 0)],
        now=utc(2026, 6, 1),
        expected=[("2026", "kept"), ("2025", "missing"), ("2024", "kept")],
    ),
    Case("a policy of zeros keeps nothing", {}, [utc(2026, 1, 1)], now=utc(2026, 6, 1)),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_slots(case: Case) -> None:
    slots = retention_slots(
        Retention(**case.policy), sorted(case.backups), schedule=case.schedule,
        grace=case.grace, created_at=case.created_at, now=case.now,
    )  # fmt: skip
    assert [(slot.label, slot.state) for slot in slots] == case.expected
    for slot in slots:
        assert slot.start < slot.end
        inside = [b for b in case.backups if slot.start <= b < slot.end]
        assert slot.newest == (max(inside) if inside else None)
        assert (slot.state == "kept") == bool(inside)
        assert (slot.state == "not_expected") == bool(slot.why)


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        (PARIS, (2026, 3, 29), 23),
        (PARIS, (2026, 10, 25), 25),
        (NEW_YORK, (2026, 3, 8), 23),
        (NEW_YORK, (2026, 11, 1), 25),
        (ZoneInfo("Pacific/Kiritimati"), (2026, 11, 30), 24),
        (ZoneInfo("Pacific/Pago_Pago"), (2026, 11, 30), 24),
    ],
)
def test_day_slots_follow_the_zone_length(
    zone: ZoneInfo, day: tuple[int, int, int], hours: int
) -> None:
    now = local(zone, *day, 12)
    [slot] = retention_slots(
        Retention(daily=1), [now - timedelta(hours=1)], schedule=cron("0 3 * * *", zone.key),
        grace=0, created_at=LONG_AGO, now=now,
    )  # fmt: skip
    assert slot.current and slot.label == "{:04d}-{:02d}-{:02d}".format(*day)
    assert slot.start == local(zone, *day, 0, 0)
    assert slot.end - slot.start == timedelta(hours=hours)


def test_gap_message_names_the_missing_slots_oldest_first() -> None:
    policy = Retention(daily=2, monthly=12)
    now = utc(2026, 11, 30, 12)
    backups = [utc(2026, month, 10, 3) for month in range(1, 12) if month not in (8, 9)]
    backups.append(utc(2026, 11, 29, 3))
    slots = retention_slots(
        policy, sorted(backups), schedule=cron(), grace=3600, created_at=LONG_AGO, now=now
    )
    assert [slot.label for slot in missing_slots(slots)] == [
        "2026-11-28", "2026-09", "2026-08", "2025-12",
    ]  # fmt: skip
    assert gap_message(policy, slots) == (
        "no backup kept for 2026-11-28 (daily: 2 kept); "
        "2025-12, 2026-08 and 2026-09 (monthly: 12 kept)"
    )


def test_gap_message_shortens_long_lists_and_is_none_without_gaps() -> None:
    policy = Retention(daily=10)
    now = utc(2026, 11, 30, 12)
    slots = retention_slots(policy, [], schedule=cron(), grace=0, created_at=LONG_AGO, now=now)
    message = gap_message(policy, slots)
    assert message == (
        "no backup kept for 2026-11-20, 2026-11-21, 2026-11-22, 2026-11-23, 2026-11-24, "
        "2026-11-25 and 4 more (daily: 10 kept)"
    )
    full = [utc(2026, 11, day, 3) for day in range(1, 31)]
    slots = retention_slots(policy, full, schedule=cron(), grace=0, created_at=LONG_AGO, now=now)
    assert gap_message(policy, slots) is None


def test_slots_of_names_the_slots_a_backup_is_kept_for() -> None:
    now = utc(2026, 11, 30, 12)
    backups = [utc(2026, 11, 29, 3), utc(2026, 11, 29, 9), utc(2026, 11, 30, 3)]
    slots = retention_slots(
        Retention(daily=2, weekly=2, monthly=1), backups, schedule=cron(), grace=0,
        created_at=LONG_AGO, now=now,
    )  # fmt: skip

    def labels(moment: datetime) -> list[str]:
        return [slot.label for slot in slots_of(moment, slots)]

    assert labels(utc(2026, 11, 30, 3)) == ["2026-11-30", "2026-W49", "2026-11"]
    assert labels(utc(2026, 11, 29, 9)) == ["2026-11-29", "2026-W48"]
    assert labels(utc(2026, 11, 29, 3)) == []  # not the newest of its day


def test_window_start_is_the_oldest_slot_start() -> None:
    now = utc(2026, 11, 30, 12)
    schedule = cron("0 3 * * *", "Europe/Paris")
    policy = Retention(daily=7, weekly=4, monthly=12)
    # 12 completed months back: November 2025, from midnight in Paris.
    assert window_start(policy, schedule=schedule, now=now) == local(PARIS, 2025, 11, 1)
    assert window_start(Retention(), schedule=schedule, now=now) is None
    slots = retention_slots(policy, [], schedule=schedule, grace=0, created_at=LONG_AGO, now=now)
    assert min(slot.start for slot in slots) == local(PARIS, 2025, 11, 1)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        retention_slots(
            Retention(daily=1), [], schedule=cron(), grace=0, created_at=LONG_AGO,
            now=datetime(2026, 1, 1),
        )  # fmt: skip


def test_kinds_agree_with_the_declaration() -> None:
    assert SLOT_KINDS == RETENTION_KINDS


def test_slot_json_form() -> None:
    slot = Slot("monthly", "2026-08", utc(2026, 8, 1), utc(2026, 9, 1), "missing", None)
    assert slot.as_dict() == {
        "kind": "monthly", "label": "2026-08", "start": "2026-08-01T00:00:00+00:00",
        "end": "2026-09-01T00:00:00+00:00", "state": "missing", "newest": None,
        "current": False, "why": "",
    }  # fmt: skip
