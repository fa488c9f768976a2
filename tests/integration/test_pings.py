"""Heartbeats through the real server: the Healthchecks ping protocol, runs, durability."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import delete, event, func, make_url, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.util import await_only

from service.db.engine import create_engine, create_sessionmaker
from service.db.models import Job, Ping
from service.runtime.keys import sessionmaker_key
from service.store.pings import PingWriter, Received

from tests.support import add_job, get_job


async def new_job(client, name="db-nightly"):
    response = await client.post("/api/v1/jobs", json={"name": name, "schedule": {"every": "1d"}})
    assert response.status == 201, await response.text()
    return await response.json()


async def ping_count(app, job_id=None):
    async with app[sessionmaker_key]() as session:
        query = select(func.count()).select_from(Ping)
        if job_id is not None:
            query = query.where(Ping.job_id == job_id)
        return await session.scalar(query)


async def test_job_shows_its_ping_url(client):
    job = await new_job(client)
    assert len(job["ping_key"]) >= 20
    origin = str(client.make_url("/")).rstrip("/")
    assert job["ping_url"] == f"{origin}/ping/{job['ping_key']}"
    other = await new_job(client, "other")
    assert other["ping_key"] != job["ping_key"]


async def test_every_kind_of_ping_makes_runs(client, app):
    job = await new_job(client)
    base = f"/ping/{job['ping_key']}"
    answers = [
        await client.get(f"{base}/start?rid=a"),
        await client.post(f"{base}/log", data=b"halfway"),
        await client.post(f"{base}?rid=a", data=b"dumped 2 GB"),
        await client.head(f"{base}/start"),
        await client.get(f"{base}/3"),
        await client.post(f"{base}/fail", data=b"tar: short read"),
        await client.get(f"{base}/0"),
        await client.get(f"{base}/start"),
    ]
    for answer in answers:
        assert answer.status == 200, await answer.text()
    assert [await a.text() for a in answers if a.method != "HEAD"] == ["OK"] * 7
    runs = (await (await client.get(f"/api/v1/jobs/{job['id']}/runs")).json())["items"]
    summary = [(r["outcome"], r["exit_status"], r["duration"] is not None, r["log"]) for r in runs]
    assert summary == [
        ("running", None, False, ""),
        ("success", 0, False, ""),
        ("fail", None, False, "tar: short read"),
        ("fail", 3, True, ""),  # paired with the HEAD start
        ("success", 0, True, "dumped 2 GB"),  # paired with its start by the run id
        ("log", None, False, "halfway"),
    ]
    assert await ping_count(app, job["id"]) == 8


@pytest.mark.parametrize(
    "path", ["/ping/nope", "/ping/nope/start", "/ping/nope/0", "/ping/" + "x" * 300]
)
async def test_unknown_key_is_404_and_stores_nothing(client, app, path):
    await new_job(client)
    response = await client.post(path, data=b"body")
    assert response.status == 404
    assert await ping_count(app) == 0


async def test_exit_status_above_255_and_bad_signals(client, app):
    job = await new_job(client)
    for suffix in ("/256", "/999", "/restart", "/-1"):
        response = await client.get(f"/ping/{job['ping_key']}{suffix}")
        assert response.status == 404, suffix
    response = await client.get(f"/ping/{job['ping_key']}?rid={'r' * 65}")
    assert response.status == 422
    assert await ping_count(app) == 0


async def test_body_is_kept_up_to_10_kb(client, app):
    job = await new_job(client)
    body = ("é" * 6000 + "x" * 20_000).encode()
    response = await client.post(f"/ping/{job['ping_key']}", data=io.BytesIO(body))
    assert response.status == 200
    async with app[sessionmaker_key]() as session:
        stored = await session.scalar(select(Ping.body))
    assert len(stored) == 10 * 1024 and stored.startswith("é" * 6000)


async def test_a_thousand_concurrent_pings_none_lost(client, app):
    job = await new_job(client)
    url = f"/ping/{job['ping_key']}"

    async def one(index):
        response = await client.post(f"{url}?rid=r{index}", data=str(index).encode())
        return response.status, await response.text()

    answers = await asyncio.gather(*(one(index) for index in range(1000)))
    assert answers == [(200, "OK")] * 1000
    assert await ping_count(app, job["id"]) == 1000
    async with app[sessionmaker_key]() as session:
        bodies = set(await session.scalars(select(Ping.body)))
    assert bodies == {str(index) for index in range(1000)}


async def test_deleting_the_job_deletes_its_pings(client, app):
    job = await new_job(client)
    assert (await client.get(f"/ping/{job['ping_key']}")).status == 200
    assert (await client.delete("/api/v1/jobs/db-nightly")).status == 204
    assert await ping_count(app) == 0
    assert (await client.get(f"/ping/{job['ping_key']}")).status == 404


async def pings_while_deleted(client, steady_key, doomed, count):
    """`count` pings for each of two jobs at once, the second job deleted as soon as one of its
    pings is answered; the delete's status and the answers of each job's pings."""
    first_answer = asyncio.get_running_loop().create_future()

    async def ping(key):
        status = (await client.get(f"/ping/{key}")).status
        if key == doomed["ping_key"] and not first_answer.done():
            first_answer.set_result(None)
        return status

    async def delete_midway():
        await first_answer
        return (await client.delete(f"/api/v1/jobs/{doomed['name']}")).status

    answers = await asyncio.gather(
        delete_midway(),
        *(ping(steady_key) for _ in range(count)),
        *(ping(doomed["ping_key"]) for _ in range(count)),
    )
    return answers[0], answers[1 : count + 1], answers[count + 1 :]


async def test_a_job_deleted_mid_batch_fails_only_its_own_pings(client, app):
    """Pings of a job deleted while they wait in a batch with other jobs' pings: the others are
    stored and answered OK, the deleted job's get 200 or 404 (never 500), whatever the timing."""
    steady = await new_job(client, "steady")
    ok = 0
    for round_ in range(4):
        doomed = await new_job(client, f"doomed-{round_}")
        deleted, steady_answers, doomed_answers = await pings_while_deleted(
            client, steady["ping_key"], doomed, 150
        )
        assert deleted == 204
        assert steady_answers == [200] * 150, f"round {round_}: {Counter(steady_answers)}"
        assert set(doomed_answers) <= {200, 404}, f"round {round_}: {Counter(doomed_answers)}"
        ok += 150
        assert await ping_count(app, steady["id"]) == ok
        assert await ping_count(app, doomed["id"]) == 0  # deleted with its job


