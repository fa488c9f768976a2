"""The restic source against real repositories made by Debian's restic (tests/peers.py): the
adapter alone (snapshots, restore sizes computed once, filters, every error restic gives) and
end-to-end through the scanner on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from service.core.jobspec import ResticSource
from service.db.models import Artifact
from service.runtime.app import create_app
from service.scanner.scanner import BackupScanner
from service.scanner.sources import open_source
from service.scanner.sources import process as process_module
from service.scanner.sources.base import Listing, SourceError
from service.scanner.sources.lister import list_any
from service.settings import load_settings

from tests.support import add_job, get_job

PASSWORD = "correct horse battery"
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    """restic's cache goes below HOME: the test's, not the user's."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RESTIC_TEST_PASSWORD", PASSWORD)


def spec(repo, **fields) -> ResticSource:
    fields.setdefault("password", "${RESTIC_TEST_PASSWORD}")
    return ResticSource(type="restic", repository=str(repo.path), **fields)


def known(sizes: Mapping[str, int]):
    async def read() -> Mapping[str, int]:
        return sizes

    return read


async def listing(source: ResticSource, sizes: Mapping[str, int] | None = None) -> Listing:
    """The finished listing (as the lister gives it), or the SourceError raised."""
    results = [r async for r in list_any([open_source(source, known=known(sizes or {}))], 60)]
    (result,) = results
    if isinstance(result, SourceError):
        raise result
    return result


def stats_runs(caplog) -> list[str]:
    """The snapshot ids `restic stats` was run for, as the runner logged them."""
    return [
        r.arguments[-1]
        for r in caplog.records
        if r.getMessage() == "tool run" and r.tool == "restic" and r.arguments[0] == "stats"
    ]


def us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


# The adapter alone ------------------------------------------------------------------------------


async def test_snapshots_are_listed_with_restore_sizes_and_details(restic_repo, caplog):
    caplog.set_level(logging.DEBUG, logger="service.scanner.sources.process")
    repo = restic_repo(password=PASSWORD)
    first = repo.backup({"db.dump": 5000}, WHEN, tags=("db",))
    second = repo.backup({"db.dump": 7000, "etc/x.conf": b"abc"}, WHEN + HOUR, host="host-b")
    result = await listing(spec(repo))
    assert result.entries == [(first, 5000, us(WHEN)), (second, 7003, us(WHEN + HOUR))]
    assert result.warnings == []
    assert result.fingerprint is not None
    assert result.details[first] == {
        "short_id": first[:8], "hostname": "host-a", "username": result.details[first]["username"],
        "tags": ["db"], "paths": [str(repo.work / "data-1")],
    }  # fmt: skip
    assert result.details[second]["hostname"] == "host-b"
    assert result.details[second]["tags"] == []
    assert sorted(stats_runs(caplog)) == sorted([first, second])

    # Sizes already stored are read back, never computed again (123: proves it is read).
    caplog.clear()
    again = await listing(spec(repo), {first: 123, second: 7003})
    assert again.entries == [(first, 123, us(WHEN)), (second, 7003, us(WHEN + HOUR))]
    assert stats_runs(caplog) == []
    third = repo.backup({"new": 10}, WHEN + 2 * HOUR)
    caplog.clear()
    await listing(spec(repo), {first: 5000, second: 7003})
    assert stats_runs(caplog) == [third]


async def test_host_tags_and_paths_filter_the_snapshots(restic_repo):
    repo = restic_repo(password=PASSWORD)
    a = repo.backup({"f": 1}, WHEN, host="host-a", tags=("db", "prod"))
    b = repo.backup({"f": 2}, WHEN + HOUR, host="host-a", tags=("db",))
    c = repo.backup({"f": 3}, WHEN + 2 * HOUR, host="host-b", tags=("db", "prod"))

    async def ids(**filters) -> list[str]:
        return [entry[0] for entry in (await listing(spec(repo, **filters))).entries]

    assert await ids(host="host-a") == [a, b]
    assert await ids(tags=["db", "prod"]) == [a, c]  # all the tags
    assert await ids(host="host-b", tags=["db"]) == [c]
    assert await ids(paths=[str(repo.work / "data-2")]) == [b]
    assert await ids(host="nobody") == []


