"""Log lines as `key=value` text or one JSON object a line (service/logs.py)."""

from __future__ import annotations

import io
import json
import logging
import re
import shlex
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from service.logs import configure_logging

QUIETED = ("apscheduler", "aiohttp.access", "alembic")
TEXT_HEAD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} (?P<level>[A-Z]+) (?P<rest>.*)$")

Capture = Callable[..., io.StringIO]


@pytest.fixture
def capture() -> Iterator[Capture]:
    """configure_logging(), then the root handler writes to a StringIO; all restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_quieted = {name: logging.getLogger(name).level for name in QUIETED}

    def configure(level: str = "INFO", fmt: str = "text") -> io.StringIO:
        configure_logging(level, fmt)
        buffer = io.StringIO()
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
        return buffer

    yield configure
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for name, level in saved_quieted.items():
        logging.getLogger(name).setLevel(level)


def lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


log = logging.getLogger("service.test")


# --- text -----------------------------------------------------------------------------------


def test_text_line_shape(capture: Capture) -> None:
    buffer = capture()
    log.info("scan finished", extra={"job": "db", "status": "late"})
    (line,) = lines(buffer)
    head = TEXT_HEAD.match(line)
    assert head is not None, line
    assert head["level"] == "INFO"
    assert head["rest"] == "service.test scan finished job=db status=late"


def test_text_without_context_ends_with_the_message(capture: Capture) -> None:
    buffer = capture()
    log.warning("plain message")
    (line,) = lines(buffer)
    assert line.endswith(" WARNING service.test plain message")


@pytest.mark.parametrize(
    ("extra", "suffix"),
    [
        pytest.param({"job": "db", "status": "late"}, " job=db status=late", id="in-given-order"),
        pytest.param({"scan_id": 4, "jobs": 12}, " scan_id=4 jobs=12", id="numbers"),
        pytest.param({"detail": "a b"}, ' detail="a b"', id="space-quoted"),
        pytest.param(
            {"path": "/backups/My Files", "job": "x"},
            ' path="/backups/My Files" job=x',
            id="quoted-then-plain",
        ),
        pytest.param({"reason": ""}, ' reason=""', id="empty-quoted"),
        pytest.param({"ok": None}, " ok=None", id="none"),
        pytest.param({"codes": "late,too_small"}, " codes=late,too_small", id="commas-plain"),
    ],
)
def test_text_context_pairs(capture: Capture, extra: dict[str, Any], suffix: str) -> None:
    buffer = capture()
    log.info("event", extra=extra)
    (line,) = lines(buffer)
    assert line.endswith(" service.test event" + suffix)


def test_text_exception_traceback_follows_on_next_lines(capture: Capture) -> None:
    buffer = capture()
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        log.exception("job scan failed", extra={"job": "db"})
    first, *rest = lines(buffer)
    assert first.endswith(" ERROR service.test job scan failed job=db")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: disk on fire"
    # The context stays on the first line, never after the traceback.
    assert all("job=db" not in line for line in rest)


def test_text_exception_without_context(capture: Capture) -> None:
    buffer = capture()
    try:
        raise KeyError("k")
    except KeyError as exc:
        log.error("failed", exc_info=exc)
    first, *rest = lines(buffer)
    assert first.endswith(" ERROR service.test failed")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "KeyError: 'k'"


def test_text_underscore_attributes_are_not_context(capture: Capture) -> None:
    buffer = capture()
    log.info("event", extra={"_private": 1, "job": "db"})
    (line,) = lines(buffer)
    assert line.endswith(" event job=db")


def test_text_value_with_newline_stays_on_one_line(capture: Capture) -> None:
    buffer = capture()
    error = "(InterfaceError) connection is closed\n(Background on this error at: https://x)"
    log.warning("database unavailable", extra={"path": "/api/v1/jobs", "error": error})
    (line,) = lines(buffer)
    assert "connection is closed" in line
    assert "Background on this error" in line


def test_text_value_with_quotes_reads_back(capture: Capture) -> None:
    buffer = capture()
    log.info("event", extra={"detail": 'say "hi" now', "job": "db"})
    (line,) = lines(buffer)
    assert shlex.split(line)[-2:] == ['detail=say "hi" now', "job=db"]


# --- levels ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "shown", "hidden"),
    [
        pytest.param("INFO", ["INFO", "WARNING", "ERROR"], ["DEBUG"], id="info"),
        pytest.param("DEBUG", ["DEBUG", "INFO", "WARNING", "ERROR"], [], id="debug"),
        pytest.param("ERROR", ["ERROR"], ["DEBUG", "INFO", "WARNING"], id="error"),
    ],
)
def test_level_filters(capture: Capture, level: str, shown: list[str], hidden: list[str]) -> None:
    buffer = capture(level)
    for name in ("DEBUG", "INFO", "WARNING", "ERROR"):
        log.log(getattr(logging, name), "at %s", name)
    written = [line.split(" ", 2)[1] for line in lines(buffer)]
    assert written == shown
    assert not set(written) & set(hidden)


@pytest.mark.parametrize(
    ("level", "quieted_level"),
    [
        pytest.param("DEBUG", logging.WARNING, id="debug-keeps-libraries-at-warning"),
        pytest.param("INFO", logging.WARNING, id="info"),
        pytest.param("ERROR", logging.ERROR, id="error-raises-them-too"),
    ],
)
def test_noisy_libraries_are_quieted(capture: Capture, level: str, quieted_level: int) -> None:
    buffer = capture(level)
    for name in QUIETED:
        assert logging.getLogger(name).level == quieted_level
    logging.getLogger("apscheduler.scheduler").info("Added job")
    assert lines(buffer) == []


def test_configure_twice_keeps_one_handler(capture: Capture) -> None:
    capture("INFO", "json")
    buffer = capture("INFO", "text")
    assert len(logging.getLogger().handlers) == 1
    log.info("once", extra={"job": "db"})
    (line,) = lines(buffer)
    assert line.endswith(" once job=db")


# --- JSON -----------------------------------------------------------------------------------


def test_json_line_has_fixed_keys_and_context(capture: Capture) -> None:
    buffer = capture("INFO", "json")
    log.info("job evaluated", extra={"job": "db", "status": "late", "count": 3})
    (line,) = lines(buffer)
    record = json.loads(line)
    assert set(record) == {"time", "level", "logger", "message", "job", "status", "count"}
    assert record["level"] == "INFO"
    assert record["logger"] == "service.test"
    assert record["message"] == "job evaluated"
    assert (record["job"], record["status"], record["count"]) == ("db", "late", 3)
    assert re.match(r"^\d{4}-\d\d-\d\d", record["time"])


def test_json_each_record_is_one_line(capture: Capture) -> None:
    buffer = capture("INFO", "json")
    log.info("first\nsecond", extra={"error": "a\nb", "detail": 'say "hi"'})
    log.warning("next")
    first, second = (json.loads(line) for line in lines(buffer))
    assert first["message"] == "first\nsecond"
    assert first["error"] == "a\nb"
    assert first["detail"] == 'say "hi"'
    assert second["level"] == "WARNING"


def test_json_message_is_formatted_with_its_arguments(capture: Capture) -> None:
    buffer = capture("INFO", "json")
    log.info("scanned %d jobs", 12)
    (line,) = lines(buffer)
    assert json.loads(line)["message"] == "scanned 12 jobs"


def test_json_exception_is_in_the_object(capture: Capture) -> None:
    buffer = capture("INFO", "json")
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        log.exception("job scan failed", extra={"job": "db"})
    (line,) = lines(buffer)
    record = json.loads(line)
    assert record["level"] == "ERROR"
    assert record["job"] == "db"
    assert record["exc_info"].startswith("Traceback (most recent call last):")
    assert record["exc_info"].endswith("RuntimeError: disk on fire")


def test_json_level_filter(capture: Capture) -> None:
    buffer = capture("WARNING", "json")
    log.info("hidden")
    log.warning("shown")
    assert [json.loads(line)["message"] for line in lines(buffer)] == ["shown"]


def test_text_message_and_values_cannot_forge_lines_or_hide_text(capture: Capture) -> None:
    buffer = capture()
    name = "x.dump\n2026-01-01T00:00:00+0000 INFO service.scanner all fine\x1b[8m"
    log.warning("cannot read %s", name, extra={"path": "evil\u202egpj.exe", "why": "a\u2028b"})
    (line,) = lines(buffer)
    assert (
        "cannot read x.dump\\n2026-01-01T00:00:00+0000 INFO service.scanner all fine\\x1b[8m"
        in line
    )
    assert line.endswith(' path="evil\\u202egpj.exe" why="a\\u2028b"')


def test_json_time_is_rfc3339_with_its_zone(capture: Capture) -> None:
    buffer = capture("INFO", "json")
    before = datetime.now(UTC)
    log.info("tick")
    (line,) = lines(buffer)
    stamp = json.loads(line)["time"]
    # RFC 3339: `T` between date and time, fractional seconds, an explicit offset.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)", stamp), stamp
    moment = datetime.fromisoformat(stamp)
    assert moment.tzinfo is not None
    assert abs((moment - before).total_seconds()) < 5
