"""Parsing and formatting of human units (service/core/units.py)."""

from __future__ import annotations

import re

import pytest

from service.core.units import (
    format_duration,
    format_size,
    parse_duration,
    parse_percent,
    parse_size,
)

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4

# --- parse_duration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param(0, 0, id="int-zero"),
        pytest.param(90, 90, id="int"),
        pytest.param(86400, 86400, id="int-day"),
        pytest.param(90.0, 90, id="integral-float"),
        pytest.param(0.0, 0, id="float-zero"),
        pytest.param("90", 90, id="digit-string"),
        pytest.param("0", 0, id="digit-string-zero"),
        pytest.param("90s", 90, id="seconds"),
        pytest.param("15m", 900, id="minutes"),
        pytest.param("1h", 3600, id="hour"),
        pytest.param("1h30m", 5400, id="hours-minutes"),
        pytest.param("1d", 86400, id="day"),
        pytest.param("1w", 604800, id="week"),
        pytest.param("1w2d3h4m5s", 604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5, id="all-units"),
        pytest.param(" 2h ", 7200, id="surrounding-spaces"),
        pytest.param("2H", 7200, id="upper-case"),
        pytest.param("1h 30m", 5400, id="space-between-parts"),
        pytest.param("1 h", 3600, id="space-before-unit"),
        pytest.param("30m1h", 5400, id="any-order"),
        pytest.param("0s", 0, id="zero-with-unit"),
    ],
)
def test_parse_duration_accepts(value: object, seconds: int) -> None:
    result = parse_duration(value)
    assert result == seconds
    assert type(result) is int


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param("", "''", id="empty"),
        pytest.param("   ", "'   '", id="blank"),
        pytest.param("1x", "'1x'", id="unknown-unit"),
        pytest.param("h", "'h'", id="unit-without-number"),
        pytest.param("1hh", "'1hh'", id="doubled-unit"),
        pytest.param("h1", "'h1'", id="number-after-unit"),
        pytest.param("-5", "'-5'", id="negative-string"),
        pytest.param("1h-30m", "'1h-30m'", id="minus-inside"),
        pytest.param("1.5h", "'1.5h'", id="fractional-with-unit"),
        pytest.param("1.5", "'1.5'", id="fractional-string"),
        pytest.param("1 0s", "'1 0s'", id="space-inside-number"),
        pytest.param("1h and 30m", "'1h and 30m'", id="words-between-parts"),
        pytest.param("one hour", "'one hour'", id="words"),
        pytest.param(-5, "-5", id="negative-int"),
        pytest.param(-60.0, "-60.0", id="negative-float"),
        pytest.param(1.5, "1.5", id="fractional-float"),
        pytest.param(float("nan"), "nan", id="nan"),
        pytest.param(None, "None", id="none"),
        pytest.param([60], r"\[60\]", id="list"),
    ],
)
def test_parse_duration_rejects_naming_the_input(value: object, shown: str) -> None:
    with pytest.raises(ValueError, match=shown):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False], ids=["true", "false"])
def test_parse_duration_rejects_booleans(value: bool) -> None:
    # bool is an int: `grace: true` must not silently mean one second.
    with pytest.raises(ValueError, match="boolean"):
        parse_duration(value)


def test_parse_duration_rejection_suggests_the_syntax() -> None:
    with pytest.raises(ValueError, match=re.escape("'90s', '15m', '1h30m', '1d', '1w'")):
        parse_duration("soon")


# --- parse_size -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [
        pytest.param(0, 0, id="int-zero"),
        pytest.param(1500, 1500, id="int"),
        pytest.param(1024.0, 1024, id="integral-float"),
        pytest.param("1500", 1500, id="digit-string"),
        pytest.param("10 B", 10, id="bytes-with-space"),
        pytest.param("10B", 10, id="bytes"),
        pytest.param("500KB", 500_000, id="kb-decimal"),
        pytest.param("500k", 500_000, id="k-without-b"),
        pytest.param("1MB", 1_000_000, id="mb"),
        pytest.param("2GB", 2_000_000_000, id="gb"),
        pytest.param("3TB", 3 * 1000**4, id="tb"),
        pytest.param("1PB", 1000**5, id="pb"),
        pytest.param("1KiB", KIB, id="kib"),
        pytest.param("1MiB", 1_048_576, id="mib"),
        pytest.param("2GiB", 2 * GIB, id="gib"),
        pytest.param("1TiB", TIB, id="tib"),
        pytest.param("1PiB", 1024**5, id="pib"),
        pytest.param("1Mi", MIB, id="mi-without-b"),
        pytest.param("1.5 KiB", 1536, id="fraction-kib"),
        pytest.param("0.5MiB", MIB // 2, id="fraction-below-one"),
        pytest.param("1.5GB", 1_500_000_000, id="fraction-gb"),
        pytest.param("1mib", MIB, id="lower-case"),
        pytest.param("1MIB", MIB, id="upper-case"),
        pytest.param("1mIb", MIB, id="mixed-case"),
        pytest.param(" 7 kb ", 7000, id="surrounding-spaces"),
    ],
)
def test_parse_size_accepts(value: object, size: int) -> None:
    result = parse_size(value)
    assert result == size
    assert type(result) is int


