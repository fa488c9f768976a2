"""Silences through a real server and a real database (PostgreSQL and SQLite): the API with
tokens, the jobs file's recurring silences, the store's lookup at an injected time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from service.config.jobsfile import JobsFileError, apply_jobs, load_declarations, parse_declarations
from service.db.models import Silence
from service.notify.silences import next_boundary, silenced_until
from service.runtime.app import create_app
from service.runtime.keys import sessionmaker_key
from service.settings import load_settings
from service.store.silences import create_silence, end_silence, load_current
from service.store.tokens import create_token

from tests.support import add_job


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def served(aiohttp_client, database_url):
    app = create_app(load_settings(database_url=database_url), scheduler=False)
    client = await aiohttp_client(app)
    async with app[sessionmaker_key]() as session:
        writer = await create_token(session, "alice", read_only=False)
        reader = await create_token(session, "grafana", read_only=True)
    return app, client, writer, reader


async def error_of(response, status):
    assert response.status == status, await response.text()
    return (await response.json())["error"]


async def test_create_list_get_and_end_a_silence(served):
    _, client, writer, reader = served
    ends = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    body = {"jobs": ["db-nightly"], "tags": ["nas"], "ends_at": ends.isoformat(),
            "comment": "moving the NAS to rack 4"}  # fmt: skip
    response = await client.post("/api/v1/silences", json=body, headers=bearer(writer))
    assert response.status == 201, await response.text()
    made = await response.json()
    assert response.headers["Location"] == f"/api/v1/silences/{made['id']}"
    assert made["created_by"] == "alice"
    assert made["origin"] == "api" and made["name"] is None
    assert made["jobs"] == ["db-nightly"] and made["tags"] == ["nas"]
    assert datetime.fromisoformat(made["ends_at"]) == ends
    assert made["state"] == "active" and made["ended_at"] is None
    assert datetime.fromisoformat(made["active_until"]) == ends

    # A read-only token reads, never creates or ends.
    listed = await (await client.get("/api/v1/silences", headers=bearer(reader))).json()
    assert [item["id"] for item in listed["items"]] == [made["id"]] and listed["total"] == 1
    one = await client.get(f"/api/v1/silences/{made['id']}", headers=bearer(reader))
    assert (await one.json()) == made
    await error_of(await client.post("/api/v1/silences", json=body, headers=bearer(reader)), 403)
    await error_of(
        await client.delete(f"/api/v1/silences/{made['id']}", headers=bearer(reader)), 403
    )
    await error_of(await client.get("/api/v1/silences"), 401)

    response = await client.delete(f"/api/v1/silences/{made['id']}", headers=bearer(writer))
    assert response.status == 200, await response.text()
    ended = await response.json()
    assert ended["state"] == "expired" and ended["ended_at"] is not None
    # Kept as history, and ending it again changes nothing.
    again = await (
        await client.delete(f"/api/v1/silences/{made['id']}", headers=bearer(writer))
    ).json()
    assert again == ended
    listed = await (await client.get("/api/v1/silences", headers=bearer(reader))).json()
    assert listed["items"] == [ended]
    await error_of(await client.get("/api/v1/silences/999999", headers=bearer(reader)), 404)
    await error_of(await client.delete("/api/v1/silences/999999", headers=bearer(writer)), 404)


async def test_duration_and_a_start_ahead_make_an_upcoming_silence(served):
    _, client, writer, _ = served
    starts = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    body = {"tags": ["db"], "starts_at": starts.isoformat(), "duration": "1h30m",
            "comment": "bob: postgres 17 upgrade"}  # fmt: skip
    made = await (await client.post("/api/v1/silences", json=body, headers=bearer(writer))).json()
    assert made["state"] == "upcoming", made
    assert datetime.fromisoformat(made["next_start"]) == starts
    assert datetime.fromisoformat(made["ends_at"]) == starts + timedelta(minutes=90)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"jobs": [], "tags": []}, "(silence)", "give the jobs"),
        ({"ends_at": None, "duration": None}, "(silence)", "exactly one of"),
        ({"duration": "1h"}, "(silence)", "exactly one of"),
        ({"comment": "  "}, "comment", "who silences"),
        ({"comment": None}, "comment", ""),
        ({"ends_at": "2020-01-01T00:00:00Z"}, "ends_at", "already be over"),
        ({"ends_at": "2026-13-01T00:00:00Z"}, "ends_at", ""),
        ({"ends_at": "2099-01-01T00:00:00"}, "ends_at", "timezone"),
        ({"ends_at": "9999-12-31T23:59:59-23:59"}, "ends_at", "out of range"),
        ({"starts_at": "+NOW+", "ends_at": "+NOW+"}, "ends_at", "is not after starts_at"),
        ({"ends_at": None, "duration": "100d"}, "duration", "at most 90 days"),
        ({"ends_at": None, "duration": 0}, "duration", ""),
        ({"jobs": ["Not A Job"]}, "jobs.0", ""),
        ({"color": "red"}, "color", "unknown field"),
    ],
)
async def test_a_bad_silence_is_a_422_naming_the_field(served, change, field, words):
    _, client, writer, _ = served
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {"jobs": ["db"], "ends_at": soon, "comment": "why"}
    body.update({key: soon if value == "+NOW+" else value for key, value in change.items()})
    body = {key: value for key, value in body.items() if not (value is None and key == "comment")}
    error = await error_of(
        await client.post("/api/v1/silences", json=body, headers=bearer(writer)), 422
    )
    assert error["code"] == "validation_error"
    messages = {detail["field"]: detail["message"] for detail in error["details"]}
    assert field in messages, error
    assert words in messages[field], error


async def test_unknown_job_names_are_accepted(served):
    _, client, writer, _ = served
    body = {"jobs": ["not-declared-yet"], "duration": "1h", "comment": "new server tonight"}
    response = await client.post("/api/v1/silences", json=body, headers=bearer(writer))
    assert response.status == 201, await response.text()


async def test_the_list_puts_current_silences_first_then_history(served, clock):
    app, client, writer, _ = served
    now = datetime.now(UTC)
    async with app[sessionmaker_key]() as session:

        def made(start, end, comment):
            return create_silence(
                session, jobs=["db"], tags=[], starts_at=now + start, ends_at=now + end,
                comment=comment, created_by="test", now=now - timedelta(days=3),
            )  # fmt: skip

        old = await made(timedelta(days=-3), timedelta(days=-2), "old")
        recent = await made(timedelta(hours=-5), timedelta(hours=-1), "recent")
        later = await made(timedelta(hours=5), timedelta(hours=6), "later")
        active = await made(timedelta(hours=-1), timedelta(hours=1), "active")
        cut = await made(timedelta(hours=-2), timedelta(hours=4), "cut")
        await end_silence(session, cut.id, now - timedelta(minutes=30))
        ids = {s.comment: s.id for s in (old, recent, later, active, cut)}
    listed = await (await client.get("/api/v1/silences", headers=bearer(writer))).json()
    assert [item["comment"] for item in listed["items"]] == [
        "active",
        "later",
        "cut",
        "recent",
        "old",
    ]
    assert [item["state"] for item in listed["items"]] == [
        "active", "upcoming", "expired", "expired", "expired"]  # fmt: skip
    page = await (
        await client.get("/api/v1/silences?limit=2&offset=2", headers=bearer(writer))
    ).json()
    assert [item["id"] for item in page["items"]] == [ids["cut"], ids["recent"]]
    assert page["total"] == 5


async def test_the_lookup_finds_the_silence_of_a_job_at_a_given_time(sessionmaker, clock):
    now = clock()
    async with sessionmaker() as session:
        await create_silence(
            session, jobs=["db"], tags=[], starts_at=now + timedelta(hours=1),
            ends_at=now + timedelta(hours=3), comment="db", created_by="t", now=now,
        )  # fmt: skip
        await create_silence(
            session, jobs=[], tags=["nas"], starts_at=now - timedelta(hours=1),
            ends_at=now + timedelta(hours=1), comment="nas", created_by="t", now=now,
        )  # fmt: skip
        gone = await create_silence(
            session, jobs=["db"], tags=[], starts_at=now - timedelta(hours=1),
            ends_at=now + timedelta(hours=5), comment="gone", created_by="t", now=now,
        )  # fmt: skip
        await end_silence(session, gone.id, now)
    await apply_recurring(sessionmaker, now, cron="0 2 * * *", timezone="Europe/Paris")

    async with sessionmaker() as session:
        current = await load_current(session, now)
    assert sorted(s.comment for s in current) == ["Sunday patching", "db", "nas"]
    assert silenced_until("db", [], current, now) is None  # the ended one no longer counts
    assert next_boundary("db", [], current, now) == now + timedelta(hours=1)
    assert silenced_until("db", ["nas"], current, now) == now + timedelta(hours=3)  # chained
    assert silenced_until("web", ["nas"], current, now) == now + timedelta(hours=1)

    later = now + timedelta(hours=3)
    async with sessionmaker() as session:
        current = await load_current(session, later)
    assert sorted(s.comment for s in current) == ["Sunday patching"]  # no expired one-off
    assert silenced_until("db", [], current, later) is None


async def apply_recurring(sessionmaker, now, prune=False, **fields):
    entry = {
        "name": "nightly-maintenance", "tags": ["db"], "cron": "0 2 * * 0",
        "timezone": "Europe/Paris", "duration": "2h", "comment": "Sunday patching",
    }  # fmt: skip
    entry.update(fields)
    declarations = parse_declarations({"jobs": [], "silences": [entry]}, "test")
    async with sessionmaker() as session:
        return await apply_jobs(
            session, declarations.jobs, silences=declarations.silences, prune=prune,
            clock=lambda: now,
        )  # fmt: skip


async def file_silences(sessionmaker):
    async with sessionmaker() as session:
        rows = await session.scalars(select(Silence).order_by(Silence.id))
        return [
            (row.name, row.origin, row.ended_at is None, row.cron, row.duration) for row in rows
        ]


async def test_the_jobs_file_applies_silences_by_name_idempotently(sessionmaker, clock):
    now = clock()
    first = await apply_recurring(sessionmaker, now)
    assert first.summary() == (
        "0 created, 0 updated, 0 unchanged, 0 deleted; "
        "silences: 1 created, 0 updated, 0 unchanged, 0 removed"
    )
    async with sessionmaker() as session:
        row = await session.scalar(select(Silence))
        assert row is not None
        assert (row.name, row.origin, row.created_by) == (
            "nightly-maintenance",
            "file",
            "jobs file",
        )
        assert (row.tags, row.jobs, row.cron, row.timezone, row.duration) == (
            ["db"], [], "0 2 * * 0", "Europe/Paris", 7200)  # fmt: skip
        assert row.starts_at is None and row.ends_at is None
        updated_at = row.updated_at

    clock.advance(minutes=5)
    again = await apply_recurring(sessionmaker, clock())
    assert again.silences is not None and again.silences.unchanged == ["nightly-maintenance"]
    async with sessionmaker() as session:
        row = await session.scalar(select(Silence))
        assert row is not None and row.updated_at == updated_at  # nothing written

    changed = await apply_recurring(sessionmaker, clock(), duration="3h")
    assert changed.silences is not None and changed.silences.updated == ["nightly-maintenance"]
    assert await file_silences(sessionmaker) == [
        ("nightly-maintenance", "file", True, "0 2 * * 0", 10800)]  # fmt: skip


async def test_prune_ends_the_files_silences_it_no_longer_declares_never_the_apis(
    sessionmaker, clock
):
    now = clock()
    await apply_recurring(sessionmaker, now)
    await apply_recurring(sessionmaker, now, name="backups-window", tags=["backup"])
    async with sessionmaker() as session:
        await create_silence(
            session, jobs=["db"], tags=[], starts_at=now, ends_at=now + timedelta(hours=1),
            comment="by hand", created_by="alice", now=now,
        )  # fmt: skip

    # Without --prune, a silence left out of the file stays.
    kept = await apply_recurring(sessionmaker, now)
    assert kept.silences is not None and kept.silences.removed == []
    pruned = await apply_recurring(sessionmaker, now, prune=True)
    assert pruned.silences is not None and pruned.silences.removed == ["backups-window"]
    assert await file_silences(sessionmaker) == [
        ("nightly-maintenance", "file", True, "0 2 * * 0", 7200),
        ("backups-window", "file", False, "0 2 * * 0", 7200),  # ended, kept as history
        (None, "api", True, None, None),
    ]
    # Declared again later: a new silence under the freed name.
    again = await apply_recurring(sessionmaker, now, name="backups-window", tags=["backup"])
    assert again.silences is not None and again.silences.created == ["backups-window"]

    # A file without a `silences:` list, pruned, ends them all (the API's stays).
    async with sessionmaker() as session:
        result = await apply_jobs(session, [], prune=True, clock=lambda: now)
    assert result.silences is not None
    assert sorted(result.silences.removed) == ["backups-window", "nightly-maintenance"]
    rows = await file_silences(sessionmaker)
    assert [live for _, origin, live, *_ in rows if origin == "file"] == [False, False, False]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"tags": []}, "silences[0] (nightly-maintenance): (silence): give the jobs"),
        ({"cron": "0 2 * *"}, "silences[0] (nightly-maintenance): cron: bad cron expression"),
        ({"cron": "0 2 30 2 *"}, "cron: bad cron expression '0 2 30 2 *': Bad day-of-month"),
        ({"timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
        ({"duration": "8d"}, "duration: a recurring window lasts at most 7 d (got 8 d)"),
        ({"duration": 0}, "silences[0] (nightly-maintenance): duration: "),
        ({"comment": ""}, "comment: "),
        ({"name": "Bad Name"}, "silences[0] (Bad Name): name: "),
        ({"starts_at": "2026-01-01"}, "starts_at: unknown field"),
    ],
)
def test_a_bad_silence_in_the_file_is_named(entry, problem):
    good = {"name": "nightly-maintenance", "tags": ["db"], "cron": "0 2 * * 0",
            "duration": "2h", "comment": "Sunday patching"}  # fmt: skip
    with pytest.raises(JobsFileError) as caught:
        parse_declarations({"jobs": [], "silences": [{**good, **entry}]}, "jobs.yml")
    assert any(problem in line for line in caught.value.problems), caught.value.problems


def test_duplicate_silence_names_and_a_bad_list_are_refused():
    entry = {"name": "w", "jobs": ["db"], "cron": "0 2 * * *", "duration": 60, "comment": "x"}
    with pytest.raises(JobsFileError) as caught:
        parse_declarations({"jobs": [], "silences": [entry, entry]}, "jobs.yml")
    assert caught.value.problems == ["silences[1] (w): duplicate name 'w' (also silences[0])"]
    with pytest.raises(JobsFileError) as caught:
        parse_declarations({"jobs": [], "silences": {"w": entry}}, "jobs.yml")
    assert caught.value.problems == ["silences: must be a list of silences"]


async def test_the_dashboard_shows_silences_and_the_silenced_job(
    aiohttp_client, database_url, sessionmaker, clock
):
    now = datetime.now(UTC)
    await add_job(sessionmaker, now - timedelta(days=1), name="db", tags=["pg"])
    await add_job(sessionmaker, now - timedelta(days=1), name="web")
    async with sessionmaker() as session:
        active = await create_silence(
            session, jobs=[], tags=["pg"], starts_at=now - timedelta(minutes=10),
            ends_at=now + timedelta(hours=2), comment="moving the NAS <to rack 4>",
            created_by="alice", now=now,
        )  # fmt: skip
        upcoming = await create_silence(
            session, jobs=["web"], tags=[], starts_at=now + timedelta(days=2),
            ends_at=now + timedelta(days=2, hours=1), comment="kernel update",
            created_by="bob", now=now,
        )  # fmt: skip
        expired = await create_silence(
            session, jobs=["web"], tags=[], starts_at=now - timedelta(days=2),
            ends_at=now - timedelta(days=1), comment="last week's move", created_by="carol",
            now=now - timedelta(days=2),
        )  # fmt: skip
    await apply_recurring(sessionmaker, now, tags=["never-matches"])
    client = await aiohttp_client(
        create_app(load_settings(database_url=database_url), scheduler=False)
    )

    page = await (await client.get("/silences")).text()
    sections = {
        state: page[page.index(f'id="{state}"') :] for state in ("active", "upcoming", "expired")
    }
    assert f'data-silence="{active.id}" data-state="active"' in sections["active"]
    assert "moving the NAS &lt;to rack 4&gt;" in page  # escaped
    until = (now + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M")
    assert f"until {until} UTC" in page
    assert f'data-silence="{upcoming.id}" data-state="upcoming"' in sections["upcoming"]
    assert f'data-silence="{expired.id}" data-state="expired"' in sections["expired"]
    assert "nightly-maintenance (jobs file)" in page
    assert "at 02:00, only on sunday (Europe/Paris), for 2 h" in page.replace("Sunday", "sunday")

    job_page = await (await client.get("/jobs/db")).text()
    now_card = job_page[job_page.index('id="reasons"') : job_page.index('id="chart"')]
    hhmm = (now + timedelta(hours=2)).strftime("%H:%M")
    assert f"silenced until {hhmm} UTC" in now_card
    assert "by alice: moving the NAS &lt;to rack 4&gt;" in now_card
    other = await (await client.get("/jobs/web")).text()
    assert "silenced until" not in other

    index = await (await client.get("/")).text()
    assert "1 silence active now" in index
    row = index[index.index('data-job="db"') :]
    assert f"silenced until {hhmm} UTC" in row[: row.index("</tr>")]
    row = index[index.index('data-job="web"') :]
    assert "silenced" not in row[: row.index("</tr>")]


def test_the_example_jobs_file_declares_a_valid_silence():
    example = Path(__file__).resolve().parents[2] / "deploy" / "jobs.example.yml"
    declared = load_declarations(example)
    assert declared.silences is not None
    assert [silence.name for silence in declared.silences] == ["sunday-patching"]


@pytest.mark.parametrize(
    ("api_token", "headers", "who"),
    [
        (None, {}, "anonymous"),  # no token at all: the open API on loopback
        ("from-the-environment", bearer("from-the-environment"), "API_TOKEN"),
    ],
)
async def test_created_by_names_the_caller_without_a_stored_token(
    aiohttp_client, database_url, api_token, headers, who
):
    settings = load_settings(database_url=database_url, api_token=api_token)
    client = await aiohttp_client(create_app(settings, scheduler=False))
    body = {"jobs": ["db"], "duration": "1h", "comment": "why"}
    response = await client.post("/api/v1/silences", json=body, headers=headers)
    assert response.status == 201, await response.text()
    assert (await response.json())["created_by"] == who


async def test_a_scan_reads_the_silences_again_once_they_are_a_second_old(sessionmaker, clock):
    """A scan judges its jobs in batches; reading the silences for each batch was a tenth of a
    rescan's CPU. They are read again once SILENCES_FRESH old: a silence set during a scan
    applies to the jobs judged a second later."""
    from service.scanner.scanner import SILENCES_FRESH, BackupScanner

    now = clock()
    async with sessionmaker() as session:
        scanner = BackupScanner(session, clock=clock)
        assert await scanner._current_silences(session, now) == []
        await create_silence(
            session, jobs=["db"], tags=[], starts_at=now, ends_at=now + timedelta(hours=1),
            comment="set during the scan", created_by="t", now=now,
        )  # fmt: skip
        assert await scanner._current_silences(session, now + SILENCES_FRESH) == []
        later = now + SILENCES_FRESH + timedelta(milliseconds=1)
        current = await scanner._current_silences(session, later)
        assert [s.comment for s in current] == ["set during the scan"]
        assert silenced_until("db", [], current, later) == now + timedelta(hours=1)
        await create_silence(
            session, jobs=["web"], tags=[], starts_at=now, ends_at=now + timedelta(hours=1),
            comment="after the clock was set back", created_by="t", now=now,
        )  # fmt: skip
        back = await scanner._current_silences(session, now)  # the clock set back: read again
    assert [s.comment for s in back] == ["set during the scan", "after the clock was set back"]
