"""The jobs API through a real aiohttp server, on PostgreSQL and on SQLite."""

from __future__ import annotations

import asyncio
import io
import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from service.db.models import Artifact, Job, JobCheck, ScanRun
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


def declaration(name="db-nightly", **fields):
    body = {"name": name, "schedule": {"every": "1d"}}
    body.update(fields)
    return body


async def create(client, body, status=201):
    response = await client.post("/api/v1/jobs", json=body)
    assert response.status == status, await response.text()
    return await response.json()


async def expect_error(response, status, code, field=None):
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert error["code"] == code
    assert error["message"]
    if field is not None:
        assert field in [detail["field"] for detail in error["details"]], error
        assert field in error["message"]
    return error


async def count_rows(app, model, job_id):
    async with app[sessionmaker_key]() as session:
        return await session.scalar(
            select(func.count()).select_from(model).where(model.job_id == job_id)
        )


# --- create, read, change, delete -------------------------------------------------------------


async def test_create_returns_the_whole_job_with_integers(client, backups):
    body = declaration(
        tags=["db", "prod"],
        source={"type": "local", "path": str(backups / "db"), "pattern": "*.sql.gz"},
        schedule={"cron": "0 2 * * *", "timezone": "Europe/Paris"},
        grace="1h30m",
        rules={"min_size": "1MiB", "min_count": 7, "max_size_drop": "50%"},
    )
    response = await client.post("/api/v1/jobs", json=body)
    assert response.status == 201
    assert response.headers["Location"] == "/api/v1/jobs/db-nightly"
    job = await response.json()
    assert isinstance(job["id"], int)
    assert job["grace"] == 5400
    assert job["rules"] == {
        "min_size": 1048576, "max_size": None, "min_count": 7, "max_size_drop": 50.0,
        "max_duration": None, "min_duration": None,
    }  # fmt: skip
    assert job["schedule"] == {"every": None, "cron": "0 2 * * *", "timezone": "Europe/Paris"}
    assert job["source"]["path"] == str(backups / "db")
    assert job["status"] == "pending"
    assert job["reasons"] == [] and job["latest_artifact"] is None and job["artifact_count"] == 0
    for key in ("created_at", "updated_at", "next_check_at"):
        assert datetime.fromisoformat(job[key]).tzinfo is not None
    assert job["checked_at"] is None and job["status_changed_at"] is None

    by_id = await (await client.get(f"/api/v1/jobs/{job['id']}")).json()
    by_name = await (await client.get("/api/v1/jobs/db-nightly")).json()
    assert by_id == by_name == job


async def test_duplicate_name_is_a_conflict(client):
    await create(client, declaration())
    response = await client.post("/api/v1/jobs", json=declaration())
    await expect_error(response, 409, "conflict", field="name")
    listing = await (await client.get("/api/v1/jobs")).json()
    assert listing["total"] == 1


async def test_patch_changes_only_the_fields_given(client):
    job = await create(client, declaration(description="nightly dump", tags=["db"]))
    response = await client.patch(
        "/api/v1/jobs/db-nightly", json={"grace": "2h", "rules": {"min_size": "10MB"}}
    )
    assert response.status == 200, await response.text()
    changed = await response.json()
    assert changed["grace"] == 7200
    assert changed["rules"]["min_size"] == 10_000_000
    assert changed["description"] == "nightly dump" and changed["tags"] == ["db"]
    assert changed["updated_at"] >= job["updated_at"]
    # null brings back the default; a rename keeps the id.
    response = await client.patch(
        f"/api/v1/jobs/{job['id']}", json={"grace": None, "name": "db-renamed"}
    )
    renamed = await response.json()
    assert renamed["grace"] == 3600 and renamed["name"] == "db-renamed"
    assert renamed["id"] == job["id"]
    assert (await client.get("/api/v1/jobs/db-nightly")).status == 404


async def test_rename_onto_another_job_is_a_conflict(client):
    await create(client, declaration("a"))
    await create(client, declaration("b"))
    response = await client.patch("/api/v1/jobs/a", json={"name": "b"})
    await expect_error(response, 409, "conflict", field="name")
    assert (await client.get("/api/v1/jobs/a")).status == 200


