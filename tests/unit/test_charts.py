"""The dashboard's chart arithmetic: round ticks."""

from __future__ import annotations

import pytest

from service.web.charts import nice_ticks

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
