"""notify.after and notify.for end to end (both databases): jobs declared through the real API,
judged by full scans, deadline ticks and pings, notices read from the outbox and delivered to
a real webhook receiver; the API and the dashboard say what is held."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from service.core.scan_options import ScanOptions
from service.db.models import JobCheck, NotificationEvent
from service.http.web.words import as_of
from service.notify.config import parse_channels
from service.notify.dispatcher import Dispatcher, DispatchOptions
from service.runtime.keys import channels_key
from service.runtime.tick import DeadlineTick
from service.scanner.scanner import BackupScanner

from tests.support import Receiver, get_job, make_file, store_failure_ping

FAST = DispatchOptions(poll_seconds=0.05, lease_seconds=30, retry_seconds=0.05, max_attempts=4)


@pytest.fixture
async def receiver():
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def app(make_app, receiver):
    channels = parse_channels(
        {"defaults": ["ops"], "channels": {"ops": {"type": "webhook", "url": receiver.url}}},
        "test",
    )
    return make_app(channels=channels)


async def declare(client, clock, name: str, folder: Path | None, **notify: Any) -> dict[str, Any]:
    """Declare the job through the API (at the real time: the scans' clock is moved past it,
    or they would take the declaration as newer than their look)."""
    body: dict[str, Any] = {"name": name, "schedule": {"every": "1d"}, "notify": notify}
    if folder is not None:
        body["source"] = {"type": "local", "path": str(folder)}
    response = await client.post("/api/v1/jobs", json=body)
    assert response.status == 201, await response.text()
    clock.now = max(clock.now, datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1))
    return await response.json()


async def job_json(client, name: str) -> dict[str, Any]:
    """The job as GET /api/v1/jobs/{name} answers it; the list (read from rows of columns, not
    from Job entities) answers it alike, held notice included."""
    response = await client.get(f"/api/v1/jobs/{name}")
    assert response.status == 200
    job = await response.json()
    listed = await client.get("/api/v1/jobs", params={"q": name})
    assert listed.status == 200
    assert [item for item in (await listed.json())["items"] if item["name"] == name] == [job]
    return job


async def told(sessionmaker, name: str) -> list[tuple[str, str]]:
    """The notices written for the job: (kind, status), oldest first."""
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(NotificationEvent)
            .where(NotificationEvent.job_name == name)
            .order_by(NotificationEvent.id)
        )
        return [(row.kind, row.payload["status"]) for row in rows]


async def tick(sessionmaker, clock) -> list[str]:
    """One deadline tick at the clock's time: the names it judged."""
    return await DeadlineTick(sessionmaker, ScanOptions(clock=clock)).run()


async def scan(sessionmaker, clock) -> None:
    async with sessionmaker() as session:
        await BackupScanner(session, clock=clock).scan_all_jobs()


class Nfs:
    """A backup folder that comes and goes, as a flapping NFS mount does."""

    def __init__(self, root: Path, now: datetime) -> None:
        self.path = root / "nfs"
        self._away = root / "nfs-away"
        make_file(self.path / "db.dump", 5000, now - timedelta(hours=1))

    def drop(self) -> None:
        self.path.rename(self._away)

    def restore(self) -> None:
        self._away.rename(self.path)


async def test_a_flapping_source_with_after_2_tells_nothing(client, sessionmaker, clock, tmp_path):
    """One scan cannot read the folder, the next can, again and again: judged and recorded
    every time, told never (neither a problem nor a recovery)."""
    nfs = Nfs(tmp_path, clock())
    await declare(client, clock, "nfs", nfs.path, after=2)
    await scan(sessionmaker, clock)
    assert (await get_job(sessionmaker, "nfs")).status == "ok"
    for _ in range(3):
        nfs.drop()
        clock.advance(minutes=15)
        await scan(sessionmaker, clock)
        job = await get_job(sessionmaker, "nfs")
        assert job.status == "unknown" and job.reasons[0]["code"] == "source_error"
        held = (await job_json(client, "nfs"))["notice"]
        assert held == {"held": "after", "kind": "problem", "until": None, "judgements": 1,
                        "bad_since": clock().isoformat().replace("+00:00", "Z")}  # fmt: skip
        nfs.restore()
        clock.advance(minutes=15)
        await scan(sessionmaker, clock)
        assert (await get_job(sessionmaker, "nfs")).status == "ok"
        assert (await job_json(client, "nfs"))["notice"] is None
    assert await told(sessionmaker, "nfs") == []
    async with sessionmaker() as session:  # every change is still in the history
        assert await session.scalar(select(func.count()).select_from(JobCheck)) == 7