async def test_delete_removes_the_job_its_artifacts_and_history(client, app, backups, clock):
    for index in range(3):
        make_file(backups / "db" / f"d{index}.sql", 100, clock.now - timedelta(hours=index))
    job = await create(client, declaration(source={"type": "local", "path": str(backups / "db")}))
    scanned = await (await client.post("/api/v1/jobs/db-nightly/scan")).json()
    assert scanned["status"] == "ok" and scanned["artifact_count"] == 3
    assert await count_rows(app, Artifact, job["id"]) == 3
    assert await count_rows(app, JobCheck, job["id"]) == 1

    response = await client.delete("/api/v1/jobs/db-nightly")
    assert response.status == 204
    assert await response.read() == b""
    assert await count_rows(app, Artifact, job["id"]) == 0
    assert await count_rows(app, JobCheck, job["id"]) == 0
    await expect_error(await client.get(f"/api/v1/jobs/{job['id']}"), 404, "not_found")
    await expect_error(await client.delete("/api/v1/jobs/db-nightly"), 404, "not_found")


@pytest.mark.parametrize("ref", ["nope", "0", "99999999999999999999", "12345"])
async def test_unknown_job_is_404(client, ref):
    calls = [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/scan"), ("POST", "/pause"),
             ("GET", "/artifacts"), ("GET", "/history")]  # fmt: skip
    for method, suffix in calls:
        kwargs = {"json": {"description": "x"}} if method == "PATCH" else {}
        response = await client.request(method, f"/api/v1/jobs/{ref}{suffix}", **kwargs)
        await expect_error(response, 404, "not_found")


# --- listing and filters --------------------------------------------------------------------


async def test_list_filters_by_status_tag_and_text_with_total(client, app):
    for index in range(12):
        tags = ["prod"] if index % 2 else ["dev", "db_x"]
        await create(client, declaration(f"job-{index:02d}", tags=tags, description=f"n{index}"))
    await create(client, declaration("special_one", description="Uses 100% of the disk"))
    async with app[sessionmaker_key]() as session:
        await session.execute(text("UPDATE jobs SET status = 'critical' WHERE name LIKE 'job-0%'"))
        await session.commit()

    page = await (await client.get("/api/v1/jobs?limit=5&offset=5")).json()
    assert page["total"] == 13
    assert [item["name"] for item in page["items"]] == [f"job-{i:02d}" for i in range(5, 10)]

    critical = await (await client.get("/api/v1/jobs?status=critical")).json()
    assert critical["total"] == 10
    assert {item["status"] for item in critical["items"]} == {"critical"}

    prod = await (await client.get("/api/v1/jobs?tag=prod&limit=1")).json()
    assert prod["total"] == 6 and len(prod["items"]) == 1
    # "db_x" must not match a tag like "dbax" ('_' is not a wildcard), nor "db" a prefix.
    assert (await (await client.get("/api/v1/jobs?tag=db_x")).json())["total"] == 6
    assert (await (await client.get("/api/v1/jobs?tag=db")).json())["total"] == 0

    found = await (await client.get("/api/v1/jobs?q=JOB-1")).json()
    assert [item["name"] for item in found["items"]] == ["job-10", "job-11"]
    by_description = await (await client.get("/api/v1/jobs?q=100%25")).json()
    assert [item["name"] for item in by_description["items"]] == ["special_one"]
    underscore = await (await client.get("/api/v1/jobs?q=l_o")).json()
    assert [item["name"] for item in underscore["items"]] == ["special_one"]
    assert (await (await client.get("/api/v1/jobs?q=l%25o")).json())["total"] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=10000", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("status=fine", "status"),
        ("tag=no%20spaces", "tag"),
        ("stauts=ok", "stauts"),
    ],
)
async def test_bad_query_parameters_are_named(client, query, field):
    await expect_error(await client.get(f"/api/v1/jobs?{query}"), 422, "validation_error", field)