async def scan(app, clock=None):
    from service.scanner.scanner import BackupScanner

    async with app[sessionmaker_key]() as session:
        options = {"clock": clock} if clock else {}
        return await BackupScanner(session, trigger="api", **options).scan_all_jobs()


async def test_pings_judge_the_job(client, app):
    """A heartbeat job is fresh from its last success; a failed run is critical until the next
    success; a run longer than max_duration is overdue; a success too quick is a warning."""
    response = await client.post(
        "/api/v1/jobs",
        json={"name": "hb", "schedule": {"every": "1d"}, "grace": "1h",
              "rules": {"max_duration": "1h", "min_duration": "1m"}},
    )  # fmt: skip
    job = await response.json()
    url = f"/ping/{job['ping_key']}"

    async def judged(clock=None):
        report = await scan(app, clock)
        (result,) = [result for result in report.jobs if result.name == "hb"]
        return result.status, [reason["code"] for reason in result.reasons]

    assert await judged() == ("pending", [])
    assert (await client.get(url)).status == 200
    assert await judged() == ("ok", [])
    assert (await client.get(f"{url}/1")).status == 200
    assert await judged() == ("critical", ["run_failed"])
    assert (await client.get(f"{url}/start")).status == 200
    assert (await client.get(url)).status == 200  # a success seconds after its start
    assert await judged() == ("warning", ["run_too_short"])
    assert (await client.get(f"{url}/start")).status == 200
    later = datetime.now(UTC) + timedelta(hours=2)
    status, reasons = await judged(lambda: later)
    assert status == "critical" and "run_overdue" in reasons
    much_later = datetime.now(UTC) + timedelta(days=2)
    status, reasons = await judged(lambda: much_later)
    assert status == "critical" and "late" in reasons
    listing = await (await client.get("/api/v1/jobs/hb")).json()
    assert listing["status"] == "critical"


