"""The borg source against real repositories made by Debian's borg (tests/peers.py): the adapter
alone (archives, original sizes computed once, the archive glob, every error borg gives) and
end-to-end through the scanner on PostgreSQL and SQLite."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from service.core.jobspec import BorgSource
from service.db.models import Artifact
from service.runtime.app import create_app
from service.scanner.scanner import BackupScanner
from service.scanner.sources import open_source
from service.scanner.sources.base import Listing, SourceError
from service.scanner.sources.lister import list_any
from service.settings import load_settings

from tests.support import add_job, get_job

PASSPHRASE = "correct horse battery"
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    """borg's cache, keys and security directories go below HOME: the test's."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BORG_TEST_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("BORG_BASE_DIR", raising=False)


def spec(repo, **fields) -> BorgSource:
    if "passphrase_file" not in fields:
        fields.setdefault("passphrase", "${BORG_TEST_PASSPHRASE}")
    return BorgSource(type="borg", repository=str(repo.path), **fields)


def known(sizes: Mapping[str, int]):
    async def read() -> Mapping[str, int]:
        return sizes

    return read


async def listing(source: BorgSource, sizes: Mapping[str, int] | None = None) -> Listing:
    results = [r async for r in list_any([open_source(source, known=known(sizes or {}))], 60)]
    (result,) = results
    if isinstance(result, SourceError):
        raise result
    return result


def info_runs(caplog) -> list[str]:
    """The archives `borg info` was run for, as the runner logged them."""
    return [
        r.arguments[-1].removeprefix("::")
        for r in caplog.records
        if r.getMessage() == "tool run" and r.tool == "borg" and r.arguments[0] == "info"
    ]


def us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


# The adapter alone ------------------------------------------------------------------------------


async def test_archives_are_listed_with_sizes_once_and_the_glob(borg_repo, caplog, tmp_path):
    caplog.set_level(logging.DEBUG, logger="service.scanner.sources.process")
    repo = borg_repo(passphrase=PASSPHRASE)
    repo.create("db-1", {"db.dump": 5000}, WHEN)
    repo.create("db-2", {"db.dump": 7000, "x": b"abc"}, WHEN + HOUR)
    repo.create("etc-1", {"f": 10}, WHEN + 2 * HOUR)
    result = await listing(spec(repo))
    assert result.entries == [
        ("db-1", 5000, us(WHEN)),
        ("db-2", 7003, us(WHEN + HOUR)),
        ("etc-1", 10, us(WHEN + 2 * HOUR)),
    ]  # fmt: skip
    assert result.warnings == []
    details = result.details["db-2"]
    assert details["nfiles"] == 2
    assert details["hostname"]
    assert len(details["id"]) == 64
    assert details["compressed_size"] > 0
    assert details["deduplicated_size"] > 0
    assert info_runs(caplog) == ["etc-1", "db-2", "db-1"]  # newest first

    caplog.clear()
    again = await listing(spec(repo), {"db-1": 123, "db-2": 7003, "etc-1": 10})
    assert again.entries[0] == ("db-1", 123, us(WHEN))  # read back, not computed
    assert info_runs(caplog) == []

    caplog.clear()
    globbed = await listing(spec(repo, archives="db-*"), {"db-1": 5000})
    assert [entry[0] for entry in globbed.entries] == ["db-1", "db-2"]
    assert info_runs(caplog) == ["db-2"]

    # a passphrase file is read by the service (borg 1.2 has no BORG_PASSPHRASE_FILE)
    secret_file = tmp_path / "passphrase"
    secret_file.write_text(PASSPHRASE + "\n")
    from_file = await listing(spec(repo, passphrase_file=str(secret_file)), {})
    assert len(from_file.entries) == 3


async def test_errors_say_what_to_check_and_never_the_passphrase(borg_repo, monkeypatch, tmp_path):
    repo = borg_repo(passphrase=PASSPHRASE)
    repo.create("a", {"f": 1}, WHEN)
    monkeypatch.setenv("WRONG_PASSPHRASE", "not-the-passphrase-42")
    with pytest.raises(SourceError) as wrong:
        await listing(spec(repo, passphrase="${WRONG_PASSPHRASE}"))
    assert str(wrong.value) == (
        f"borg list failed on borg repository {repo.path}: passphrase supplied in "
        "BORG_PASSPHRASE, by BORG_PASSCOMMAND or via BORG_PASSPHRASE_FD is incorrect. "
        "(check passphrase or passphrase_file: it does not open this repository)"
    )

    with pytest.raises(SourceError) as none_given:
        await listing(BorgSource(type="borg", repository=str(repo.path)))
    assert "(the repository is encrypted: give passphrase or passphrase_file)" in str(
        none_given.value
    )
    assert "GetPassWarning" not in str(none_given.value)

    with pytest.raises(SourceError) as missing_repo:
        await listing(spec(repo).model_copy(update={"repository": str(tmp_path / "nowhere")}))
    assert str(missing_repo.value) == (
        f"borg list failed on borg repository {tmp_path / 'nowhere'}: Repository "
        f"{tmp_path / 'nowhere'} does not exist. (check repository: is there a borg repository "
        "there, and can the service reach it?)"
    )

    with repo.locked(), pytest.raises(SourceError) as locked:
        await listing(spec(repo))
    assert "Failed to create/acquire the lock" in str(locked.value)
    assert "`borg break-lock`" in str(locked.value)

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SourceError) as not_installed:
        await listing(spec(repo))
    assert str(not_installed.value) == f"borg is not installed (PATH={tmp_path})"


