"""Status badges: /badge/{key}/{name}.svg and .json (no token, the key is the secret), the URLs
listed by /api/v1/badges and shown on the job page; on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
from urllib.parse import quote, urlsplit

from sqlalchemy import delete, select, update

from service.core.badges import badge_key, worst_of
from service.db.models import Job, ServerSecret
from service.runtime.keys import sessionmaker_key
from service.store.secrets import BADGES, shared_secret
from service.store.tokens import create_token

from tests.integration.test_api_auth import bearer, error_of
from tests.integration.test_api_tokens import log_in
from tests.support import add_job


async def started(aiohttp_client, make_app, clock):
    """Jobs in known statuses, behind tokens: db-nightly ok, db-weekly critical (both `db`),
    web-logs warning (`web`), archive paused (`db`)."""
    app = make_app()
    client = await aiohttp_client(app)
    sessionmaker = app[sessionmaker_key]
    statuses = {"db-nightly": "ok", "db-weekly": "critical", "web-logs": "warning",
                "archive": "paused"}  # fmt: skip
    tags = {"db-nightly": ["db"], "db-weekly": ["db", "prod"], "web-logs": ["web"],
            "archive": ["db"]}  # fmt: skip
    for name, status in statuses.items():
        await add_job(sessionmaker, clock.now, name=name, tags=tags[name],
                      description=f"secret path /srv/{name}")  # fmt: skip
        async with sessionmaker() as session:
            await session.execute(update(Job).where(Job.name == name).values(status=status))
            await session.commit()
    async with sessionmaker() as session:
        await create_token(session, "admin", read_only=False)
        reader = await create_token(session, "grafana", read_only=True)
    return app, client, reader


def path_of(url):
    return urlsplit(url).path


async def test_badges_listed_then_served_without_a_token(aiohttp_client, make_app, clock):
    _, client, reader = await started(aiohttp_client, make_app, clock)
    await error_of(await client.get("/api/v1/badges"), 401)
    response = await client.get("/api/v1/badges", headers=bearer(reader))  # read-only may
    assert response.status == 200
    listed = await response.json()
    jobs = {badge["name"]: badge for badge in listed["jobs"]}
    tags = {badge["name"]: badge for badge in listed["tags"]}
    assert sorted(jobs) == ["archive", "db-nightly", "db-weekly", "web-logs"]
    assert sorted(tags) == ["db", "prod", "web"]
    assert tags["db"]["status"] == "critical"  # the worst of ok, critical and paused
    assert tags["web"]["status"] == "warning"
    badge = jobs["db-nightly"]
    assert badge["status"] == "ok"
    origin = str(client.make_url("")).rstrip("/")
    assert badge["svg_url"].startswith(origin + "/badge/") and badge["svg_url"].endswith(
        "/db-nightly.svg"
    )
    assert badge["shields_url"] == "https://img.shields.io/endpoint?url=" + quote(
        badge["json_url"], safe=""
    )
    # Every badge has its own key: one URL gives away no other badge.
    keys = {path_of(b["svg_url"]).split("/")[2] for b in [*jobs.values(), *tags.values()]}
    assert len(keys) == 7

    # No token needed; the name and the status, nothing else.
    response = await client.get(path_of(badge["json_url"]))
    assert response.status == 200
    assert await response.json() == {
        "schemaVersion": 1, "label": "db-nightly", "message": "ok", "color": "brightgreen",
    }  # fmt: skip
    cache = response.headers["Cache-Control"]
    assert "max-age=60" in cache and "public" in cache
    response = await client.get(path_of(badge["svg_url"]))
    assert response.status == 200 and response.content_type == "image/svg+xml"
    svg = await response.text()
    assert svg.startswith("<svg") and ">db-nightly<" in svg and ">ok<" in svg
    assert "max-age=60" in response.headers["Cache-Control"]
    assert "/srv/" not in svg and "secret path" not in svg

    # A tag's badge: the worst status of its jobs.
    shown = await (await client.get(path_of(tags["db"]["json_url"]))).json()
    assert shown == {"schemaVersion": 1, "label": "db", "message": "critical", "color": "red"}
    shown = await (await client.get(path_of(tags["prod"]["json_url"]))).json()
    assert shown["message"] == "critical"
    svg = await (await client.get(path_of(tags["web"]["svg_url"]))).text()
    assert ">warning<" in svg and ">web<" in svg


async def test_wrong_key_unknown_job_or_tag_are_one_404(aiohttp_client, make_app, clock):
    app, client, reader = await started(aiohttp_client, make_app, clock)
    listed = await (await client.get("/api/v1/badges", headers=bearer(reader))).json()
    good = path_of(next(b for b in listed["jobs"] if b["name"] == "db-nightly")["svg_url"])
    key = good.split("/")[2]
    tag_key = path_of(next(b for b in listed["tags"] if b["name"] == "db")["svg_url"]).split("/")[2]
    wrong = ("A" if key[0] != "A" else "B") + key[1:]
    bodies = set()
    for path in [
        f"/badge/{wrong}/db-nightly.svg",  # a wrong key
        f"/badge/{wrong}/db-nightly.json",
        f"/badge/{key}/db-weekly.svg",  # another job's key
        f"/badge/{key}/db.json",  # a job's key for a tag
        f"/badge/{tag_key}/db-nightly.json",  # a tag's key for a job
        f"/badge/{tag_key}/nope.svg",
    ]:
        response = await client.get(path)
        assert response.status == 404, path
        bodies.add(await response.text())
    assert len(bodies) == 1, bodies  # the same answer whatever was wrong
    assert "no such badge" in bodies.pop()
    for path in [f"/badge/{key[:-1]}/db-nightly.svg", f"/badge/{key}/db-nightly.png",
                 f"/badge/{key}/.svg"]:  # fmt: skip
        assert (await client.get(path)).status == 404, path

    # A job deleted: its badge is a 404 too; a tag whose jobs are all gone as well.
    sessionmaker = app[sessionmaker_key]
    async with sessionmaker() as session:
        await session.execute(delete(Job).where(Job.name == "db-nightly"))
        await session.commit()
    assert (await client.get(good)).status == 404
    # A right key (made with the stored secret) for a tag no job carries.
    async with sessionmaker() as session:
        secret = bytes.fromhex((await session.get(ServerSecret, "badges")).value)
    right_key = badge_key(secret, "tag", "nothing-tagged")
    assert (await client.get(f"/badge/{right_key}/nothing-tagged.svg")).status == 404


async def test_the_secret_is_shared_and_rotating_it_voids_every_badge(
    aiohttp_client, make_app, clock
):
    app, client, reader = await started(aiohttp_client, make_app, clock)
    listed = await (await client.get("/api/v1/badges", headers=bearer(reader))).json()
    # Another replica (another app on the same database) makes the same URLs.
    other = await aiohttp_client(make_app())
    again = await (await other.get("/api/v1/badges", headers=bearer(reader))).json()
    assert [path_of(b["svg_url"]) for b in listed["jobs"]] == [
        path_of(b["svg_url"]) for b in again["jobs"]
    ]
    url = path_of(listed["jobs"][0]["svg_url"])
    assert (await client.get(url)).status == 200
    async with app[sessionmaker_key]() as session:
        await session.execute(delete(ServerSecret).where(ServerSecret.name == "badges"))
        await session.commit()
    assert (await client.get(url)).status == 404
    fresh = await (await client.get("/api/v1/badges", headers=bearer(reader))).json()
    assert path_of(fresh["jobs"][0]["svg_url"]) != url


async def test_the_job_page_shows_its_badge(aiohttp_client, make_app, clock):
    _, client, reader = await started(aiohttp_client, make_app, clock)
    listed = await (await client.get("/api/v1/badges", headers=bearer(reader))).json()
    badge = next(b for b in listed["jobs"] if b["name"] == "db-weekly")
    # A read-only viewer sees the badge (the name and the status it sees anyway).
    await log_in(client, reader)
    page = await (await client.get("/jobs/db-weekly")).text()
    assert f'src="{path_of(badge["svg_url"])}"' in page
    assert badge["svg_url"] in page and badge["json_url"] in page


def test_worst_of_a_tag():
    assert worst_of(["ok", "critical", "paused"]) == "critical"
    assert worst_of(["ok", "pending"]) == "ok"
    assert worst_of(["unknown", "ok"]) == "unknown"
    assert worst_of(["warning", "unknown"]) == "warning"
    assert worst_of(["paused", "paused"]) == "paused"
    assert worst_of(["pending"]) == "pending"
    assert worst_of([]) is None


async def test_replicas_making_the_secret_at_once_agree(sessionmaker):
    """The first insert wins; the others read it back (the IntegrityError path)."""

    async def make():
        async with sessionmaker() as session:
            return await shared_secret(session, BADGES)

    made = await asyncio.gather(*(make() for _ in range(5)))
    assert len(set(made)) == 1 and len(made[0]) == 32
    async with sessionmaker() as session:
        assert len(list(await session.scalars(select(ServerSecret)))) == 1