@pytest.mark.parametrize(
    ("value", "size"),
    [
        pytest.param("2.01 GB", 2_010_000_000, id="2.01GB"),
        pytest.param("2.01KB", 2010, id="2.01KB"),
        pytest.param("4.02KB", 4020, id="4.02KB"),
        pytest.param("8.11MB", 8_110_000, id="8.11MB"),
    ],
)
def test_parse_size_decimal_fractions_are_exact(value: str, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param("", "''", id="empty"),
        pytest.param("KB", "'KB'", id="unit-without-number"),
        pytest.param("1XB", "'1XB'", id="unknown-unit"),
        pytest.param("1i", "'1i'", id="i-alone"),
        pytest.param("1ib", "'1ib'", id="ib-without-prefix"),
        pytest.param("1 KB B", "'1 KB B'", id="trailing-garbage"),
        pytest.param("-5", "'-5'", id="negative-string"),
        pytest.param("-5KB", "'-5KB'", id="negative-with-unit"),
        pytest.param("1e3", "'1e3'", id="exponent"),
        pytest.param(-5, "-5", id="negative-int"),
        pytest.param(-1.0, "-1.0", id="negative-float"),
        pytest.param(1.5, "1.5", id="fractional-float"),
        pytest.param(None, "None", id="none"),
    ],
)
def test_parse_size_rejects_naming_the_input(value: object, shown: str) -> None:
    with pytest.raises(ValueError, match=shown):
        parse_size(value)


@pytest.mark.parametrize("value", [True, False], ids=["true", "false"])
def test_parse_size_rejects_booleans(value: bool) -> None:
    with pytest.raises(ValueError, match="boolean"):
        parse_size(value)


# --- parse_percent --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "percent"),
    [
        pytest.param(50, 50.0, id="int"),
        pytest.param(0, 0.0, id="zero"),
        pytest.param(100, 100.0, id="hundred"),
        pytest.param(12.5, 12.5, id="float"),
        pytest.param("50", 50.0, id="string"),
        pytest.param("50%", 50.0, id="percent-sign"),
        pytest.param(" 12.5 % ", 12.5, id="spaces-around-and-before-sign"),
        pytest.param("0%", 0.0, id="zero-percent"),
        pytest.param("100%", 100.0, id="hundred-percent"),
    ],
)
def test_parse_percent_accepts(value: object, percent: float) -> None:
    result = parse_percent(value)
    assert result == percent
    assert type(result) is float


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param(101, "101", id="above-100"),
        pytest.param(100.01, "100.01", id="just-above-100"),
        pytest.param(-1, "-1", id="negative"),
        pytest.param("101%", "'101%'", id="string-above-100"),
        pytest.param("-1%", "'-1%'", id="string-negative"),
        pytest.param("abc", "'abc'", id="not-a-number"),
        pytest.param("", "''", id="empty"),
        pytest.param("%", "'%'", id="sign-alone"),
        pytest.param("50%%", "'50%%'", id="double-sign"),
        pytest.param("nan", "'nan'", id="nan-string"),
        pytest.param(float("nan"), "nan", id="nan"),
        pytest.param(float("inf"), "inf", id="inf"),
        pytest.param(None, "None", id="none"),
    ],
)
def test_parse_percent_rejects_naming_the_input(value: object, shown: str) -> None:
    with pytest.raises(ValueError, match=shown):
        parse_percent(value)


@pytest.mark.parametrize("value", [True, False], ids=["true", "false"])
def test_parse_percent_rejects_booleans(value: bool) -> None:
    with pytest.raises(ValueError, match="boolean"):
        parse_percent(value)


# --- format_duration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0 s", id="zero"),
        pytest.param(45, "45 s", id="seconds"),
        pytest.param(59.9, "59 s", id="fraction-truncated"),
        pytest.param(119, "119 s", id="119-s-still-seconds"),
        pytest.param(120, "2 min", id="120-s-is-2-min"),
        pytest.param(179, "2 min", id="minutes-truncated"),
        pytest.param(7199, "119 min", id="just-below-2-h"),
        pytest.param(7200, "2 h", id="2-h"),
        pytest.param(26 * 3600, "26 h", id="26-h"),
        pytest.param(48 * 3600 - 1, "47 h", id="just-below-2-d"),
        pytest.param(48 * 3600, "2 d", id="48-h-is-2-d"),
        pytest.param(3 * 86400 + 4 * 3600, "3 d 4 h", id="days-and-hours"),
        pytest.param(3 * 86400 + 3599, "3 d", id="days-minutes-dropped"),
        pytest.param(400 * 86400, "400 d", id="many-days"),
        pytest.param(-3600, "60 min", id="negative-is-magnitude"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# --- format_size ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "text"),
    [
        pytest.param(0, "0 B", id="zero"),
        pytest.param(1, "1 B", id="one"),
        pytest.param(1023, "1023 B", id="1023-bytes"),
        pytest.param(1023.7, "1023 B", id="fractional-bytes-truncated"),
        pytest.param(1048575, "1.0 MiB", id="just-under-a-mib-prints-as-mib"),
        pytest.param(1024, "1.0 KiB", id="1-kib"),
        pytest.param(1536, "1.5 KiB", id="1.5-kib"),
        pytest.param(MIB, "1.0 MiB", id="1-mib"),
        pytest.param(680 * MIB, "680.0 MiB", id="680-mib"),
        pytest.param(int(3.2 * GIB), "3.2 GiB", id="3.2-gib"),
        pytest.param(TIB, "1.0 TiB", id="1-tib"),
        pytest.param(1024 * TIB, "1024.0 TiB", id="pib-stays-in-tib"),
        pytest.param(5 * 1024**5, "5120.0 TiB", id="tib-is-the-cap"),
        pytest.param(-2048, "-2.0 KiB", id="negative"),
    ],
)
def test_format_size(size: float, text: str) -> None:
    assert format_size(size) == text
