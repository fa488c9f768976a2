"""The dashboard's chart arithmetic: round ticks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.http.web.charts import missing_slots, nice_ticks

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("top", "labels", "unit"),
    [
        (8.6 * MiB, [0, 2, 4, 6, 8, 10], "MiB"),  # not 2.9 / 5.7 / 8.6 MiB
        (1.575 * MiB, [0, 0.5, 1, 1.5, 2], "MiB"),
        (120, [0, 50, 100, 150], "B"),
        (1, [0, 1], "B"),
        (3 * 1024**3, [0, 1, 2, 3], "GiB"),
        (300 * 1024, [0, 100, 200, 300], "KiB"),
    ],
)
def test_nice_ticks_are_round_and_cover_the_top(top: float, labels: list[float], unit: str) -> None:
    ticks, name, size = nice_ticks(top)
    assert name == unit
    assert [tick / size for tick in ticks] == labels
    assert ticks[-1] >= top


def test_missing_slots_follow_the_deadline_rule() -> None:
    day, grace = timedelta(days=1), timedelta(hours=1)
    start = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)

    def deadline_after(moment: datetime) -> datetime:
        return moment + day + grace

    # Files on the 20th, 21st and 24th; now the 26th at 02:30: the 22nd and 23rd never came,
    # the 25th's deadline passed, the 26th's (03:00) has not.
    files = [start, start + day, start + 4 * day]
    now = start + 6 * day + timedelta(minutes=30)
    assert missing_slots(deadline_after, grace, files, now) == [
        start + 2 * day, start + 3 * day, start + 5 * day,
    ]  # fmt: skip
    # A file a little late (inside its grace) leaves no gap.
    assert missing_slots(deadline_after, grace, [start, start + day + grace / 2], now) == [
        start + 2 * day + grace / 2, start + 3 * day + grace / 2, start + 4 * day + grace / 2,
        start + 5 * day + grace / 2,
    ]  # fmt: skip
