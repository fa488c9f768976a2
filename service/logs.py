"""Logging set-up: events with context, as `key=value` text or as one JSON object a line.

Whatever a line says, ping keys in it are redacted (the formatters do it, as a last guard; the
code that logs a request's path redacts it itself, see `redact`)."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from service.core.visible import visible

# A ping key is a secret (whoever has it can ping: a success ping hides a failing job), and it
# travels in URL paths: `/ping/KEY`, `/ping/KEY/fail`, a full URL, a request line. So does a
# badge's key (`/badge/KEY/name.svg`: whoever has it reads the job's status).
_PING_KEY = re.compile(r"(/ping/|/badge/)[^/\s?#\"'&<>]+")
REDACTED = "[key]"


def redact(text: str) -> str:
    """`text` with every key of a `/ping/KEY` or `/badge/KEY` path replaced (paths and whole
    lines)."""
    return _PING_KEY.sub(r"\1" + REDACTED, text)


# Attributes every LogRecord has; anything else came from `extra=` and is context.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _quote(value: Any) -> str:
    """A bare word when it can be one; else a double-quoted string escaped as `visible` does
    (backslash and quote included), so one record stays one line and reads back (shlex)."""
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in ' "\\='):
        return text
    return '"' + visible(text).replace('"', '\\"') + '"'


class TextFormatter(logging.Formatter):
    """`2026-11-21T03:00:00 INFO service.scanner scan finished scan_id=4 jobs_scanned=12`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # The message quotes file names, errors, answers: one record stays one line, and no
        # escape reaches a terminal (a traceback, added after this, keeps its lines).
        return visible(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = _context(record)
        if not context:
            return redact(line)
        head, sep, trace = line.partition("\n")
        pairs = " ".join(f"{key}={_quote(value)}" for key, value in context.items())
        return redact(f"{head} {pairs}{sep}{trace}")


def rfc3339(created: float) -> str:
    """A record's time as RFC 3339 with its zone and milliseconds: `2026-11-21T03:00:00.123+01:00`
    (the local zone, as the text lines; UTC in a container)."""
    return datetime.fromtimestamp(created).astimezone().isoformat(timespec="milliseconds")


class _JsonFormatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # logging's default is `2026-11-21 03:00:00,123`: no zone, not RFC 3339.
        return rfc3339(record.created)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            _JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # One line per scheduled run is ours to write; APScheduler's own are noise at INFO.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("aiohttp.access").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


class LogThrottle:
    """At most `burst` lines every `window` seconds for one kind of event a stranger can cause
    at will (a malformed request): the log stays readable and cannot be flooded. `allow()`
    says whether to write this line, and how many were left out since the last one written."""

    def __init__(
        self, burst: int = 20, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.window = window
        self.clock = clock
        self._started = clock()
        self._written = 0
        self._left_out = 0

    def allow(self) -> int | None:
        """None: leave this line out. Else the number of lines left out before it."""
        now = self.clock()
        if now - self._started >= self.window:
            self._started, self._written = now, 0
        if self._written >= self.burst:
            self._left_out += 1
            return None
        self._written += 1
        left_out, self._left_out = self._left_out, 0
        return left_out
