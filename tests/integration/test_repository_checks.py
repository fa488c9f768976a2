"""restic check and borg check --repository-only through the sources' process runner, against
real repositories (tests/peers.py): a good one passes, one with a damaged pack or segment file
does not (with the tool's own words), and what keeps a check from running (a wrong password, a
held lock, the time being up) is not called damage."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.core.jobspec import BorgSource, ResticSource
from service.scanner.sources import borg, restic

SECRET = "correct horse battery"
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CHECK_TEST_SECRET", SECRET)
    monkeypatch.setenv("CHECK_WRONG_SECRET", "not the password")
    monkeypatch.delenv("BORG_BASE_DIR", raising=False)


def largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o600)  # restic writes its packs read-only
    path.write_bytes(bytes(data))


def restic_source(repo, password: str = "${CHECK_TEST_SECRET}") -> ResticSource:
    return ResticSource(type="restic", repository=str(repo.path), password=password)


def borg_source(repo, passphrase: str = "${CHECK_TEST_SECRET}") -> BorgSource:
    return BorgSource(type="borg", repository=str(repo.path), passphrase=passphrase)


async def test_restic_check_of_a_good_repository_passes(restic_repo):
    repo = restic_repo(password=SECRET)
    repo.backup({"db.dump": 300_000}, WHEN)
    result = await restic.check_repository(restic_source(repo), timeout=60)
    assert (result.ok, result.damaged) == (True, False)
    assert result.detail == f"restic check of restic repository {repo.path} found no errors"
    full = await restic.check_repository(restic_source(repo), read_data_subset="100%", timeout=60)
    assert full.ok
    assert result.seconds > 0


async def test_restic_check_finds_a_truncated_pack_and_reading_the_data_finds_a_flipped_bit(
    restic_repo,
):
    repo = restic_repo(password=SECRET)
    repo.backup({"db.dump": 2_000_000}, WHEN)
    pack = largest_file(repo.path / "data")
    flip_middle(pack)
    structure = await restic.check_repository(restic_source(repo), timeout=60)
    assert structure.ok  # the data packs' contents are read only with --read-data-subset
    result = await restic.check_repository(restic_source(repo), read_data_subset="100%", timeout=60)
    assert (result.ok, result.damaged) == (False, True)
    assert result.detail.startswith(f"restic check found restic repository {repo.path} damaged: ")
    assert "Pack ID does not match" in result.detail
    assert result.detail.endswith("Fatal: repository contains errors")
    pack.write_bytes(pack.read_bytes()[:1000])
    truncated = await restic.check_repository(restic_source(repo), timeout=60)
    assert (truncated.ok, truncated.damaged) == (False, True)
    assert pack.name in truncated.detail
    assert SECRET not in truncated.detail


async def test_restic_check_that_cannot_run_is_not_damage(restic_repo):
    repo = restic_repo(password=SECRET)
    repo.backup({"a": 10}, WHEN)
    wrong = await restic.check_repository(restic_source(repo, "${CHECK_WRONG_SECRET}"), timeout=60)
    assert (wrong.ok, wrong.damaged) == (False, False)
    assert "wrong password" in wrong.detail
    assert "check password or password_file" in wrong.detail
    assert "not the password" not in wrong.detail
    with repo.locked():
        locked = await restic.check_repository(restic_source(repo), timeout=60)
    assert (locked.ok, locked.damaged) == (False, False)
    assert "restic unlock" in locked.detail
    late = await restic.check_repository(restic_source(repo), timeout=0.001)
    assert (late.ok, late.damaged) == (False, False)
    assert (
        late.detail
        == f"restic check of restic repository {repo.path} did not finish within 0.001 s: it was "
        "stopped (a larger repository needs a longer timeout)"
    )
    with pytest.raises(ValueError, match="a percentage"):
        await restic.check_repository(restic_source(repo), read_data_subset="5", timeout=60)


async def test_borg_check_of_a_good_and_of_a_damaged_repository(borg_repo):
    repo = borg_repo(passphrase=SECRET)
    repo.create("db-1", {"db.dump": 2_000_000}, WHEN)
    good = await borg.check_repository(borg_source(repo), timeout=60)
    assert (good.ok, good.damaged, good.detail) == (
        True, False, f"borg check of borg repository {repo.path} found no errors"
    )  # fmt: skip
    segment = largest_file(repo.path / "data")
    flip_middle(segment)
    flipped = await borg.check_repository(borg_source(repo), timeout=60)
    assert (flipped.ok, flipped.damaged) == (False, True)
    assert flipped.detail.startswith(
        f"borg check found borg repository {repo.path} damaged: Data integrity error"
    )
    assert "Segment entry checksum mismatch" in flipped.detail
    assert flipped.detail.endswith("Finished full repository check, errors found.")
    assert "rebuilt index" not in flipped.detail  # borg's object-by-object listing is left out
    segment.write_bytes(segment.read_bytes()[:100_000])
    truncated = await borg.check_repository(borg_source(repo), timeout=60)
    assert (truncated.ok, truncated.damaged) == (False, True)
    assert "short read" in truncated.detail


async def test_borg_check_that_cannot_run_is_not_damage(borg_repo):
    repo = borg_repo(passphrase=SECRET)
    repo.create("a", {"f": 10}, WHEN)
    with repo.locked():
        locked = await borg.check_repository(borg_source(repo), timeout=60)
    assert (locked.ok, locked.damaged) == (False, False)
    assert "borg break-lock" in locked.detail
    missing = BorgSource(type="borg", repository=str(repo.path.parent / "nowhere"),
                         passphrase="${CHECK_TEST_SECRET}")  # fmt: skip
    absent = await borg.check_repository(missing, timeout=60)
    assert (absent.ok, absent.damaged) == (False, False)
    assert "does not exist" in absent.detail
