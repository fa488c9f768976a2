"""Parsing and formatting of the human units a job declaration may use.

Input: durations as integer seconds or strings (`90s`, `15m`, `1h30m`, `1d`, `1w`), sizes as
integer bytes or strings (`500KB`, `1MiB`, `2GB`), percents as numbers or `"50%"`.
Output is always integers (seconds, bytes) and numbers.
"""

from __future__ import annotations

import re
from datetime import timedelta
from fractions import Fraction

from service.core.visible import quote

# Bounds that keep every value within the database columns and datetime arithmetic.
MAX_DURATION = 10 * 365 * 86400  # ten years, in seconds
MAX_SIZE = 2**63 - 1  # bytes
# The string forms, as JSON Schema patterns (the API documents them).
DURATION_PATTERN = r"^\s*(\d+|(\d+\s*[wdhmsWDHMS]\s*)+)$"
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([kKmMgGtTpP][iI]?)?[bB]?\s*$"
PERCENT_PATTERN = r"^\s*\d+(\.\d+)?\s*%?\s*$"
MAX_UNIT_TEXT = 100  # "1h30m", "500KB", "50%": a longer text is no value of ours

_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_RE = re.compile(r"(\d+)\s*(w|d|h|m|s)")
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?i?b?)$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4, "p": 1000**5, "pb": 1000**5,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4, "pi": 1024**5, "pib": 1024**5,
}  # fmt: skip


def _reject_bool(value: object, what: str) -> None:
    # bool is an int in Python; `grace: true` is a mistake, not one second.
    if isinstance(value, bool):
        raise ValueError(f"expected {what}, got a boolean")
    if isinstance(value, str) and len(value) > MAX_UNIT_TEXT:
        raise ValueError(f"{what} is written in at most {MAX_UNIT_TEXT} characters")


def parse_duration(value: object) -> int:
    """Seconds from an int or a string such as `90s`, `15m`, `1h30m`, `1d`, `1w`."""
    _reject_bool(value, "a duration")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, float) and value.is_integer():
        seconds = int(value)
    elif isinstance(value, str):
        text = " ".join(value.split()).lower()  # any whitespace counts as a space
        if text.isdigit():
            seconds = int(text)
        else:
            matches = list(_DURATION_RE.finditer(text))
            joined = "".join(m.group(0) for m in matches).replace(" ", "")
            if not matches or joined != text.replace(" ", ""):
                raise ValueError(
                    f"{quote(value)} is not a duration; use seconds or a string like "
                    "'90s', '15m', '1h30m', '1d', '1w'"
                )
            seconds = sum(int(m.group(1)) * _DURATION_UNITS[m.group(2)] for m in matches)
    else:
        raise ValueError(f"expected a duration (seconds or '1h30m'), got {quote(value)}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative (got {quote(value)})")
    if seconds > MAX_DURATION:
        raise ValueError(
            f"a duration cannot exceed ten years ({MAX_DURATION} s; got {quote(value)})"
        )
    return seconds


def parse_size(value: object) -> int:
    """Bytes from an int or a string such as `500KB`, `1MiB`, `2GB` (KB = 1000, KiB = 1024)."""
    _reject_bool(value, "a size")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, str):
        match = _SIZE_RE.match(value.strip())
        unit = match.group(2).lower() if match else ""
        if not match or unit not in _SIZE_UNITS:
            raise ValueError(
                f"{quote(value)} is not a size; use bytes or a string like '500KB', '1MiB', '2GB'"
            )
        size = int(Fraction(match.group(1)) * _SIZE_UNITS[unit])  # exact: 2.01 GB is 2010000000
    else:
        raise ValueError(f"expected a size (bytes or '1MiB'), got {quote(value)}")
    if size < 0:
        raise ValueError(f"a size cannot be negative (got {quote(value)})")
    if size > MAX_SIZE:
        raise ValueError(f"a size cannot exceed {MAX_SIZE} bytes (got {quote(value)})")
    return size


def parse_percent(value: object) -> float:
    """A percentage between 0 and 100 from a number or a string such as `"50%"`."""
    _reject_bool(value, "a percentage")
    number: float
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip().removesuffix("%").strip())
        except ValueError:
            raise ValueError(f"{quote(value)} is not a percentage; use a number or '50%'") from None
    else:
        raise ValueError(f"expected a percentage, got {quote(value)}")
    if not 0 <= number <= 100:
        raise ValueError(f"a percentage must be between 0 and 100 (got {quote(value)})")
    return number


def format_duration(seconds: float) -> str:
    """A short human form: `45 s`, `12 min`, `26 h`, `3 d 4 h`."""
    seconds = abs(int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    days, rest = divmod(seconds, 86400)
    hours = rest // 3600
    return f"{days} d {hours} h" if hours else f"{days} d"


def format_timedelta(delta: timedelta) -> str:
    return format_duration(delta.total_seconds())


def format_size(size: float) -> str:
    """Binary units with one decimal: `0 B`, `812 B`, `1.5 KiB`, `2.0 GiB`."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        # Compare what will be printed: 1048575 bytes is "1.0 MiB", not "1024.0 KiB".
        if abs(round(value, 1)) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