async def test_two_bad_judgements_in_a_row_tell_once(client, sessionmaker, clock, tmp_path):
    """after: 2: the second bad scan (the same state as the first: a judgement that would only
    touch checked_at) tells the problem, once; its recovery is told."""
    nfs = Nfs(tmp_path, clock())
    await declare(client, clock, "nfs", nfs.path, after=2)
    await scan(sessionmaker, clock)
    nfs.drop()
    clock.advance(minutes=15)
    await scan(sessionmaker, clock)
    assert await told(sessionmaker, "nfs") == []
    clock.advance(minutes=15)
    await scan(sessionmaker, clock)
    assert await told(sessionmaker, "nfs") == [("problem", "unknown")]
    for _ in range(3):  # still bad: nothing more (and only checked_at moves)
        clock.advance(minutes=15)
        await scan(sessionmaker, clock)
    assert await told(sessionmaker, "nfs") == [("problem", "unknown")]
    assert (await get_job(sessionmaker, "nfs")).bad_count == 2  # counted up to `after`
    nfs.restore()
    clock.advance(minutes=15)
    await scan(sessionmaker, clock)
    assert await told(sessionmaker, "nfs") == [("problem", "unknown"), ("recovery", "ok")]


async def test_for_is_told_by_the_tick_when_the_duration_has_elapsed(
    client, sessionmaker, clock, tmp_path, receiver
):
    """for: 30s: the problem is held while it lasts less, shown so in the API and on the
    dashboard, and written by the deadline tick at the moment it has lasted 30 s (not
    before, not at the next full scan); its recovery is told."""
    nfs = Nfs(tmp_path, clock())
    await declare(client, clock, "nfs", nfs.path, **{"for": "30s"})
    await scan(sessionmaker, clock)
    nfs.drop()
    clock.advance(minutes=15)
    bad_since = clock()
    await scan(sessionmaker, clock)
    until = bad_since + timedelta(seconds=30)
    held = (await job_json(client, "nfs"))["notice"]
    assert held == {"held": "for", "kind": "problem", "judgements": 0,
                    "bad_since": bad_since.isoformat().replace("+00:00", "Z"),
                    "until": until.isoformat().replace("+00:00", "Z")}  # fmt: skip
    page = await (await client.get("/jobs/nfs")).text()
    now = datetime.now(UTC)
    line = (
        f"unknown since {as_of(bad_since, now)}; you will be told at {as_of(until, now)} if "
        "it lasts (notify.for 30 s)"
    )
    assert line in page

    clock.advance(seconds=29)
    assert await tick(sessionmaker, clock) == []
    assert await told(sessionmaker, "nfs") == []
    clock.advance(seconds=1)
    assert await tick(sessionmaker, clock) == ["nfs"]
    assert await told(sessionmaker, "nfs") == [("problem", "unknown")]
    assert (await job_json(client, "nfs"))["notice"] is None
    assert 'id="held"' not in await (await client.get("/jobs/nfs")).text()
    clock.advance(seconds=1)
    assert await tick(sessionmaker, clock) == []  # told: nothing due

    nfs.restore()
    clock.advance(minutes=1)
    await scan(sessionmaker, clock)
    assert await told(sessionmaker, "nfs") == [("problem", "unknown"), ("recovery", "ok")]
    dispatcher = Dispatcher(sessionmaker, client.server.app[channels_key], FAST, clock=clock)
    for _ in range(50):
        if not await dispatcher.run_once():
            break
    assert [body["kind"] for body in receiver.delivered] == ["problem", "recovery"]


async def test_a_problem_held_by_for_that_recovers_is_never_told(
    client, sessionmaker, clock, tmp_path
):
    nfs = Nfs(tmp_path, clock())
    await declare(client, clock, "nfs", nfs.path, **{"for": "30s"})
    await scan(sessionmaker, clock)
    nfs.drop()
    clock.advance(minutes=15)
    await scan(sessionmaker, clock)
    nfs.restore()
    clock.advance(seconds=10)
    await scan(sessionmaker, clock)
    clock.advance(seconds=20)
    assert await tick(sessionmaker, clock) == []  # nothing is due
    clock.advance(minutes=15)
    await scan(sessionmaker, clock)
    assert await told(sessionmaker, "nfs") == []
    job = await get_job(sessionmaker, "nfs")
    assert (job.status, job.bad_since, job.bad_count, job.renotify_at) == ("ok", None, 0, None)


async def test_each_ping_judged_by_the_tick_counts(client, sessionmaker, clock):
    """A heartbeat job, after: 2: one failed run is held, the second failed run in a row
    (the same verdict, critical run_failed) is told."""
    await declare(client, clock, "hb", None, after=2)
    key = (await get_job(sessionmaker, "hb")).ping_key
    tick = DeadlineTick(sessionmaker)
    await tick.run()  # the tick starts from the pings already there
    await store_failure_ping(sessionmaker, key)
    assert await tick.run() == ["hb"]
    job = await get_job(sessionmaker, "hb")
    assert job.status == "critical" and job.reasons[0]["code"] == "run_failed"
    assert await told(sessionmaker, "hb") == []
    await store_failure_ping(sessionmaker, key)
    assert await tick.run() == ["hb"]
    assert await told(sessionmaker, "hb") == [("problem", "critical")]


async def silence(client, job: str, start: datetime, end: datetime) -> dict[str, Any]:
    body = {
        "jobs": [job], "starts_at": start.isoformat(), "ends_at": end.isoformat(),
        "comment": "alice: moving the NAS",
    }  # fmt: skip
    response = await client.post("/api/v1/silences", json=body)
    assert response.status == 201, await response.text()
    return await response.json()