async def test_a_first_listing_sizes_the_newest_first_within_its_budget(
    restic_repo, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG, logger="service.scanner.sources.process")
    monkeypatch.setattr(process_module, "SIZE_BUDGET_SECONDS", 0)  # each worker sizes one
    repo = restic_repo(password=PASSWORD)
    ids = [repo.backup({"f": 10 + n}, WHEN + n * HOUR) for n in range(5)]
    first = await listing(spec(repo))
    # three stats at a time (STATS_CONCURRENCY): the three newest are sized
    assert [entry[0] for entry in first.entries] == ids[2:]
    assert first.warnings == [
        "2 older snapshots are not sized yet (restic stats, newest first, a minute per scan): "
        "the next scans size them"
    ]
    assert first.fingerprint is None  # incomplete: nothing is marked gone
    caplog.clear()
    second = await listing(spec(repo), {path: size for path, size, _ in first.entries})
    assert [entry[0] for entry in second.entries] == ids
    assert second.warnings == []
    assert sorted(stats_runs(caplog)) == sorted(ids[:2])


async def test_errors_say_what_to_check_and_never_the_password(restic_repo, monkeypatch, tmp_path):
    repo = restic_repo(password=PASSWORD)
    repo.backup({"f": 1}, WHEN)

    monkeypatch.setenv("WRONG_PASSWORD", "not-the-password-42")
    with pytest.raises(SourceError) as wrong:
        await listing(spec(repo, password="${WRONG_PASSWORD}"))
    assert str(wrong.value) == (
        f"restic snapshots failed on restic repository {repo.path}: Fatal: wrong password or "
        "no key found (check password or password_file: it does not open this repository)"
    )
    wrong_file = tmp_path / "wrong-password"
    wrong_file.write_text("not-the-password-43\n")
    with pytest.raises(SourceError, match="wrong password") as wrong_from_file:
        await listing(spec(repo, password=None, password_file=str(wrong_file)))
    assert "not-the-password" not in str(wrong_from_file.value)

    with pytest.raises(SourceError) as missing_repo:
        await listing(spec(repo).model_copy(update={"repository": str(tmp_path / "nowhere")}))
    assert "Is there a repository at the following location?" in str(missing_repo.value)
    assert str(missing_repo.value).endswith(
        "(check repository: is there a restic repository there, and can the service reach it?)"
    )

    with repo.locked(), pytest.raises(SourceError) as locked:
        await listing(spec(repo))
    assert "repository is already locked exclusively" in str(locked.value)
    assert "`restic unlock`" in str(locked.value)

    with pytest.raises(SourceError) as unset:
        await listing(spec(repo, password="${NOT_SET_ANYWHERE}"))
    assert str(unset.value) == (
        "password: environment variable NOT_SET_ANYWHERE is not set for the service"
    )
    with pytest.raises(SourceError) as no_file:
        await listing(spec(repo, password=None, password_file=str(tmp_path / "absent")))
    assert str(no_file.value) == (
        f"password_file: cannot read {tmp_path / 'absent'}: No such file or directory"
    )

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SourceError) as not_installed:
        await listing(spec(repo))
    assert str(not_installed.value) == f"restic is not installed (PATH={tmp_path})"


async def test_a_password_file_and_declared_env_reach_restic(restic_repo, tmp_path, monkeypatch):
    repo = restic_repo(password=PASSWORD)
    snapshot = repo.backup({"f": 4}, WHEN)
    cache = tmp_path / "declared-cache"
    monkeypatch.setenv("CACHE_PLACE", str(cache))
    source = spec(
        repo, password=None, password_file=str(repo.password_file),
        env={"RESTIC_CACHE_DIR": "${CACHE_PLACE}"},
    )  # fmt: skip
    assert (await listing(source)).entries == [(snapshot, 4, us(WHEN))]
    assert cache.is_dir()  # restic used the declared cache


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