async def test_limit_bounds(client):
    await create(client, declaration())
    assert (await client.get("/api/v1/jobs?limit=1")).status == 200
    assert (await client.get("/api/v1/jobs?limit=1000")).status == 200
    await expect_error(await client.get("/api/v1/jobs?limit=1001"), 422, "validation_error")


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"name": 5, "schedule": {"every": 60}}, "name", id="wrong-type"),
        pytest.param(declaration(colour="red"), "colour", id="unknown-field"),
        pytest.param(declaration("Bad Name"), "name", id="not-a-slug"),
        pytest.param(declaration("1job"), "name", id="starts-with-digit"),
        pytest.param(declaration(grace=-5), "grace", id="negative-grace"),
        pytest.param(declaration(grace="-1h"), "grace", id="negative-grace-text"),
        pytest.param(declaration(schedule={"every": "-1d"}), "schedule.every", id="negative-every"),
        pytest.param(
            declaration(rules={"min_size": "2MiB", "max_size": "1MiB"}), "rules", id="min>max"
        ),
        pytest.param(declaration(schedule={"cron": "0 0 30 2 *"}), "schedule", id="never-fires"),
        pytest.param(declaration(schedule={"cron": "61 * * * *"}), "schedule", id="bad-cron"),
        pytest.param(
            declaration(schedule={"cron": "0 2 * * *", "timezone": "Mars/Olympus"}),
            "schedule.timezone",
            id="unknown-zone",
        ),
        pytest.param(declaration(schedule={}), "schedule", id="no-schedule-kind"),
        pytest.param({"schedule": {"every": 60}}, "name", id="missing-name"),
        pytest.param(declaration(rules={"max_size_drop": 150}), "rules.max_size_drop", id="pct"),
        pytest.param(declaration(paused="maybe"), "paused", id="paused-not-bool"),
    ],
)
async def test_invalid_job_is_422_naming_the_field(client, body, field):
    await expect_error(await client.post("/api/v1/jobs", json=body), 422, "validation_error", field)
    assert (await (await client.get("/api/v1/jobs")).json())["total"] == 0


async def test_local_path_must_stay_inside_scan_roots(client, backups, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (backups / "escape").symlink_to(outside)
    for path in [str(outside), f"{backups}/../elsewhere", str(backups / "escape"), "relative/x"]:
        body = declaration(source={"type": "local", "path": path})
        error = await expect_error(
            await client.post("/api/v1/jobs", json=body), 422, "validation_error", "source.path"
        )
        assert "SCAN_ROOTS" in json.dumps(error) or "absolute" in json.dumps(error)
    await create(client, declaration(source={"type": "local", "path": str(backups / "db")}))


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "bad_request"),
        (b'{"name": "x", "schedule": {"every": NaN}}', "application/json", 400, "bad_request"),
        (b"\xff\xfe", "application/json", 400, "bad_request"),
        (b"[1, 2]", "application/json", 422, "validation_error"),
        (b'"job"', "application/json", 422, "validation_error"),
        (b"name=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "bad_request"),
    ],
)
async def test_malformed_bodies(client, data, content_type, status, code):
    response = await client.post("/api/v1/jobs", data=data, headers={"Content-Type": content_type})
    await expect_error(response, status, code)


async def test_body_over_one_mebibyte_is_413(client):
    body = json.dumps(declaration(description="x" * (1024 * 1024 + 10))).encode()
    response = await client.post(
        "/api/v1/jobs", data=io.BytesIO(body), headers={"Content-Type": "application/json"}
    )
    await expect_error(response, 413, "payload_too_large")


async def test_patch_that_would_make_the_job_invalid_writes_nothing(client, backups):
    await create(client, declaration(rules={"max_size": "1MiB"}, description="before"))
    before = await (await client.get("/api/v1/jobs/db-nightly")).json()
    attempts = [
        ({"description": "after", "rules": {"min_size": "2MiB", "max_size": "1MiB"}}, "rules"),
        ({"description": "after", "schedule": {"cron": "0 2 * * *", "every": 60}}, "schedule"),
        ({"description": "after", "schedule": None}, "schedule"),
        ({"description": "after", "status": "ok"}, "status"),
        ({"description": "after", "source": {"type": "local", "path": "/etc"}}, "source.path"),
        ({"description": "after", "name": "Not A Slug"}, "name"),
        ({"description": "after", "grace": "soon"}, "grace"),
    ]
    for change, field in attempts:
        response = await client.patch("/api/v1/jobs/db-nightly", json=change)
        await expect_error(response, 422, "validation_error", field)
    assert await (await client.get("/api/v1/jobs/db-nightly")).json() == before


