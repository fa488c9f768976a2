"""ScanOptions: how an app's scans run, beyond their session and trigger. Built once from the
settings (`Settings.scan_options`), held by the coordinator and the deadline tick, passed by the
API, the dashboard, the CLI and the watcher, and handed to `run_scanner`. Pure: a frozen
value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.core.clock import Clock


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """What every scan of one app is run with.

    A field left None is the process settings' (`run_scanner` reads SCAN_ROOTS and
    SOURCE_TIMEOUT_SECONDS) or the wall clock. `clock` (tests) is the deadline tick's time and
    the scans'."""

    scan_roots: tuple[Path, ...] | None = None  # SCAN_ROOTS: local sources must lie inside
    source_timeout: float | None = None  # SOURCE_TIMEOUT_SECONDS: one source listing at most
    clock: Clock | None = None
    replica: str | None = None  # REPLICA_NAME in a PostgreSQL fleet: named on its scan runs