@pytest.mark.parametrize(
    ("first", "second", "first_outcome"),
    [
        ("", "", "abandoned"),  # no run id: the later start supersedes the dead run
        ("?rid=r1", "?rid=r1", "abandoned"),  # the same run id: likewise
        ("?rid=r1", "?rid=r2", "running"),  # a fresh run id each run: overlapping runs
    ],
    ids=["no-rid", "same-rid", "new-rid"],
)
async def test_a_crashed_run_does_not_pin_the_job_critical(client, app, first, second,
                                                           first_outcome):  # fmt: skip
    """Issue 11 item 1: `max_duration: 20s`, a start whose script dies, later a start and a
    success. The job was critical `run_overdue` for as long as the dead start stayed among
    the judged pings, while its runs showed the newer success. Only the newest start is
    watched; a start with the dead run's run id (or none on both) shows it as abandoned."""
    response = await client.post(
        "/api/v1/jobs",
        json={"name": "hb", "schedule": {"every": "1d"}, "rules": {"max_duration": "20s"}},
    )
    job = await response.json()
    url = f"/ping/{job['ping_key']}"
    assert (await client.get(f"{url}/start{first}")).status == 200  # the script dies

    async def judged(seconds_later):
        report = await scan(app, lambda: datetime.now(UTC) + timedelta(seconds=seconds_later))
        (result,) = [result for result in report.jobs if result.name == "hb"]
        listing = await (await client.get("/api/v1/jobs/hb")).json()
        assert listing["status"] == result.status
        return result.status, [reason["code"] for reason in result.reasons]

    assert await judged(30) == ("critical", ["run_overdue"])
    assert (await client.get(f"{url}/start{second}")).status == 200
    assert (await client.get(f"{url}/0{second}")).status == 200
    assert await judged(31) == ("ok", [])
    assert await judged(86_000) == ("ok", [])  # never judged again, however old it gets
    runs = (await (await client.get("/api/v1/jobs/hb/runs")).json())["items"]
    summary = [(r["outcome"], r["started_at"] is not None, r["duration"] is not None)
               for r in runs]  # fmt: skip
    assert summary == [("success", True, True), (first_outcome, True, False)]
    page = await (await client.get("/jobs/hb")).text()
    rows = page[page.index('id="runs"') :]
    assert f'data-outcome="{first_outcome}"' in rows and 'data-outcome="success"' in rows
    if first_outcome == "abandoned":
        assert "⊘ abandoned" in rows


async def test_the_writer_outlives_an_error_in_its_own_error_handling(sqlite_url, tmp_path):
    """A database file that is a symlink loop cannot be opened (an outage), and describing that
    outage raised RuntimeError (Path.resolve: "Symlink loop"). That escaped the writer, which
    ended: its ping was never answered and every later one failed. Now the ping gets the
    error, and once the file is back, the next ping is stored."""
    real = Path(make_url(sqlite_url).database or "")
    seeding = create_engine(sqlite_url)
    try:
        await add_job(create_sessionmaker(seeding), datetime.now(UTC), name="looped")
        key = (await get_job(create_sessionmaker(seeding), "looped")).ping_key
    finally:
        await seeding.dispose()
    looped, other = tmp_path / "looped.db", tmp_path / "other.db"
    looped.symlink_to(other)
    other.symlink_to(looped)
    engine = create_engine(f"sqlite+aiosqlite:///{looped}")
    writer = PingWriter(create_sessionmaker(engine))
    await writer.start()
    try:
        with pytest.raises(DBAPIError):
            await asyncio.wait_for(writer.submit(Received(key, "success", 0, None, "", now())), 10)
        await asyncio.to_thread(put_back, real, looped, other)
        assert await asyncio.wait_for(
            writer.submit(Received(key, "success", 0, None, "", now())), 10
        )
    finally:
        await asyncio.wait_for(writer.stop(30), 10)
        await engine.dispose()