async def test_a_silence_holds_the_notice_and_the_tick_tells_it_once_when_it_ends(
    client, sessionmaker, clock, tmp_path, receiver
):
    """Silenced: judged and recorded as always, told nothing; shown as held by the silence;
    when the window ends, the deadline tick judges the job at that moment and, still bad, it
    is told once."""
    nfs = Nfs(tmp_path, clock())
    await declare(client, clock, "nfs", nfs.path)
    await scan(sessionmaker, clock)
    end = clock() + timedelta(minutes=10)
    # From before the real time: the API answers at the real time, the scans at the clock's.
    await silence(client, "nfs", datetime.now(UTC) - timedelta(minutes=1), end)

    nfs.drop()
    clock.advance(minutes=1)
    await scan(sessionmaker, clock)
    assert (await get_job(sessionmaker, "nfs")).status == "unknown"
    async with sessionmaker() as session:  # recorded in the history all the same
        statuses = await session.scalars(select(JobCheck.status).order_by(JobCheck.id))
        assert list(statuses)[-1] == "unknown"
    assert await told(sessionmaker, "nfs") == []
    held = (await job_json(client, "nfs"))["notice"]
    assert held["held"] == "silence" and held["kind"] == "problem"
    assert held["until"] == end.isoformat().replace("+00:00", "Z")
    clock.advance(minutes=5)
    await scan(sessionmaker, clock)  # another judgement inside the window: still nothing
    assert await told(sessionmaker, "nfs") == []

    clock.now = end - timedelta(seconds=1)
    assert await tick(sessionmaker, clock) == []
    clock.now = end
    assert await tick(sessionmaker, clock) == ["nfs"]
    assert await told(sessionmaker, "nfs") == [("problem", "unknown")]
    assert (await job_json(client, "nfs"))["notice"] is None
    clock.advance(minutes=15)
    await scan(sessionmaker, clock)
    assert await told(sessionmaker, "nfs") == [("problem", "unknown")]  # once


async def test_a_job_that_breaks_and_recovers_inside_a_silence_tells_nothing(
    client, sessionmaker, clock, tmp_path
):
    nfs = Nfs(tmp_path, clock())
    await declare(client, clock, "nfs", nfs.path)
    await scan(sessionmaker, clock)
    end = clock() + timedelta(minutes=10)
    await silence(client, "nfs", clock(), end)
    nfs.drop()
    clock.advance(minutes=1)
    await scan(sessionmaker, clock)
    nfs.restore()
    clock.advance(minutes=1)
    await scan(sessionmaker, clock)
    assert (await get_job(sessionmaker, "nfs")).status == "ok"
    clock.now = end
    assert await tick(sessionmaker, clock) == []
    clock.advance(minutes=15)
    await scan(sessionmaker, clock)
    assert await told(sessionmaker, "nfs") == []


async def test_a_silence_that_ended_early_lets_the_next_judgement_tell(
    client, sessionmaker, clock, tmp_path
):
    """DELETE ends a silence now: the next judgement of a bad job tells it."""
    nfs = Nfs(tmp_path, clock())
    await declare(client, clock, "nfs", nfs.path)
    await scan(sessionmaker, clock)
    made = await silence(client, "nfs", clock(), clock() + timedelta(hours=2))
    nfs.drop()
    clock.advance(minutes=1)
    await scan(sessionmaker, clock)
    assert await told(sessionmaker, "nfs") == []
    response = await client.delete(f"/api/v1/silences/{made['id']}")
    assert response.status == 200, await response.text()
    clock.now = max(clock.now, datetime.now(UTC) + timedelta(seconds=1))
    await scan(sessionmaker, clock)
    assert await told(sessionmaker, "nfs") == [("problem", "unknown")]


async def test_a_silence_ended_early_is_told_by_the_next_tick(
    client, sessionmaker, clock, tmp_path
):
    """The notice it held was due at the window's end: ending it now makes it due now, so the
    deadline tick tells it within seconds, not the next full scan."""
    nfs = Nfs(tmp_path, clock())
    await declare(client, clock, "nfs", nfs.path)
    await scan(sessionmaker, clock)
    # From before the real time: the API ends it at the real time, the scans run at the clock's.
    start = datetime.now(UTC) - timedelta(minutes=1)
    made = await silence(client, "nfs", start, clock() + timedelta(hours=2))
    nfs.drop()
    clock.advance(minutes=1)
    await scan(sessionmaker, clock)
    clock.advance(seconds=5)
    assert await tick(sessionmaker, clock) == []  # held until the window's end
    response = await client.delete(f"/api/v1/silences/{made['id']}")
    assert response.status == 200, await response.text()
    clock.now = max(clock.now, datetime.now(UTC)) + timedelta(seconds=1)
    assert await tick(sessionmaker, clock) == ["nfs"]
    assert await told(sessionmaker, "nfs") == [("problem", "unknown")]