async def test_an_unknown_unencrypted_repository_is_refused_unless_declared(borg_repo, tmp_path):
    repo = borg_repo()
    plain = tmp_path / "plain"
    repo.command("init", "--encryption=none", str(plain))
    source = BorgSource(type="borg", repository=str(plain))
    with pytest.raises(SourceError, match="BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"):
        await listing(source)
    allowed = source.model_copy(
        update={"env": {"BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes"}}
    )
    assert (await listing(allowed)).entries == []


# End to end through the scanner (PostgreSQL and SQLite) ------------------------------------------


async def scan(sessionmaker, clock):
    async with sessionmaker() as session:
        return await BackupScanner(session, clock=clock, trigger="test").scan_all_jobs()


async def stored(sessionmaker, include_gone: bool = False) -> dict[str, Artifact]:
    async with sessionmaker() as session:
        query = select(Artifact)
        if not include_gone:
            query = query.where(Artifact.gone_since.is_(None))
        return {a.path: a for a in (await session.scalars(query)).all()}


async def test_a_borg_job_end_to_end(
    sessionmaker, clock, borg_repo, caplog, database_url, aiohttp_client, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    repo = borg_repo(passphrase=PASSPHRASE)
    repo.create("nightly-1", {"db.dump": 5000}, clock.now - 26 * HOUR)
    repo.create("nightly-2", {"db.dump": 5100}, clock.now - 2 * HOUR)
    source = {"type": "borg", "repository": str(repo.path), "passphrase": "${BORG_TEST_PASSPHRASE}",
              "archives": "nightly-*"}  # fmt: skip
    await add_job(
        sessionmaker, clock.now - 10 * 24 * HOUR, name="borg-db", source=source,
        schedule={"every": "1d"}, grace="1h", rules={"min_size": "1KB"},
    )  # fmt: skip

    first = await scan(sessionmaker, clock)
    assert [(j.name, j.status, j.new) for j in first.jobs] == [("borg-db", "ok", 2)]
    rows = await stored(sessionmaker)
    assert {path: (a.size, a.mtime) for path, a in rows.items()} == {
        "nightly-1": (5000, clock.now - 26 * HOUR), "nightly-2": (5100, clock.now - 2 * HOUR),
    }  # fmt: skip
    assert rows["nightly-2"].details["nfiles"] == 1
    assert sorted(info_runs(caplog)) == ["nightly-1", "nightly-2"]

    caplog.clear()
    clock.advance(minutes=10)
    second = await scan(sessionmaker, clock)
    assert (second.jobs[0].status, second.jobs[0].new, second.jobs[0].gone) == ("ok", 0, 0)
    assert info_runs(caplog) == []

    repo.create("nightly-3", {"db.dump": 800}, clock.now - HOUR)
    repo.create("other-1", {"x": 1}, clock.now - HOUR)  # not matching the glob
    repo.delete("nightly-1")
    caplog.clear()
    third = await scan(sessionmaker, clock)
    assert (third.jobs[0].new, third.jobs[0].gone) == (1, 1)
    assert info_runs(caplog) == ["nightly-3"]
    assert third.jobs[0].status == "critical"
    assert [r["code"] for r in (await get_job(sessionmaker, "borg-db")).reasons] == ["too_small"]

    clock.advance(days=2)
    await scan(sessionmaker, clock)
    assert "late" in [r["code"] for r in (await get_job(sessionmaker, "borg-db")).reasons]

    with repo.locked():
        locked = await scan(sessionmaker, clock)
    assert locked.jobs[0].status == "unknown"
    (reason,) = (await get_job(sessionmaker, "borg-db")).reasons
    assert reason["code"] == "source_error"
    assert "Failed to create/acquire the lock" in reason["message"]
    assert set(await stored(sessionmaker)) == {"nightly-2", "nightly-3"}

    # A wrong passphrase: unknown, and the value is nowhere (message, logs, API).
    secret = "wrong-but-secret-passphrase-9"
    monkeypatch.setenv("BORG_TEST_PASSPHRASE", secret)
    caplog.clear()
    wrong = await scan(sessionmaker, clock)
    assert wrong.jobs[0].status == "unknown"
    (reason,) = (await get_job(sessionmaker, "borg-db")).reasons
    assert "is incorrect" in reason["message"]
    client = await aiohttp_client(
        create_app(load_settings(database_url=database_url), scheduler=False)
    )
    answer = await client.get("/api/v1/jobs/borg-db")
    body = await answer.text()
    assert answer.status == 200
    assert "is incorrect" in body
    assert secret not in body
    assert all(secret not in str(record.__dict__) for record in caplog.records)
    assert set(await stored(sessionmaker)) == {"nightly-2", "nightly-3"}
