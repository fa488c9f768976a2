"""ScanOptions: the settings' scan options as one typed value (run_scanner takes it; what it
leaves None is the settings': tests/integration/test_scanner.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from service.core.scan_options import ScanOptions
from service.settings import Settings


def test_from_the_settings():
    settings = Settings(_env_file=None, scan_roots="/backups:/srv/dumps", source_timeout_seconds=42)
    options = settings.scan_options
    assert options == ScanOptions(
        scan_roots=(Path("/backups"), Path("/srv/dumps")), source_timeout=42
    )


def test_no_roots_is_an_empty_tuple_given_not_left_to_the_scanner():
    options = Settings(_env_file=None).scan_options
    assert options == ScanOptions(scan_roots=(), source_timeout=300.0)
    assert ScanOptions().scan_roots is None  # None: the settings' SCAN_ROOTS, read at the scan


def test_frozen():
    options = ScanOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.source_timeout = 1  # type: ignore[misc]