async def test_a_patch_answers_the_job_judged_under_its_new_declaration(client, backups):
    """The answer to a PATCH (and the dashboard after it) shows the status the new declaration
    earns, not the old one's: no waiting for the next scan."""
    make_file(backups / "db" / "db-1.dump", 10_000, datetime.now(UTC) - timedelta(hours=1))
    source = {"type": "local", "path": str(backups / "db"), "pattern": "*.dump"}
    await create(client, declaration(source=source))
    assert (await (await client.post("/api/v1/jobs/db-nightly/scan")).json())["status"] == "ok"

    async def patch(change):
        response = await client.patch("/api/v1/jobs/db-nightly", json=change)
        assert response.status == 200, await response.text()
        job = await response.json()
        return job["status"], sorted(reason["code"] for reason in job["reasons"])

    assert await patch({"rules": {"min_size": "1MiB"}}) == ("critical", ["too_small"])
    page = await (await client.get("/jobs/db-nightly")).text()
    assert "<title>db-nightly: critical" in page
    assert await patch({"rules": None}) == ("ok", [])
    assert await patch({"paused": True}) == ("paused", [])
    assert await patch({"paused": False}) == ("ok", [])
    # A new pattern is listed at once: its file is judged (and a new job's grace applies).
    make_file(backups / "db" / "db-1.sql", 10, datetime.now(UTC) - timedelta(hours=1))
    changed = {"source": {**source, "pattern": "*.sql"}, "rules": {"min_size": 100}}
    assert await patch(changed) == ("critical", ["too_small"])
    job = await (await client.get("/api/v1/jobs/db-nightly")).json()
    assert job["latest_artifact"]["path"] == "db-1.sql" and job["artifact_count"] == 1


async def test_concurrent_patches_lose_no_update(client):
    """Every PATCH of a different field lands: the row lock queues them; none overwrites
    another with a stale copy of the declaration."""
    await create(client, declaration())
    changes = [{"description": "described"}, {"grace": 120}, {"tags": ["t1"]},
               {"rules": {"min_count": 3}}, {"schedule": {"every": "2d"}},
               {"paused": True}]  # fmt: skip
    for _ in range(3):
        responses = await asyncio.gather(
            *(client.patch("/api/v1/jobs/db-nightly", json=change) for change in changes)
        )
        assert [response.status for response in responses] == [200] * len(changes)
        job = await (await client.get("/api/v1/jobs/db-nightly")).json()
        assert job["description"] == "described"
        assert job["grace"] == 120
        assert job["tags"] == ["t1"]
        assert job["rules"]["min_count"] == 3
        assert job["schedule"]["every"] == 172800
        assert job["paused"] is True
        reset = {"description": "", "grace": None, "tags": None, "rules": None,
                 "schedule": {"every": 86400}, "paused": False}  # fmt: skip
        assert (await client.patch("/api/v1/jobs/db-nightly", json=reset)).status == 200


async def test_concurrent_creates_of_one_name_make_one_job(client):
    responses = await asyncio.gather(
        *(client.post("/api/v1/jobs", json=declaration(description=str(i))) for i in range(8))
    )
    statuses = sorted(response.status for response in responses)
    assert statuses == [201] + [409] * 7
    assert (await (await client.get("/api/v1/jobs")).json())["total"] == 1


# --- scan, pause, resume, artifacts, history --------------------------------------------------