async def test_a_restic_job_end_to_end(sessionmaker, clock, restic_repo, caplog):
    caplog.set_level(logging.DEBUG, logger="service.scanner.sources.process")
    repo = restic_repo(password=PASSWORD)
    old = repo.backup({"db.dump": 5000}, clock.now - 26 * HOUR, tags=("db",))
    new = repo.backup({"db.dump": 5100}, clock.now - 2 * HOUR, tags=("db",))
    source = {"type": "restic", "repository": str(repo.path), "password": "${RESTIC_TEST_PASSWORD}"}
    await add_job(
        sessionmaker, clock.now - 10 * 24 * HOUR, name="restic-db", source=source,
        schedule={"every": "1d"}, grace="1h", rules={"min_size": "1KB"},
    )  # fmt: skip

    first = await scan(sessionmaker, clock)
    assert [(j.name, j.status, j.new) for j in first.jobs] == [("restic-db", "ok", 2)]
    rows = await stored(sessionmaker)
    assert {path: (a.size, a.mtime) for path, a in rows.items()} == {
        old: (5000, clock.now - 26 * HOUR), new: (5100, clock.now - 2 * HOUR),
    }  # fmt: skip
    assert rows[new].details["short_id"] == new[:8]
    assert rows[new].details["tags"] == ["db"]
    assert sorted(stats_runs(caplog)) == sorted([old, new])

    # A rescan costs one `restic snapshots`: the sizes are read back.
    caplog.clear()
    clock.advance(minutes=10)
    second = await scan(sessionmaker, clock)
    assert (second.jobs[0].status, second.jobs[0].new, second.jobs[0].gone) == ("ok", 0, 0)
    assert stats_runs(caplog) == []

    # A new snapshot is new (sized once); a forgotten one is gone.
    newest = repo.backup({"db.dump": 800}, clock.now - HOUR, tags=("db",))
    repo.forget(old)
    caplog.clear()
    third = await scan(sessionmaker, clock)
    assert (third.jobs[0].new, third.jobs[0].gone) == (1, 1)
    assert stats_runs(caplog) == [newest]
    assert third.jobs[0].status == "critical"  # 800 bytes < min_size 1KB
    job = await get_job(sessionmaker, "restic-db")
    assert [r["code"] for r in job.reasons] == ["too_small"]
    assert (await stored(sessionmaker, include_gone=True))[old].gone_since == clock.now

    # Late: a day and more without a snapshot.
    clock.advance(days=2)
    late = await scan(sessionmaker, clock)
    assert late.jobs[0].status == "critical"
    assert "late" in [r["code"] for r in (await get_job(sessionmaker, "restic-db")).reasons]

    # A locked repository is unknown with restic's message; nothing is marked gone.
    with repo.locked():
        locked = await scan(sessionmaker, clock)
    assert locked.jobs[0].status == "unknown"
    (reason,) = (await get_job(sessionmaker, "restic-db")).reasons
    assert reason["code"] == "source_error"
    assert "repository is already locked exclusively" in reason["message"]
    assert set(await stored(sessionmaker)) == {new, newest}


async def test_a_wrong_password_is_not_echoed_anywhere(
    sessionmaker, clock, restic_repo, monkeypatch, caplog, database_url, aiohttp_client
):
    caplog.set_level(logging.DEBUG)
    repo = restic_repo(password=PASSWORD)
    repo.backup({"f": 1}, clock.now - HOUR)
    secret = "wrong-but-secret-password-7"
    monkeypatch.setenv("WRONG_RESTIC_PASSWORD", secret)
    source = {
        "type": "restic",
        "repository": str(repo.path),
        "password": "${WRONG_RESTIC_PASSWORD}",
    }
    await add_job(sessionmaker, clock.now - 24 * HOUR, name="restic-wrong", source=source)
    result = await scan(sessionmaker, clock)
    assert result.jobs[0].status == "unknown"
    job = await get_job(sessionmaker, "restic-wrong")
    assert "wrong password or no key found" in job.reasons[0]["message"]
    client = await aiohttp_client(
        create_app(load_settings(database_url=database_url), scheduler=False)
    )
    answer = await client.get("/api/v1/jobs/restic-wrong")
    assert answer.status == 200
    body = await answer.text()
    assert "wrong password or no key found" in body
    assert secret not in body
    assert secret not in job.reasons[0]["message"]
    assert all(secret not in record.getMessage() for record in caplog.records)
    assert all(secret not in str(record.__dict__) for record in caplog.records)


def restic_processes_for(marker: str) -> list[int]:
    """Running processes whose environment mentions `marker` (zombies not counted)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found


async def test_a_hung_repository_times_out_and_leaves_no_restic_behind(tmp_path):
    """A REST server that accepts and never answers: restic waits (and retries); the source's
    time runs out, and restic's process group is killed and reaped."""
    connections: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    repository = f"rest:http://127.0.0.1:{port}/hung-{tmp_path.name}"
    source = ResticSource(
        type="restic", repository=repository, password="${RESTIC_TEST_PASSWORD}", timeout=2
    )
    try:
        started = asyncio.get_running_loop().time()
        (result,) = [r async for r in list_any([open_source(source)], 60)]
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()
    assert isinstance(result, SourceError)
    assert str(result) == (
        f"listing restic repository {repository} took longer than 2 s (its timeout); "
        "is it reachable, or does it need a longer timeout?"
    )
    assert connections  # restic did reach the server
    assert elapsed < 2 + process_module.GRACE_SECONDS + 2
    assert restic_processes_for(repository) == []
