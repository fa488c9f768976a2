"""Healthchecks' slug URLs through the real server, on PostgreSQL and SQLite:
`/ping/PING_KEY/<job name>[/start|/fail|/log|/N]`, `?create=1` provisioning a heartbeat job;
the per-job keys keep working beside them."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from service.db.models import Job, Ping
from service.runtime.keys import sessionmaker_key

PING_KEY = "project-key-0123456789abcdef"


@pytest.fixture
async def app(make_app):
    return make_app(
        ping_key=PING_KEY, ping_create_every_seconds=6 * 3600, ping_create_grace_seconds=600
    )


async def pings_of(app) -> dict[str, list[tuple[str, int | None]]]:
    async with app[sessionmaker_key]() as session:
        rows = await session.execute(
            select(Job.name, Ping.kind, Ping.exit_status).join(Job).order_by(Ping.id)
        )
        found: dict[str, list[tuple[str, int | None]]] = {}
        for name, kind, status in rows:
            found.setdefault(name, []).append((kind, status))
        return found


async def job_count(app) -> int:
    async with app[sessionmaker_key]() as session:
        return await session.scalar(select(func.count()).select_from(Job)) or 0


async def test_slug_urls_ping_by_name_beside_the_job_keys(client, app):
    made = await client.post(
        "/api/v1/jobs", json={"name": "db-nightly", "schedule": {"every": "1d"}}
    )
    assert made.status == 201, await made.text()
    job = await made.json()
    base = f"/ping/{PING_KEY}/db-nightly"
    answers = [
        await client.get(f"{base}/start?rid=r1"),
        await client.post(f"{base}/log", data=b"halfway"),
        await client.post(f"{base}?rid=r1", data=b"done"),
        await client.get(f"{base}/fail"),
        await client.get(f"{base}/3"),
        await client.head(f"{base}/0"),
        await client.get(f"/ping/{job['ping_key']}"),  # the job's own key still works
        await client.get(f"/ping/{job['ping_key']}/start"),
    ]
    assert [answer.status for answer in answers] == [200] * 8
    assert [await a.text() for a in answers if a.method != "HEAD"] == ["OK"] * 7
    assert (await pings_of(app)) == {
        "db-nightly": [
            ("start", None), ("log", None), ("success", 0), ("fail", None), ("fail", 3),
            ("success", 0), ("success", 0), ("start", None),
        ]
    }  # fmt: skip
    runs = (await (await client.get(f"/api/v1/jobs/{job['id']}/runs")).json())["items"]
    assert ("success", 0, "done") in [(r["outcome"], r["exit_status"], r["log"]) for r in runs]

    # Unknown names, wrong project keys, bad signals: 404, nothing stored or created.
    for path in (
        f"/ping/{PING_KEY}/nope", f"/ping/{PING_KEY}/nope/start", f"/ping/{PING_KEY}/0",
        f"/ping/{PING_KEY}/db-nightly/256", f"/ping/{PING_KEY}/db-nightly/restart",
        f"/ping/{PING_KEY}/Upper?create=1", f"/ping/{PING_KEY}/9lives?create=1",
        f"/ping/{PING_KEY[:-1]}x/db-nightly", f"/ping/{PING_KEY[:-1]}x/db-nightly?create=1",
        "/ping/db-nightly/db-nightly",
    ):  # fmt: skip
        response = await client.get(path)
        assert response.status == 404, path
    assert sum(len(v) for v in (await pings_of(app)).values()) == 8
    assert await job_count(app) == 1


async def test_create_provisions_a_heartbeat_job_once(client, app):
    first = await client.post(f"/ping/{PING_KEY}/srv01/start?create=1", data=b"booting")
    assert first.status == 201, await first.text()
    assert await first.text() == "Created"
    again = await client.get(f"/ping/{PING_KEY}/srv01?create=1")
    assert again.status == 200 and await again.text() == "OK"
    job = await (await client.get("/api/v1/jobs/srv01")).json()
    assert job["schedule"] == {"every": 6 * 3600, "cron": None, "timezone": None}
    assert job["grace"] == 600
    assert job["source"] is None
    assert (await pings_of(app)) == {"srv01": [("start", None), ("success", 0)]}

    # A name that is also a signal word is a job's name after the project key.
    start = await client.get(f"/ping/{PING_KEY}/start?create=1")
    assert start.status == 201, await start.text()
    assert (await pings_of(app))["start"] == [("success", 0)]

    # Many first pings at once: one creates the job, every one is stored.
    answers = await asyncio.gather(
        *(client.get(f"/ping/{PING_KEY}/burst/{code}?create=1") for code in range(10))
    )
    assert sorted(answer.status for answer in answers) == [200] * 9 + [201]
    assert len((await pings_of(app))["burst"]) == 10
    assert await job_count(app) == 3


async def test_no_slug_urls_without_a_project_key(aiohttp_client, make_app):
    client = await aiohttp_client(make_app())
    made = await client.post(
        "/api/v1/jobs", json={"name": "db-nightly", "schedule": {"every": "1d"}}
    )
    assert made.status == 201
    for path in (f"/ping/{PING_KEY}/db-nightly", f"/ping/{PING_KEY}/db-nightly?create=1"):
        assert (await client.get(path)).status == 404, path
    assert await job_count(client.app) == 1