async def test_scan_pause_resume_and_history(client, backups, clock):
    make_file(backups / "db" / "d.sql", 100, clock.now - timedelta(minutes=5))
    await create(client, declaration(source={"type": "local", "path": str(backups / "db")}))
    scanned = await (await client.post("/api/v1/jobs/db-nightly/scan")).json()
    assert scanned["status"] == "ok"
    assert scanned["latest_artifact"]["path"] == "d.sql"
    assert scanned["checked_at"] is not None

    paused = await (await client.post("/api/v1/jobs/db-nightly/pause")).json()
    assert paused["paused"] is True and paused["status"] == "paused"
    resumed = await (await client.post("/api/v1/jobs/db-nightly/resume")).json()
    assert resumed["paused"] is False and resumed["status"] == "ok"

    history = await (await client.get("/api/v1/jobs/db-nightly/history")).json()
    assert [(h["previous_status"], h["status"]) for h in history["items"]] == [
        ("paused", "ok"), ("ok", "paused"), ("pending", "ok"),
    ]  # fmt: skip
    assert history["next_before"] is None
    first = await (await client.get("/api/v1/jobs/db-nightly/history?limit=2")).json()
    assert len(first["items"]) == 2 and first["next_before"] == first["items"][-1]["id"]
    rest = await (
        await client.get(f"/api/v1/jobs/db-nightly/history?limit=2&before={first['next_before']}")
    ).json()
    assert [h["status"] for h in rest["items"]] == ["ok"] and rest["next_before"] is None


