"""The HTTP application through a real aiohttp server and a real database."""

from __future__ import annotations

import asyncio
import shutil
from datetime import timedelta

import pytest
from sqlalchemy.engine import make_url

from service.db.models import ScanRun
from service.runtime.app import create_app
from service.runtime.keys import coordinator_key, scan_scheduler_key, sessionmaker_key
from service.scanner.scanner import BackupScanner
from service.settings import load_settings

from tests.support import TcpProxy, add_job, make_file


@pytest.fixture
def settings(database_url):
    return load_settings(database_url=database_url, scanner_interval_minutes=60)


@pytest.fixture
async def app(make_app):
    """The scheduler off (tests drive scans themselves); conftest's `client` serves it on a
    real port."""
    return make_app(scanner_interval_minutes=60)


async def test_live_and_ready(client):
    response = await client.get("/health/live")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    response = await client.get("/health/ready")
    assert response.status == 200
    assert await response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "scheduler": "disabled", "scanner": "ok"},
    }


async def test_status_reports_counts_worst_and_last_scan(client, sessionmaker, clock, tmp_path):
    make_file(tmp_path / "ok" / "a.tar", 10, clock.now)
    make_file(tmp_path / "late" / "a.tar", 10, clock.now - timedelta(days=3))
    for name in ("ok", "late"):
        await add_job(
            sessionmaker, clock.now - timedelta(days=5), name=name,
            source={"type": "local", "path": str(tmp_path / name)},
        )  # fmt: skip
    await add_job(sessionmaker, clock.now, name="new")

    empty = await (await client.get("/api/v1/status")).json()
    assert empty["status"] == "ok" and empty["jobs"] == 3 and empty["last_scan"] is None
    assert empty["counts"] == {
        "ok": 0, "warning": 0, "critical": 0, "unknown": 0, "pending": 3, "paused": 0,
    }  # fmt: skip

    async with sessionmaker() as session:
        report = await BackupScanner(session, clock=clock, trigger="api").scan_all_jobs()
    body = await (await client.get("/api/v1/status")).json()
    assert body["status"] == "critical"
    assert body["counts"]["ok"] == 1 and body["counts"]["critical"] == 1
    assert body["counts"]["pending"] == 1
    assert body["last_scan"]["id"] == report.scan_id
    assert body["last_scan"]["trigger"] == "api"
    assert body["last_scan"]["artifacts_new"] == 2
    assert body["scheduler"] == {"running": False, "next_run_at": None}


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "not_found"),
        ("POST", "/health/live", 405, "method_not_allowed"),
        ("GET", "/api/v1/nothing", 404, "not_found"),
    ],
)
async def test_errors_are_json_envelopes(client, method, path, status, code):
    response = await client.request(method, path)
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["error"]["details"] == []


async def test_scheduler_runs_with_the_app_and_stops_before_the_engine(aiohttp_client, settings):
    app = create_app(settings)
    client = await aiohttp_client(app)
    scheduler = app[scan_scheduler_key]
    try:
        assert scheduler.running
        body = await (await client.get("/api/v1/status")).json()
        assert body["scheduler"]["running"] is True
        assert body["scheduler"]["next_run_at"] is not None
        ready = await client.get("/health/ready")
        assert (await ready.json())["checks"]["scheduler"] == "ok"
        # The app runs a first scan right away; it finishes and is visible.
        for _ in range(100):
            body = await (await client.get("/api/v1/status")).json()
            if body["last_scan"] and body["last_scan"]["status"] == "finished":
                break
            await asyncio.sleep(0.05)
        assert body["last_scan"]["trigger"] == "schedule"
        assert body["last_scan"]["status"] == "finished"
        # The scheduler dies while the app serves: not ready.
        await scheduler.stop(30)
        ready = await client.get("/health/ready")
        assert ready.status == 503
        assert (await ready.json())["checks"] == {
            "database": "ok", "scheduler": "not running", "scanner": "ok",
            "watch": "ok: no local source to watch",  # shown, never a 503 (test_watch.py)
        }  # fmt: skip
    finally:
        await client.close()
    assert not scheduler.running


async def test_two_apps_in_one_process_do_not_share_scan_state(
    aiohttp_client, settings, sqlite_template, clock, tmp_path
):
    """Each app has its own scheduler and scan coordinator (no process-global state): one app's
    scheduler is not the other's, both may scan at once, and stopping one app's scans leaves
    the other's scan running to its end."""
    other = tmp_path / "other.db"
    shutil.copy(sqlite_template, other)
    first = create_app(settings)  # with its scheduler
    second = create_app(
        load_settings(database_url=f"sqlite+aiosqlite:///{other}", scanner_interval_minutes=60),
        scheduler=False,
    )
    first_client = await aiohttp_client(first)
    second_client = await aiohttp_client(second)
    for index in range(150):
        make_file(tmp_path / f"j{index}" / "a.tar", 10, clock.now)
        await add_job(
            second[sessionmaker_key], clock.now, name=f"j{index:03d}",
            source={"type": "local", "path": str(tmp_path / f"j{index}")},
        )  # fmt: skip
    for _ in range(100):  # the first app's first scheduled scan, run at its start
        body = await (await first_client.get("/api/v1/status")).json()
        if body["last_scan"] and body["last_scan"]["status"] == "finished":
            break
        await asyncio.sleep(0.05)
    assert body["scheduler"]["running"] is True
    body = await (await second_client.get("/api/v1/status")).json()
    assert body["scheduler"] == {"running": False, "next_run_at": None}
    assert (await (await second_client.get("/health/ready")).json())["checks"]["scheduler"] == (
        "disabled"
    )

    # Started together: neither is "already running" because of the other.
    (_, first_scan), (second_id, second_scan) = await asyncio.gather(
        first[coordinator_key].start_full_scan(), second[coordinator_key].start_full_scan()
    )
    await first[coordinator_key].stop(30)  # the first app stops its scans
    assert first_scan.done()
    await asyncio.wait_for(second_scan, 60)
    async with second[sessionmaker_key]() as session:
        run = await session.get(ScanRun, second_id)
    assert run is not None
    assert (run.status, run.jobs_scanned) == ("finished", 150)  # not interrupted


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_database_going_away_and_coming_back(aiohttp_client, database_url, clock, tmp_path):
    """Through a TCP proxy we can cut: ready says 503, status answers 503 with the envelope,
    and once the database is back the next scan succeeds."""
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = load_settings(database_url=proxied)
    app = create_app(settings, scheduler=False)
    client = await aiohttp_client(app)
    sessionmaker = app[sessionmaker_key]
    make_file(tmp_path / "b" / "x.tar", 10, clock.now)
    await add_job(
        sessionmaker, clock.now, name="b", source={"type": "local", "path": str(tmp_path / "b")}
    )
    assert (await client.get("/health/ready")).status == 200

    await proxy.cut()
    ready = await client.get("/health/ready")
    assert ready.status == 503
    body = await ready.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "unavailable"  # details only in the log
    status = await client.get("/api/v1/status")
    assert status.status == 503
    assert (await status.json())["error"]["code"] == "database_unavailable"
    assert (await client.get("/health/live")).status == 200

    await proxy.restore()
    assert (await client.get("/health/ready")).status == 200
    async with sessionmaker() as session:
        report = await BackupScanner(session, clock=clock).scan_all_jobs()
    assert report.status == "finished"
    assert [job.status for job in report.jobs] == ["ok"]
    await proxy.cut()
