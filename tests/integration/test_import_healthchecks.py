"""`backup-monitor import healthchecks`, run as the real command on PostgreSQL and SQLite, from a
file and from a real HTTP server answering as Healthchecks' Management API v3 does: one job per
check, its ping URL's UUID kept as the job's key (the old ping URLs keep working), idempotent."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import delete, func, select

from service.db.models import Job, Ping

from tests.support import Result, add_job, cli

DB_UUID = "5b3f6a5e-8c1d-4b8e-9f2a-1c3d4e5f6a7b"
OFFSITE_UUID = "d1665499-e827-441f-bf13-8f15e8f4c0b9"
REPORT_UUID = "0f6c3a1e-2b4d-4c6e-8a0b-9d8c7b6a5f4e"
API_KEY = "rw-key-0123456789"

# As GET /api/v3/checks/ answers with a read-write key (fields this import ignores included).
CHECKS: dict[str, Any] = {
    "checks": [
        {
            "name": "Database Backup", "slug": "db-backup", "tags": "prod db",
            "desc": "nightly pg_dump", "grace": 3600, "n_pings": 12, "status": "up",
            "started": False, "last_ping": "2026-11-29T02:30:12+00:00",
            "next_ping": "2026-11-30T02:30:12+00:00", "manual_resume": False,
            "methods": "", "subject": "", "subject_fail": "", "start_kw": "", "success_kw": "",
            "failure_kw": "", "filter_subject": False, "filter_body": False,
            "ping_url": f"https://hc-ping.com/{DB_UUID}", "uuid": DB_UUID,
            "update_url": f"https://healthchecks.io/api/v3/checks/{DB_UUID}",
            "pause_url": f"https://healthchecks.io/api/v3/checks/{DB_UUID}/pause",
            "resume_url": f"https://healthchecks.io/api/v3/checks/{DB_UUID}/resume",
            "channels": "", "timeout": 86400,
        },
        {
            "name": "Offsite sync", "slug": "", "tags": "", "desc": "", "grace": 7200,
            "n_pings": 0, "status": "paused", "started": False, "last_ping": None,
            "next_ping": None, "manual_resume": False, "methods": "",
            "ping_url": f"https://hc.example.com/ping/{OFFSITE_UUID}",
            "update_url": f"https://hc.example.com/api/v3/checks/{OFFSITE_UUID}",
            "channels": "", "schedule": "30 2 * * 1-5", "tz": "Europe/Riga",
        },
        {
            "name": "9 Daily report", "tags": "reports", "desc": "", "grace": 300,
            "n_pings": 3, "status": "down", "ping_url": f"https://hc-ping.com/{REPORT_UUID}/",
            "timeout": 3600,
        },
    ]
}  # fmt: skip


@pytest.fixture
async def healthchecks() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A real HTTP server answering GET /api/v3/checks/ as Healthchecks does: 401 without the
    right X-Api-Key. The served document may be changed by the test."""
    served: dict[str, Any] = {"document": CHECKS}

    async def checks(request: web.Request) -> web.Response:
        if request.headers.get("X-Api-Key") != API_KEY:
            return web.json_response({"error": "wrong api key"}, status=401)
        return web.json_response(served["document"])

    app = web.Application()
    app.router.add_get("/api/v3/checks/", checks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", served
    finally:
        await runner.cleanup()


async def jobs_of(sessionmaker: Any) -> dict[str, dict[str, Any]]:
    async with sessionmaker() as session:
        jobs = (await session.scalars(select(Job))).all()
        return {
            job.name: {c.key: getattr(job, c.key) for c in Job.__table__.columns} for job in jobs
        }


async def test_import_keeps_ping_urls_and_is_idempotent(
    database_url, sessionmaker, make_app, aiohttp_client, healthchecks, base_env, tmp_path, clock
):
    url, served = healthchecks
    export = tmp_path / "export.json"
    export.write_text(json.dumps(CHECKS))

    async def run(*args: str) -> Result:
        return await cli(
            "import", "healthchecks", *args, env=base_env, database_url=database_url, cwd=tmp_path
        )

    # A job already holding one of the names (with its own key): nothing is imported.
    await add_job(sessionmaker, clock.now, name="db-backup")
    refused = await run("--file", str(export))
    assert refused.code == 1, refused
    assert "job 'db-backup' exists with another ping key" in refused.err, refused
    assert list(await jobs_of(sessionmaker)) == ["db-backup"]
    async with sessionmaker() as session:
        await session.execute(delete(Job))
        await session.commit()

    first = await run("--file", str(export))
    assert first.code == 0, first
    assert first.out.strip() == "3 created, 0 updated, 0 unchanged", first
    jobs = await jobs_of(sessionmaker)
    assert sorted(jobs) == ["db-backup", "hc-9-daily-report", "offsite-sync"]
    db, offsite, report = jobs["db-backup"], jobs["offsite-sync"], jobs["hc-9-daily-report"]
    assert (db["ping_key"], offsite["ping_key"], report["ping_key"]) == (
        DB_UUID, OFFSITE_UUID, REPORT_UUID,
    )  # fmt: skip
    assert db["schedule"] == {"every": 86400, "cron": None, "timezone": None}
    assert (db["grace"], db["tags"], db["description"], db["paused"]) == (
        3600, ["prod", "db"], "nightly pg_dump", False,
    )  # fmt: skip
    assert db["source"] is None
    assert offsite["schedule"] == {"every": None, "cron": "30 2 * * 1-5", "timezone": "Europe/Riga"}
    assert (offsite["grace"], offsite["tags"], offsite["paused"]) == (7200, [], True)
    assert (report["schedule"]["every"], report["grace"], report["tags"]) == (
        3600,
        300,
        ["reports"],
    )

    # The cron lines' URLs keep working: the check's UUID is the job's ping key.
    client = await aiohttp_client(make_app())
    for path in (f"/ping/{DB_UUID}/start", f"/ping/{DB_UUID}", f"/ping/{OFFSITE_UUID}/fail"):
        response = await client.get(path)
        assert response.status == 200, path
    async with sessionmaker() as session:
        pinged = await session.execute(
            select(Job.name, func.count()).join(Ping).group_by(Job.name).order_by(Job.name)
        )
        assert [tuple(row) for row in pinged] == [("db-backup", 2), ("offsite-sync", 1)]
    before = await jobs_of(sessionmaker)

    # Again, from the instance over HTTP: nothing changes.
    again = await run("--url", url, "--api-key", API_KEY)
    assert again.code == 0, again
    assert again.out.strip() == "0 created, 0 updated, 3 unchanged", again
    assert await jobs_of(sessionmaker) == before

    # A check changed in Healthchecks (its grace, its slug): that job is updated, same key.
    changed = copy.deepcopy(CHECKS)
    changed["checks"][0]["grace"] = 5400
    changed["checks"][2]["slug"] = "daily-report"
    served["document"] = changed
    updated = await run("--url", url, "--api-key", API_KEY)
    assert updated.code == 0, updated
    assert updated.out.strip() == "0 created, 2 updated, 1 unchanged", updated
    after = await jobs_of(sessionmaker)
    assert sorted(after) == ["daily-report", "db-backup", "offsite-sync"]
    assert (
        after["db-backup"]["grace"] == 5400
        and after["db-backup"]["id"] == before["db-backup"]["id"]
    )
    assert after["daily-report"]["ping_key"] == REPORT_UUID
    assert after["daily-report"]["id"] == before["hc-9-daily-report"]["id"]

    # A wrong key, and a read-only key's list (no ping URLs): told, nothing written.
    wrong = await run("--url", url, "--api-key", "nope")
    assert wrong.code == 1, wrong
    assert "/api/v3/checks/ answered 401" in wrong.err, wrong
    read_only = copy.deepcopy(CHECKS)
    for check in read_only["checks"]:
        for key in ("ping_url", "uuid", "update_url", "pause_url", "resume_url"):
            check.pop(key, None)
        check["unique_key"] = "a6c7b0a8a66bed0df66abfdab3c77736861703ee"
    served["document"] = read_only
    hidden = await run("--url", url, "--api-key", API_KEY)
    assert hidden.code == 1, hidden
    assert hidden.err.count("no ping URL (a read-only API key hides it") == 3, hidden
    assert "nothing was written" in hidden.err, hidden
    assert await jobs_of(sessionmaker) == after
