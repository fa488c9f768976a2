"""ScanOptions: how an app's scans run, beyond their session and trigger. Built once from the
settings (`Settings.scan_options`), held by the coordinator and the deadline tick, passed by the
API, the dashboard and the CLI; the scanner and its watcher still take them as keyword
arguments (`scanner_kwargs`). Pure: a frozen value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.core.clock import Clock


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """What every scan of one app is run with.

    A field left None is the scanner's own default: `run_scanner` reads SCAN_ROOTS and
    SOURCE_TIMEOUT_SECONDS from the process settings, `BackupScanner` has no roots and 300 s,
    and the clock is the wall clock. `clock` (tests) is the deadline tick's time and the
    scans'."""

    scan_roots: tuple[Path, ...] | None = None  # SCAN_ROOTS: local sources must lie inside
    source_timeout: float | None = None  # SOURCE_TIMEOUT_SECONDS: one source listing at most
    clock: Clock | None = None

    def scanner_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `run_scanner` and `BackupScanner` that these options set
        (the scanner's boundary: it takes keywords, not this value)."""
        given = {
            "scan_roots": self.scan_roots,
            "source_timeout": self.source_timeout,
            "clock": self.clock,
        }
        return {name: value for name, value in given.items() if value is not None}