async def test_artifacts_newest_first_with_keyset_pages_and_gone_ones(client, backups, clock):
    folder = backups / "files"
    for index in range(25):
        # Some share an mtime: the id breaks the tie, no artifact is skipped or repeated.
        make_file(folder / f"f{index:02d}.tar", index + 1, clock.now - timedelta(hours=index // 2))
    await create(client, declaration(source={"type": "local", "path": str(folder)}))
    await client.post("/api/v1/jobs/db-nightly/scan")

    seen, before = [], None
    while True:
        query = "limit=10" + (f"&before={before}" if before else "")
        page = await (await client.get(f"/api/v1/jobs/db-nightly/artifacts?{query}")).json()
        seen += page["items"]
        before = page["next_before"]
        if before is None:
            break
    assert len(seen) == 25 and len({item["id"] for item in seen}) == 25
    keys = [(item["mtime"], item["id"]) for item in seen]
    assert keys == sorted(keys, reverse=True)
    assert all(item["gone_since"] is None for item in seen)

    os.remove(folder / "f00.tar")
    await client.post("/api/v1/jobs/db-nightly/scan")
    present = await (await client.get("/api/v1/jobs/db-nightly/artifacts?limit=100")).json()
    assert len(present["items"]) == 24
    everything = await (
        await client.get("/api/v1/jobs/db-nightly/artifacts?limit=100&include_gone=true")
    ).json()
    gone = [item for item in everything["items"] if item["gone_since"] is not None]
    assert [item["path"] for item in gone] == ["f00.tar"]


async def test_scan_of_a_job_whose_source_is_missing_reports_unknown(client, backups):
    await create(client, declaration(source={"type": "local", "path": str(backups / "absent")}))
    job = await (await client.post("/api/v1/jobs/db-nightly/scan")).json()
    assert job["status"] == "unknown"
    assert job["reasons"][0]["code"] == "source_error"


# --- scans -------------------------------------------------------------------------------------


async def test_full_scan_wait_and_list(client, backups, clock):
    make_file(backups / "db" / "d.sql", 100, clock.now)
    await create(client, declaration(source={"type": "local", "path": str(backups / "db")}))
    response = await client.post("/api/v1/scans?wait=true")
    assert response.status == 200
    scan = await response.json()
    assert scan["status"] == "finished" and scan["trigger"] == "api"
    assert scan["jobs_scanned"] == 1 and scan["artifacts_new"] == 1
    assert response.headers["Location"] == f"/api/v1/scans/{scan['id']}"
    assert await (await client.get(f"/api/v1/scans/{scan['id']}")).json() == scan
    listing = await (await client.get("/api/v1/scans")).json()
    assert [item["id"] for item in listing["items"]] == [scan["id"]]
    await expect_error(await client.get("/api/v1/scans/999999"), 404, "not_found")
    await expect_error(await client.get("/api/v1/scans/99999999999999999999"), 404, "not_found")
    await expect_error(await client.get("/api/v1/scans/abc"), 404, "not_found")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_second_full_scan_while_one_runs_is_409_with_its_id(client, app, backups):
    """The jobs table is locked from another connection, so the first scan waits, recorded as
    running; the second request is refused with the first one's id."""
    await create(client, declaration(source={"type": "local", "path": str(backups)}))
    engine = app[sessionmaker_key].kw["bind"]
    async with engine.connect() as blocker:
        await blocker.execute(text("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"))
        response = await client.post("/api/v1/scans")
        assert response.status == 202
        running = await response.json()
        assert running["status"] == "running"
        second = await client.post("/api/v1/scans?wait=true")
        error = await expect_error(second, 409, "conflict")
        assert error["details"] == [{"scan_id": running["id"]}]
        assert str(running["id"]) in error["message"]
        await blocker.rollback()
    for _ in range(200):
        scan = await (await client.get(f"/api/v1/scans/{running['id']}")).json()
        if scan["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert scan["status"] == "finished"
    again = await client.post("/api/v1/scans?wait=true")
    assert again.status == 200


async def test_scan_runs_are_paged_newest_first(client, app):
    async with app[sessionmaker_key]() as session:
        start = datetime.now(UTC)
        session.add_all(
            ScanRun(
                trigger="cli",
                status="finished",
                started_at=start + timedelta(seconds=i),
                jobs_scanned=0,
                artifacts_new=0,
                artifacts_changed=0,
                artifacts_gone=0,
                errors=0,
                error_details=[],
            )
            for i in range(7)
        )
        await session.commit()
    first = await (await client.get("/api/v1/scans?limit=5")).json()
    second = await (await client.get(f"/api/v1/scans?limit=5&before={first['next_before']}")).json()
    ids = [item["id"] for item in first["items"] + second["items"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 7
    assert second["next_before"] is None


async def test_job_rows_are_untouched_by_reads(client, app):
    await create(client, declaration())
    async with app[sessionmaker_key]() as session:
        before = await session.scalar(select(Job.updated_at))
    for path in ("/api/v1/jobs", "/api/v1/jobs/db-nightly", "/api/v1/jobs/db-nightly/history"):
        assert (await client.get(path)).status == 200
    async with app[sessionmaker_key]() as session:
        assert (await session.scalar(select(Job.updated_at))) == before


# --- found by schemathesis and by hand: each was a 500 or an answer the document did not allow --


async def test_values_the_database_cannot_hold_are_refused_not_500(client):
    cases = [
        (declaration(grace=2**31), "grace"),  # INTEGER column
        (declaration(schedule={"every": 10**12}), "schedule.every"),  # datetime overflow
        (declaration(description="a\u0000b"), "description"),  # PostgreSQL text has no NUL
        (declaration(rules={"min_count": 2**40}), "rules.min_count"),
        (declaration(rules={"min_size": 2**70}), "rules.min_size"),
    ]
    for body, field in cases:
        response = await client.post("/api/v1/jobs", json=body)
        await expect_error(response, 422, "validation_error", field)
    surrogate = b'{"name": "x", "schedule": {"every": 60}, "description": "\\udcff"}'
    response = await client.post(
        "/api/v1/jobs", data=surrogate, headers={"Content-Type": "application/json"}
    )
    error = await expect_error(response, 400, "bad_request")
    assert "surrogate" in error["message"]
    assert (await (await client.get("/api/v1/jobs")).json())["total"] == 0


async def test_odd_references_and_cursors_are_not_500(client):
    await expect_error(await client.get("/api/v1/jobs/a%00b"), 404, "not_found")
    await expect_error(await client.get("/api/v1/jobs?q=%00"), 422, "validation_error", "q")
    response = await client.get("/api/v1/scans?before=4611686018427387903")
    assert response.status == 200
    assert (await client.get("/api/v1/jobs/x/artifacts?before=4611686018427387903")).status == 404


async def test_repeated_query_parameters_are_refused(client):
    response = await client.get("/api/v1/jobs?limit=1&limit=500")
    await expect_error(response, 422, "validation_error", "limit")


async def test_405_names_the_allowed_methods(client):
    response = await client.request("TRACE", "/health/live")
    await expect_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


async def test_patch_cannot_null_the_name_or_schedule(client):
    await create(client, declaration())
    for field in ("name", "schedule"):
        response = await client.patch("/api/v1/jobs/db-nightly", json={field: None})
        error = await expect_error(response, 422, "validation_error", field)
        assert "cannot be null" in json.dumps(error)
    response = await client.patch(
        "/api/v1/jobs/db-nightly", json={"schedule": {"cron": "", "timezone": ""}}
    )
    error = await expect_error(response, 422, "validation_error", "schedule.timezone")
    assert all(".none" not in detail["field"] for detail in error["details"])


# --- found in review --------------------------------------------------------------------------


async def test_huge_references_are_404_not_500(client):
    for path in ("/api/v1/jobs/" + "9" * 5000, "/api/v1/scans/" + "9" * 5000,
                 "/api/v1/jobs/" + "x" * 101):  # fmt: skip
        response = await client.get(path)
        assert response.status == 404, path


async def test_a_cursor_from_another_job_finds_nothing(client, backups, clock):
    for name in ("a", "b"):
        for index in range(3):
            make_file(backups / name / f"{index}.tar", 10, clock.now - timedelta(hours=index))
        await create(
            client, declaration(name, source={"type": "local", "path": str(backups / name)})
        )
        await client.post(f"/api/v1/jobs/{name}/scan")
    other = await (await client.get("/api/v1/jobs/b/artifacts")).json()
    foreign = other["items"][0]["id"]
    page = await (await client.get(f"/api/v1/jobs/a/artifacts?before={foreign}")).json()
    assert page["items"] == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_concurrent_full_scan_requests_start_one_scan(client, app, backups):
    await create(client, declaration(source={"type": "local", "path": str(backups)}))
    for _ in range(5):
        answers = await asyncio.gather(*(client.post("/api/v1/scans") for _ in range(4)))
        statuses = sorted(answer.status for answer in answers)
        assert statuses == [202, 409, 409, 409], statuses
        # The next round starts once this scan has ended (under load it may take seconds: a
        # round started while it runs would rightly get four 409s).
        for _ in range(3000):
            scans = await (await client.get("/api/v1/scans?limit=1")).json()
            if scans["items"][0]["status"] != "running":
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the scan did not end within 60 s")


async def test_without_tokens_other_sites_cannot_change_anything(client):
    await create(client, declaration())
    evil = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
    response = await client.post("/api/v1/jobs/db-nightly/pause", headers=evil)
    await expect_error(response, 403, "forbidden")
    response = await client.post("/api/v1/scans", headers={"Sec-Fetch-Site": "cross-site"})
    await expect_error(response, 403, "forbidden")
    job = await (await client.get("/api/v1/jobs/db-nightly")).json()
    assert job["paused"] is False
    # A page that rebinds its DNS name to 127.0.0.1 cannot read either.
    response = await client.get("/api/v1/jobs", headers={"Host": "evil.example"})
    await expect_error(response, 403, "forbidden")
    same = {"Origin": str(client.make_url("/")).rstrip("/")}
    assert (await client.post("/api/v1/jobs/db-nightly/pause", headers=same)).status == 200


# --- hostile input (issue 10) -----------------------------------------------------------------


async def test_zone_names_that_are_no_zone_files_are_422_not_503(client):
    """ZoneInfo opens a file named after the zone: a tzdata directory, an overlong name or a
    path raised OSError, which the API answered as 503 database_unavailable."""
    await create(client, declaration())
    for zone in ["Europe", "America/Argentina", "x" * 300, "/etc/passwd", "Etc/../../UTC"]:
        schedule = {"cron": "0 2 * * *", "timezone": zone}
        for response in (
            await client.post("/api/v1/jobs", json=declaration("other", schedule=schedule)),
            await client.patch("/api/v1/jobs/db-nightly", json={"schedule": schedule}),
        ):
            error = await expect_error(response, 422, "validation_error", "schedule.timezone")
            [detail] = error["details"]
            assert detail["message"].startswith("unknown time zone "), error
            assert len(detail["message"]) < 200, error
    assert (await (await client.get("/api/v1/jobs")).json())["total"] == 1


async def test_texts_over_their_limit_are_422_naming_field_and_limit(client, backups):
    """A 300 KB glob was stored and compiled on the event loop at every scan (issue 10 #10)."""
    source = {"type": "local", "path": str(backups / "db")}
    await create(client, declaration(source=source))
    cases = [
        ({"source": {**source, "pattern": "*a" * 150_000}}, "source.pattern", "1024 characters"),
        ({"source": {**source, "path": "/" + "p" * 5000}}, "source.path", "4096 characters"),
        ({"description": "d" * 2001}, "description", "2000 characters"),
        ({"tags": [f"t{i}" for i in range(51)]}, "tags", "50 items"),
        ({"schedule": {"cron": "0 2 * * *" + " " * 500}}, "schedule.cron", "500 characters"),
        ({"notify": {"channels": [f"c{i}" for i in range(51)]}}, "notify.channels", "50 items"),
        ({"grace": "1h" * 100}, "grace", "100 characters"),
    ]
    for fields, field, limit in cases:
        for response in (
            await client.post("/api/v1/jobs", json=declaration("other", **fields)),
            await client.patch("/api/v1/jobs/db-nightly", json=fields),
        ):
            error = await expect_error(response, 422, "validation_error", field)
            [detail] = [d for d in error["details"] if d["field"] == field]
            assert limit in detail["message"], error
            assert len(json.dumps(error)) < 500, error
    assert (await (await client.get("/api/v1/jobs")).json())["total"] == 1

    document = await (await client.get("/api/openapi.json")).json()
    schemas = document["components"]["schemas"]
    bounds = {
        ("JobSpec", "name", "maxLength"): 100,
        ("JobSpec", "description", "maxLength"): 2000,
        ("JobSpec", "tags", "maxItems"): 50,
        ("JobPatch", "description", "maxLength"): 2000,
        ("JobPatch", "tags", "maxItems"): 50,
        ("LocalSource", "path", "maxLength"): 4096,
        ("LocalSource", "pattern", "maxLength"): 1024,
        ("Schedule", "cron", "maxLength"): 500,
        ("Schedule", "timezone", "maxLength"): 64,
        ("Notify", "channels", "maxItems"): 50,
    }
    for (model, field, keyword), bound in bounds.items():
        found = json.dumps(schemas[model]["properties"][field])
        assert f'"{keyword}": {bound}' in found, (model, field, found)


async def test_a_huge_reference_is_not_echoed_whole(client):
    response = await client.get("/api/v1/jobs/" + "x" * 5000)
    error = await expect_error(response, 404, "not_found")
    assert error["message"] == f"no job '{'x' * 60}…' (5000 characters) (give its id or its name)"


REMOTE_SOURCES = [
    {"type": "s3", "bucket": "backups", "prefix": "db/", "endpoint_url": "http://127.0.0.1:1",
     "access_key_id": "AKIA", "secret_access_key": "${S3_SECRET}"},
    {"type": "sftp", "host": "nas.example", "username": "bk", "known_hosts": "/etc/bm/kh",
     "path": "/srv/dumps", "password": "${NAS_PASSWORD}"},
    {"type": "restic", "repository": "/nonexistent/restic", "password_file": "/etc/bm/restic"},
    {"type": "borg", "repository": "/nonexistent/borg", "passphrase": "${BORG_PASS}",
     "env": {"BORG_RSH": "ssh -i /keys/borg"}},
]  # fmt: skip


@pytest.mark.parametrize("source", REMOTE_SOURCES, ids=lambda source: source["type"])
async def test_a_remote_source_is_stored_and_answered_as_declared(client, source):
    """Each kind is accepted through the API and answered with its secrets as references."""
    created = await create(client, declaration(source=source))
    answered = (await (await client.get("/api/v1/jobs/db-nightly")).json())["source"]
    assert created["source"] == answered
    assert {key: answered[key] for key in source} == source
    listed = (await (await client.get("/api/v1/jobs")).json())["items"][0]["source"]
    assert listed == answered


async def test_a_secret_written_in_a_remote_source_is_refused_and_not_echoed(client):
    body = declaration(source={**REMOTE_SOURCES[1], "password": "hunter2-plain"})
    response = await client.post("/api/v1/jobs", json=body)
    error = await expect_error(response, 422, "validation_error", "source.password")
    assert "hunter2-plain" not in json.dumps(error)
