"""The public status page /status/{tag}: opt-in per tag (PUBLIC_STATUS_TAGS), no token, job
names and statuses only; on PostgreSQL and SQLite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import update

from service.db.models import Job
from service.runtime.keys import sessionmaker_key, settings_key
from service.settings import SettingsError, load_settings
from service.store.tokens import create_token

from tests.support import add_job, make_file

SECRET_DIR = "very-private-dumps"
REASON = "newest backup db-2026.sql.gz is 26 h old; a new one was due by"


async def started(aiohttp_client, make_app, clock, tmp_path: Path):
    app = make_app(public_status_tags="prod,web")
    client = await aiohttp_client(app)
    sessionmaker = app[sessionmaker_key]
    backups = tmp_path / SECRET_DIR
    make_file(backups / "db-2026.sql.gz", 12345, clock.now)
    await add_job(
        sessionmaker, clock.now, name="db-nightly", tags=["prod", "db"],
        description="the ERP database, dumped by pg_dump on host erp-db-01",
        source={"type": "local", "path": str(backups), "pattern": "*.sql.gz"},
    )  # fmt: skip
    await add_job(sessionmaker, clock.now, name="mail-relay", tags=["prod"])
    await add_job(sessionmaker, clock.now, name="intranet", tags=["internal"])
    reasons = [{"code": "late", "severity": "critical", "message": REASON}]
    latest = {"path": f"{backups}/db-2026.sql.gz", "size": 12345, "mtime": clock.now.isoformat()}
    async with sessionmaker() as session:
        await session.execute(
            update(Job)
            .where(Job.name == "db-nightly")
            .values(status="critical", reasons=reasons, latest_artifact=latest)
        )
        await session.execute(update(Job).where(Job.name == "mail-relay").values(status="ok"))
        await session.execute(update(Job).where(Job.name == "intranet").values(status="warning"))
        await session.commit()
        await create_token(session, "admin", read_only=False)  # the dashboard is closed
    return app, client


async def test_an_opted_in_tag_shows_names_and_statuses_only(
    aiohttp_client, make_app, clock, tmp_path
):
    _, client = await started(aiohttp_client, make_app, clock, tmp_path)
    assert (await client.get("/", allow_redirects=False)).status == 303  # closed: tokens exist
    response = await client.get("/status/prod")  # no token, no cookie
    assert response.status == 200
    assert response.content_type == "text/html"
    assert "max-age=30" in response.headers["Cache-Control"]
    assert "Set-Cookie" not in response.headers
    page = await response.text()
    items = re.findall(r'<li data-job="([^"]+)" data-status="([^"]+)">', page)
    assert items == [("db-nightly", "critical"), ("mail-relay", "ok")]  # worst first
    assert "✖ critical" in page
    assert '<meta http-equiv="refresh" content="60">' in page
    # Nothing beyond name and status: no path, size, reason, message, description, other job.
    body = page.split("</head>", 1)[1]
    for leak in [SECRET_DIR, "db-2026", "12345", "12.1 KiB", REASON, "late", "26 h", "pg_dump",
                 "erp-db-01", "intranet", "/jobs/", "Tokens", "Log out", "csrf", "/ui/digest",
                 "<script", "<form"]:  # fmt: skip
        assert leak not in body, leak
    assert SECRET_DIR not in page and REASON not in page and "erp-db-01" not in page

    other = await (await client.get("/status/web")).text()
    assert "No job carries this tag" in other  # opted in, empty: 200, not a 404


@pytest.mark.parametrize("tag", ["internal", "db", "nope", "PROD"])
async def test_a_tag_not_opted_in_is_a_404(aiohttp_client, make_app, clock, tmp_path, tag):
    _, client = await started(aiohttp_client, make_app, clock, tmp_path)
    response = await client.get(f"/status/{tag}")
    assert response.status == 404
    text = await response.text()
    assert "intranet" not in text and "db-nightly" not in text


async def test_no_public_tag_by_default(aiohttp_client, make_app):
    app = make_app()
    assert app[settings_key].public_status_tags == ()
    client = await aiohttp_client(app)
    assert (await client.get("/status/prod")).status == 404


def test_the_setting_is_a_list_of_tags(monkeypatch):
    monkeypatch.setenv("PUBLIC_STATUS_TAGS", " prod, web ,prod,")
    assert load_settings().public_status_tags == ("prod", "web")
    monkeypatch.setenv("PUBLIC_STATUS_TAGS", "prod,web site")
    with pytest.raises(SettingsError, match=r"PUBLIC_STATUS_TAGS: .*'web site' is not a tag"):
        load_settings()
