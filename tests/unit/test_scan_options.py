"""ScanOptions: the settings' scan options as one typed value, and its boundary into the scanner."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.core.scan_options import ScanOptions
from service.settings import Settings

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


def test_from_the_settings():
    settings = Settings(_env_file=None, scan_roots="/backups:/srv/dumps", source_timeout_seconds=42)
    options = settings.scan_options
    assert options == ScanOptions(
        scan_roots=(Path("/backups"), Path("/srv/dumps")), source_timeout=42
    )
    assert options.scanner_kwargs() == {
        "scan_roots": (Path("/backups"), Path("/srv/dumps")),
        "source_timeout": 42,
    }


def test_no_roots_is_an_empty_tuple_given_not_left_to_the_scanner():
    options = Settings(_env_file=None).scan_options
    assert options.scanner_kwargs() == {"scan_roots": (), "source_timeout": 300.0}


def test_what_is_not_set_is_left_to_the_scanner():
    assert ScanOptions().scanner_kwargs() == {}

    def clock() -> datetime:
        return NOW

    assert ScanOptions(clock=clock).scanner_kwargs() == {"clock": clock}
    assert ScanOptions(source_timeout=5).scanner_kwargs() == {"source_timeout": 5}


def test_frozen():
    options = ScanOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.source_timeout = 1  # type: ignore[misc]