def put_back(real: Path, looped: Path, other: Path) -> None:
    looped.unlink()
    other.unlink()
    real.rename(looped)


def now() -> datetime:
    return datetime.now(UTC)


async def test_a_job_deleted_between_lookup_and_insert_fails_only_its_own_pings(
    engine, sessionmaker
):
    """The race of the test above, made certain: the job is deleted (on another connection)
    just before the batch's INSERT, after the lookup found it. The other job's pings of the same
    batch are all stored; the deleted job's are answered "no such job" (a 404)."""
    now_ = datetime.now(UTC)
    await add_job(sessionmaker, now_, name="steady")
    doomed_id = await add_job(sessionmaker, now_, name="doomed")
    steady_key = (await get_job(sessionmaker, "steady")).ping_key
    doomed_key = (await get_job(sessionmaker, "doomed")).ping_key
    deleted: list[str] = []

    async def delete_doomed() -> None:
        async with engine.begin() as connection:
            await connection.execute(delete(Job).where(Job.id == doomed_id))

    def before_insert(_connection, _cursor, statement, *_args) -> None:
        # (On PostgreSQL the lookup and the INSERT are one statement: the job is gone before it.)
        if not deleted and "INSERT INTO PINGS" in statement.upper():
            deleted.append(statement)
            await_only(delete_doomed())  # runs in SQLAlchemy's greenlet: this waits for it

    event.listen(engine.sync_engine, "before_cursor_execute", before_insert)
    writer = PingWriter(sessionmaker)
    await writer.start()
    try:
        # Queued in one go: the writer wakes only once all are waiting, and takes one batch.
        answers = await asyncio.wait_for(
            asyncio.gather(*(
                writer.submit(Received(key, "success", 0, None, "", now()))
                for key in [steady_key, doomed_key] * 20
            )),
            30,
        )  # fmt: skip
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before_insert)
        await asyncio.wait_for(writer.stop(30), 10)
    assert deleted, "the INSERT never ran"
    assert answers == [True, False] * 20
    async with sessionmaker() as session:
        stored = await session.scalar(select(func.count()).select_from(Ping))
    assert stored == 20


class Unprintable(OSError):
    """An error that cannot be described (a bug's stand-in): classifying it raises."""

    def __str__(self) -> str:
        raise RuntimeError("cannot describe this error")


async def test_the_writer_outlives_any_error_of_a_batch(sessionmaker):
    """Whatever escapes the storing of a batch (here classifying its error raises) fails that
    batch's pings, logged, and the writer goes on: the next ping is stored."""
    await add_job(sessionmaker, datetime.now(UTC), name="a")
    key = (await get_job(sessionmaker, "a")).ping_key
    calls = 0

    def failing_once() -> AsyncSession:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unprintable("the first session")
        return sessionmaker()

    writer = PingWriter(cast(async_sessionmaker[AsyncSession], failing_once))
    await writer.start()
    try:
        with pytest.raises(RuntimeError, match="cannot describe"):
            await asyncio.wait_for(writer.submit(Received(key, "success", 0, None, "", now())), 10)
        assert await asyncio.wait_for(
            writer.submit(Received(key, "success", 0, None, "", now())), 10
        )
    finally:
        await asyncio.wait_for(writer.stop(30), 10)
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Ping)) == 1
