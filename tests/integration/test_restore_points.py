"""Retention compliance through a real server and database (PostgreSQL and SQLite): the
declaration carried by POST, PATCH and GET, the retention_gap of a scan, and
GET /api/v1/jobs/{job}/restore-points."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import update

from service.db.models import Job
from service.runtime.keys import sessionmaker_key

from tests.support import make_file


@pytest.fixture
def backups(tmp_path):
    root = tmp_path / "backups"
    root.mkdir()
    return root


@pytest.fixture
async def app(make_app, backups):
    return make_app(scan_roots=str(backups))


def month_before(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, 10)


def label(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


async def declare(client, backups, **fields):
    body = {
        "name": "db-nightly",
        "source": {"type": "local", "path": str(backups), "pattern": "*.sql.gz"},
        "schedule": {"cron": "0 2 * * *"},
        "retention": {"monthly": 3},
        **fields,
    }
    response = await client.post("/api/v1/jobs", json=body)
    assert response.status == 201, await response.text()
    return await response.json()


async def backdate(app, name: str, days: int) -> None:
    async with app[sessionmaker_key]() as session:
        created = datetime.now(UTC) - timedelta(days=days)
        await session.execute(update(Job).where(Job.name == name).values(created_at=created))
        await session.commit()


async def test_the_declaration_is_carried_by_post_patch_and_get(client, backups):
    job = await declare(client, backups, retention={"daily": 7, "strict": True})
    assert job["retention"] == {"daily": 7, "weekly": 0, "monthly": 0, "yearly": 0, "strict": True}
    assert job["report"] is None
    response = await client.patch("/api/v1/jobs/db-nightly", json={"retention": {"monthly": 12}})
    assert response.status == 200, await response.text()
    job = await (await client.get("/api/v1/jobs/db-nightly")).json()
    assert job["retention"]["monthly"] == 12 and job["retention"]["daily"] == 0
    # No channel is configured here: a report naming one is refused, naming the field.
    response = await client.patch(
        "/api/v1/jobs/db-nightly", json={"report": {"channel": "ops-mail", "every": "7d"}}
    )
    assert response.status == 422
    [detail] = (await response.json())["error"]["details"]
    assert detail["field"] == "report.channel"
    response = await client.patch("/api/v1/jobs/db-nightly", json={"retention": None})
    assert (await response.json())["retention"] is None


async def test_a_missing_month_is_a_retention_gap_and_restore_points_show_the_kept_ones(
    app, client, backups
):
    now = datetime.now(UTC)
    today = now.date()
    # This month: a backup 10 minutes ago; last month: one on the 10th; the month before: none.
    newest = make_file(backups / "db-newest.sql.gz", 2000, now - timedelta(minutes=10))
    kept = month_before(today, 1)
    make_file(backups / "db-kept.sql.gz", 1500, datetime(kept.year, kept.month, 10, 3, tzinfo=UTC))
    older = month_before(today, 3)  # outside the 3 monthly slots
    make_file(backups / "db-old.sql.gz", 1000, datetime(older.year, older.month, 10, tzinfo=UTC))
    await declare(client, backups)
    await backdate(app, "db-nightly", 400)

    scanned = await (await client.post("/api/v1/jobs/db-nightly/scan")).json()
    assert scanned["status"] == "warning", scanned
    gone = label(month_before(today, 2))
    assert scanned["reasons"] == [
        {
            "code": "retention_gap",
            "severity": "warning",
            "message": f"no backup kept for {gone} (monthly: 3 kept)",
        }
    ]

    response = await client.get("/api/v1/jobs/db-nightly/restore-points?from=2000-01-01T00:00:00Z")
    assert response.status == 200, await response.text()
    points = await response.json()
    assert points["job"] == "db-nightly" and points["timezone"] == "UTC"
    assert points["from"] == "2000-01-01T00:00:00Z" and not points["truncated"]
    assert [(p["path"], p["size"], p["slots"]) for p in points["items"]] == [
        (newest.name, 2000, [label(today)]),
        ("db-kept.sql.gz", 1500, [label(kept)]),
        ("db-old.sql.gz", 1000, []),
    ]
    assert [(s["label"], s["state"]) for s in points["slots"]] == [
        (label(today), "kept"), (label(kept), "kept"), (gone, "missing"),
    ]  # fmt: skip
    assert points["retention"]["monthly"] == 3

    # A range: only the backups with a time in [from, to).
    start = datetime(kept.year, kept.month, 1, tzinfo=UTC).isoformat()
    end = datetime(kept.year, kept.month, 11, tzinfo=UTC).isoformat()
    response = await client.get(
        "/api/v1/jobs/db-nightly/restore-points", params={"from": start, "to": end, "limit": 5}
    )
    points = await response.json()
    assert [p["path"] for p in points["items"]] == ["db-kept.sql.gz"]
    # `limit` bounds the answer, which says so.
    response = await client.get(
        "/api/v1/jobs/db-nightly/restore-points",
        params={"from": "2000-01-01T00:00:00+02:00", "limit": 1},
    )
    points = await response.json()
    assert len(points["items"]) == 1 and points["truncated"]

    # Keeping the month makes the job ok again.
    gap = month_before(today, 2)
    make_file(backups / "db-gap.sql.gz", 1500, datetime(gap.year, gap.month, 10, 3, tzinfo=UTC))
    scanned = await (await client.post("/api/v1/jobs/db-nightly/scan")).json()
    assert scanned["status"] == "ok", scanned


async def test_a_young_job_is_not_blamed_for_months_before_it(client, backups):
    make_file(backups / "db.sql.gz", 2000, datetime.now(UTC) - timedelta(minutes=10))
    await declare(client, backups, retention={"monthly": 12, "strict": True})
    scanned = await (await client.post("/api/v1/jobs/db-nightly/scan")).json()
    assert scanned["status"] == "ok", scanned
    points = await (await client.get("/api/v1/jobs/db-nightly/restore-points")).json()
    states = [s["state"] for s in points["slots"]]
    assert states[0] == "kept" and set(states[1:]) == {"not_expected"}
    assert points["slots"][1]["why"] == "the job was declared after it began"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=2026-01-01T00:00:00", "from"),  # no offset: which zone is meant?
        ("to=yesterday", "to"),
        ("limit=0", "limit"),
        ("since=2026-01-01T00:00:00Z", "since"),
    ],
)
async def test_bad_ranges_are_refused(client, backups, query, field):
    await declare(client, backups)
    response = await client.get(f"/api/v1/jobs/db-nightly/restore-points?{query}")
    assert response.status == 422, await response.text()
    assert field in [d["field"] for d in (await response.json())["error"]["details"]]


async def test_restore_points_of_an_unknown_job_is_404(client):
    response = await client.get("/api/v1/jobs/nope/restore-points")
    assert response.status == 404
