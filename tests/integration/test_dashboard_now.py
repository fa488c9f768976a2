"""The dashboard never shows a frozen age as the present: a job's stored reasons ("newest
backup … is 61 min old") are shown with the time they were judged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.http.web.words import as_of
from service.scanner.scanner import BackupScanner

from tests.support import add_job, make_file


async def test_the_reasons_say_when_they_were_judged(
    aiohttp_client, make_app, sessionmaker, clock, tmp_path
):
    clock.advance(minutes=-14)  # judged 14 minutes ago; no scan since
    judged = clock()
    await add_job(
        sessionmaker, judged - timedelta(days=3), name="db",
        source={"type": "local", "path": str(tmp_path), "pattern": "*.dump"},
        schedule={"every": "1h"}, grace=0,
    )  # fmt: skip
    make_file(tmp_path / "a.dump", 5000, judged - timedelta(hours=1, seconds=83))
    async with sessionmaker() as session:
        await BackupScanner(session, clock=clock).scan_all_jobs()
    client = await aiohttp_client(make_app())

    page = await (await client.get("/jobs/db")).text()
    rendered = datetime.now(UTC)  # judged yesterday when this is before 00:14: then with its date
    now_card = page[page.index('id="reasons"') : page.index('id="chart"')]
    assert f"As judged at {as_of(judged, rendered)}" in now_card
    assert as_of(judged, rendered).endswith(f"{judged:%H:%M} UTC")
    assert "(14 min ago):" in now_card
    assert "newest backup a.dump is 61 min old" in now_card

    index = await (await client.get("/")).text()
    assert "newest backup a.dump is 61 min old" in index
    assert f"{judged:%H:%M} UTC)" in index


async def test_a_backup_being_written_is_shown_so(
    aiohttp_client, make_app, sessionmaker, clock, tmp_path
):
    await add_job(
        sessionmaker, clock.now - timedelta(days=3), name="db",
        source={"type": "local", "path": str(tmp_path), "pattern": "*.dump"},
        rules={"min_size": "1MiB"},
    )  # fmt: skip
    make_file(tmp_path / "a.dump", 5 * 1024 * 1024, clock.now - timedelta(days=1))
    make_file(tmp_path / "b.dump", 5000, clock.now - timedelta(seconds=3))
    async with sessionmaker() as session:
        await BackupScanner(session, clock=clock).scan_all_jobs()
    client = await aiohttp_client(make_app())

    page = await (await client.get("/jobs/db")).text()
    assert "b.dump is being written (4.9 KiB so far)" in page
    assert "being written" in await (await client.get("/")).text()
    answer = await (await client.get("/api/v1/jobs/db")).json()
    assert answer["status"] == "ok"
    assert answer["latest_artifact"]["being_written"] is True
    assert answer["source"]["settle"] == 120
