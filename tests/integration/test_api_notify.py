"""A job's notification settings and its notices, through the real API (both databases)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from service.config.jobsfile import apply_jobs
from service.db.models import Job, NotificationDelivery, NotificationEvent
from service.notify.config import parse_channels
from service.notify.dispatcher import Dispatcher, DispatchOptions
from service.notify.events import event_row
from service.runtime.keys import sessionmaker_key
from service.scanner.scanner import BackupScanner

from tests.support import Receiver, get_job

CHANNELS = {
    "defaults": ["ops"],
    "channels": {
        "ops": {"type": "webhook", "url": "http://127.0.0.1:9/hook"},
        "mail": {"type": "webhook", "url": "http://127.0.0.1:9/mail"},
    },
}

NOTIFY_DEFAULTS = {"channels": None, "renotify_every": None, "after": 1, "for": 0}


@pytest.fixture
async def app(make_app):
    return make_app(channels=parse_channels(CHANNELS, "test"))


async def test_notify_settings_are_declared_and_answered(client):
    response = await client.post(
        "/api/v1/jobs",
        json={"name": "db", "schedule": {"every": "1d"},
              "notify": {"channels": ["mail"], "renotify_every": "4h", "after": 2,
                         "for": "30m"}},
    )  # fmt: skip
    assert response.status == 201, await response.text()
    assert (await response.json())["notify"] == {
        "channels": ["mail"], "renotify_every": 14400, "after": 2, "for": 1800
    }  # fmt: skip
    # Seconds or a duration, like every duration; `after` is 1 to 100.
    patched = await client.patch("/api/v1/jobs/db", json={"notify": {"for": 90, "after": 100}})
    assert (await patched.json())["notify"] == {**NOTIFY_DEFAULTS, "after": 100, "for": 90}
    for wrong in ({"after": 0}, {"after": 101}, {"for": "soon"}, {"for_": 5}):
        refused = await client.patch("/api/v1/jobs/db", json={"notify": wrong})
        assert refused.status == 422, wrong

    plain = await client.post("/api/v1/jobs", json={"name": "web", "schedule": {"every": "1d"}})
    assert (await plain.json())["notify"] == NOTIFY_DEFAULTS

    silenced = await client.patch("/api/v1/jobs/web", json={"notify": {"channels": []}})
    assert (await silenced.json())["notify"] == {**NOTIFY_DEFAULTS, "channels": []}
    reset = await client.patch("/api/v1/jobs/web", json={"notify": None})
    assert (await reset.json())["notify"] == NOTIFY_DEFAULTS


@pytest.mark.parametrize("method", ["post", "patch"])
async def test_a_channel_not_configured_is_refused(client, method):
    await client.post("/api/v1/jobs", json={"name": "db", "schedule": {"every": "1d"}})
    body = {"notify": {"channels": ["ops", "pager"]}}
    if method == "post":
        response = await client.post(
            "/api/v1/jobs", json={"name": "web", "schedule": {"every": "1d"}, **body}
        )
    else:
        response = await client.patch("/api/v1/jobs/db", json=body)
    assert response.status == 422, await response.text()
    error = (await response.json())["error"]
    (detail,) = error["details"]
    assert detail["field"] == "notify.channels"
    assert detail["message"] == "no channel pager (configured channels: mail, ops)"


async def test_a_reminder_interval_set_while_critical_counts_from_then(client, app):
    await client.post("/api/v1/jobs", json={"name": "db", "schedule": {"every": "1d"}})
    sessions = app[sessionmaker_key]
    async with sessions() as session:  # really critical: a PATCH judges the job again
        job = await session.get(Job, (await get_job(sessions, "db")).id)
        job.created_at -= timedelta(days=3)
        await session.commit()
    async with sessions() as session:
        await BackupScanner(session).scan_all_jobs()
    assert (await get_job(sessions, "db")).status == "critical"
    response = await client.patch("/api/v1/jobs/db", json={"notify": {"renotify_every": "2h"}})
    assert response.status == 200
    job = await get_job(sessions, "db")
    assert job.renotify_at is not None
    assert abs(job.renotify_at - job.updated_at - timedelta(hours=2)) < timedelta(seconds=1)
    await client.patch("/api/v1/jobs/db", json={"notify": None})
    assert (await get_job(sessions, "db")).renotify_at is None


async def test_a_jobs_notices_with_their_deliveries(aiohttp_client, make_app, tmp_path):
    receiver = Receiver()
    await receiver.start()
    try:
        channels = parse_channels(
            {"defaults": ["ops", "mail"],
             "channels": {"ops": {"type": "webhook", "url": receiver.url},
                          "mail": {"type": "webhook", "url": receiver.url}}}, "test",
        )  # fmt: skip
        app = make_app(channels=channels)
        client = await aiohttp_client(app)
        source = {"type": "local", "path": str(tmp_path), "pattern": "*.dump"}
        created = await client.post(
            "/api/v1/jobs", json={"name": "db", "schedule": {"every": "1h"}, "source": source}
        )
        assert created.status == 201
        sessions = app[sessionmaker_key]
        async with sessions() as session:  # a job created a day ago, still without its file
            job = await session.get(Job, (await created.json())["id"])
            job.created_at -= timedelta(days=1)
            await session.commit()
        async with sessions() as session:
            await BackupScanner(session).scan_all_jobs()

        unrouted = await (await client.get("/api/v1/jobs/db/notifications")).json()
        (item,) = unrouted["items"]
        assert (item["kind"], item["status"], item["previous_status"]) == (
            "problem", "critical", None,
        )  # fmt: skip
        assert (item["routed"], item["deliveries"]) == (False, [])

        receiver.answers = [500]  # the first try fails, the retry is not due yet
        options = DispatchOptions(retry_seconds=600)
        await Dispatcher(sessions, channels, options).run_once()
        page = await (await client.get("/api/v1/jobs/db/notifications")).json()
        (item,) = page["items"]
        assert item["routed"] is True
        states = {d["channel"]: (d["state"], d["attempts"]) for d in item["deliveries"]}
        assert states in (
            {"mail": ("pending", 1), "ops": ("delivered", 1)},
            {"mail": ("delivered", 1), "ops": ("pending", 1)},
        )
        failed = next(d for d in item["deliveries"] if d["state"] == "pending")
        assert "HTTP 500" in failed["last_error"]
        assert item["event_id"] == receiver.delivered[0]["event_id"]

        page = await client.get("/jobs/db")
        html = await page.text()
        assert page.status == 200
        assert "This job tells ops, mail (the default channels)." in html
        assert html.count("✔ delivered") == 1 and html.count("… pending") == 1

        missing = await client.get("/api/v1/jobs/nope/notifications")
        assert missing.status == 404
    finally:
        await receiver.stop()


@pytest.mark.parametrize("how", ["api", "prune"])
async def test_deleting_a_job_cancels_its_undelivered_notices(
    aiohttp_client, make_app, tmp_path, caplog, how
):
    """A deleted job's notices are never sent (their page is a 404): the one being retried and
    the one not routed yet are both kept as cancelled, in the log and the metrics."""
    caplog.set_level(logging.INFO)
    receiver = Receiver()
    await receiver.start()
    try:
        channels = parse_channels(
            {"defaults": ["ops"], "channels": {"ops": {"type": "webhook", "url": receiver.url}}},
            "test",
        )
        app = make_app(channels=channels)
        client = await aiohttp_client(app)
        source = {"type": "local", "path": str(tmp_path), "pattern": "*.dump"}
        created = await client.post(
            "/api/v1/jobs", json={"name": "db", "schedule": {"every": "1h"}, "source": source}
        )
        assert created.status == 201
        sessions = app[sessionmaker_key]
        async with sessions() as session:  # a job created a day ago, still without its file
            job = await session.get(Job, (await created.json())["id"])
            job.created_at -= timedelta(days=1)
            await session.commit()
        async with sessions() as session:
            await BackupScanner(session).scan_all_jobs()
        receiver.answers = [500]  # the alert fails once: it waits for its retry (due at once)
        dispatcher = Dispatcher(sessions, channels, DispatchOptions(retry_seconds=0))
        assert await dispatcher.run_once() == 1
        async with sessions() as session:  # and a reminder written just before the deletion
            job = await session.get(Job, (await created.json())["id"])
            reminder = event_row(
                job_id=job.id, job_name="db", kind="reminder", status="critical",
                previous_status="critical", reasons=job.reasons, latest_artifact=None,
                channels=None, now=datetime.now(UTC),
            )  # fmt: skip
            await session.execute(insert(NotificationEvent), [reminder])
            await session.commit()

        if how == "api":
            assert (await client.delete("/api/v1/jobs/db")).status == 204
        else:
            async with sessions() as session:
                result = await apply_jobs(session, [], prune=True)
            assert result.deleted == ["db"]
        for _ in range(5):  # the retry, and the reminder, would be due now
            await dispatcher.run_once()

        assert len(receiver.arrived) == 1 and receiver.delivered == []
        async with sessions() as session:
            rows = (await session.execute(select(NotificationDelivery))).scalars().all()
        assert sorted((row.state, row.last_error) for row in rows) == [
            ("cancelled", "the job was deleted"),
            ("cancelled", "the job was deleted"),
        ]
        assert "1 notices cancelled: the job was deleted" in caplog.text
        metrics = await (await client.get("/metrics")).text()
        assert 'backup_notification_deliveries_stored{state="cancelled"} 2.0' in metrics
        assert 'backup_notification_deliveries_stored{state="pending"} 0.0' in metrics
    finally:
        await receiver.stop()
