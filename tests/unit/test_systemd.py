"""deploy/systemd/backup-monitor.service: `systemd-analyze verify` finds nothing to say, and
`systemd-analyze security` rates its exposure OK.

verify checks that ExecStart's program exists; /opt/backup-monitor/bin/backup-monitor is where
the README installs it, not where the tests run: the unit is verified as a copy whose only
change is that path, pointed at this checkout's installed `backup-monitor`, and the original
is verified too, where the only complaint allowed is that missing program.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import missing

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "backup-monitor.service"
INSTALLED_AT = "/opt/backup-monitor/bin/backup-monitor"
# Exposure ratings of `systemd-analyze security`: 0 (locked down) to 10 (unprotected); up to
# 2.0 it is "OK", the best rating.
MAX_EXPOSURE = 2.0


@pytest.fixture(scope="module")
def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        missing("systemd-analyze is missing (Debian's systemd package; `make test` installs it)")
    return found


def program() -> str:
    """This checkout's `backup-monitor` console script (next to the interpreter)."""
    script = Path(sys.executable).parent / "backup-monitor"
    assert script.is_file(), f"{script}: run `make venv`"
    return str(script)


def unit_copy(directory: Path, text: str | None = None) -> Path:
    unit = directory / UNIT.name
    unit.write_text((text or UNIT.read_text()).replace(INSTALLED_AT, program()))
    return unit


def run(analyze: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_unit_verifies_without_a_word(analyze: str, tmp_path: Path) -> None:
    done = run(analyze, "verify", str(unit_copy(tmp_path)))
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_installed_unit_only_lacks_the_program(analyze: str) -> None:
    done = run(analyze, "verify", str(UNIT))
    if Path(INSTALLED_AT).exists():
        assert (done.returncode, done.stdout + done.stderr) == (0, "")
    else:
        assert (done.stdout + done.stderr).strip() == (
            f"{UNIT.name}: Command {INSTALLED_AT} is not executable: No such file or directory"
        )


def test_verify_catches_a_mistake(analyze: str, tmp_path: Path) -> None:
    # verify exits 0 on an unknown key or a bad value: only its words tell (hence "without a
    # word" above).
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict")
    done = run(analyze, "verify", str(unit_copy(tmp_path, broken)))
    assert "Unknown key 'ProtectSytem'" in done.stdout + done.stderr


def test_the_unit_is_hardened(analyze: str, tmp_path: Path) -> None:
    done = run(analyze, "security", "--offline=yes", str(unit_copy(tmp_path)))
    assert done.returncode == 0, done.stderr
    rating = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert rating is not None, done.stdout
    assert float(rating[1]) <= MAX_EXPOSURE, done.stdout


def test_the_unit_keeps_its_promises() -> None:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    assert settings["DynamicUser"] == ["yes"]
    assert settings["StateDirectory"] == ["backup-monitor"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["CapabilityBoundingSet"] == [""]
    environment = dict(value.split("=", 1) for value in settings["Environment"])
    # SQLite in the state directory, the only place the service may write.
    assert environment["DATABASE_URL"] == "sqlite+aiosqlite:///%S/backup-monitor/backup-monitor.db"
    # Every credential is read through a *_FILE setting, in the credentials directory.
    for credential in settings["LoadCredential"]:
        name = credential.split(":", 1)[0]
        assert environment[f"{name.upper()}_FILE"] == f"%d/{name}"
    # The backups are readable, and only readable.
    assert environment["SCAN_ROOTS"] in settings["ReadOnlyPaths"]
