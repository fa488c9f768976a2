"""The pure judge of the scanner (service/scanner/judge.py): observation + facts + now -> the
job's new state and what it means against the state stored; no database."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.core.jobspec import JobSpec, parse_job
from service.core.rules import Reason, RunFacts
from service.scanner.judge import Judgement, aftermath, judge, must_write, unjudged
from service.scanner.sources.base import FileEntry, Listing
from service.scanner.state import NEWEST_JUDGED, JobRow, JobState, Observation, to_microseconds

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
SOURCE = {"type": "local", "path": "/backups/db", "pattern": "*.sql.gz"}


def spec(**fields: Any) -> JobSpec:
    """A daily job with a 1 h grace; `fields` override the declaration."""
    data: dict[str, Any] = {"name": "db", "source": SOURCE, "schedule": {"every": 86400},
                            "grace": 3600, **fields}  # fmt: skip
    return parse_job(data)


def row(declared: JobSpec, **fields: Any) -> JobRow:
    """The job as a scan reads it: pending, never looked at; `fields` override."""
    values: dict[str, Any] = {
        "id": 1, "name": declared.name,
        "declaration_json": json.dumps({"name": declared.name, **declared.declaration()}),
        "created_at": CREATED, "status": "pending", "reasons": [], "next_check_at": None,
        "checked_at": None, "status_changed_at": None, "latest_artifact": None,
        "artifact_count": 0, "listing_digest": None, **fields,
    }  # fmt: skip
    return JobRow(**values)


def entry(name: str, size: int, age: timedelta) -> FileEntry:
    return (name, size, to_microseconds(NOW - age))


def observation(
    job: JobRow, declared: JobSpec | None, entries: list[FileEntry] | None, **fields: Any
) -> Observation:
    listing = None if entries is None else Listing(entries=entries, fingerprint="f")
    return Observation(job, declared, listing, **fields)


DAILY = spec()
FILES = [entry("db-1.sql.gz", 5000, 25 * HOUR), entry("db-2.sql.gz", 5000, 2 * HOUR)]


def test_a_listed_job_is_judged_on_its_newest_file() -> None:
    seen = observation(row(DAILY), DAILY, FILES, digest="d1")
    judged = judge(seen, now=NOW)
    assert judged.state == JobState(
        status="ok", reasons=(), next_check_at=NOW - 2 * HOUR + 25 * HOUR,
        latest_artifact={"path": "db-2.sql.gz", "size": 5000,
                         "mtime": (NOW - 2 * HOUR).isoformat()},
        artifact_count=2, listing_digest="d1",
    )  # fmt: skip
    assert judged.sync  # a listing the job has never synced
    assert (judged.checked_at, judged.seen_at, judged.error) == (NOW, NOW, None)


def test_the_same_inputs_give_the_same_judgement() -> None:
    seen = observation(row(DAILY), DAILY, FILES, digest="d1")
    assert judge(seen, now=NOW) == judge(seen, now=NOW)


def test_a_listing_already_synced_is_not_synced_again() -> None:
    seen = observation(row(DAILY, listing_digest="d1"), DAILY, FILES, digest="d1")
    assert not judge(seen, now=NOW).sync
    # An incomplete listing has no digest: it is synced (and marks nothing gone).
    assert judge(replace(seen, digest=None), now=NOW).sync


def test_facts_read_before_now_are_what_the_job_was_seen_at() -> None:
    seen = observation(row(DAILY), DAILY, FILES)
    assert judge(seen, now=NOW, seen_at=NOW - HOUR).seen_at == NOW - HOUR
    assert judge(seen, now=NOW, seen_at=NOW + HOUR).seen_at == NOW  # never after the judgement


def test_a_source_that_cannot_be_read_keeps_what_was_known() -> None:
    known = {"path": "db-0.sql.gz", "size": 10, "mtime": (NOW - HOUR).isoformat()}
    job = row(DAILY, latest_artifact=known, artifact_count=7, listing_digest="old")
    judged = judge(observation(job, DAILY, None, source_error="permission denied"), now=NOW)
    assert judged.state == JobState(
        "unknown", (Reason("source_error", "unknown", "permission denied"),), None, known, 7, None
    )
    assert not judged.sync
    assert judged.error == "permission denied"


def test_a_declaration_that_does_not_validate_is_unknown() -> None:
    job = row(DAILY)
    judged = judge(observation(job, None, None, source_error="grace: too long"), now=NOW)
    assert judged.state.status == "unknown"
    assert judged.state.stored_reasons() == [
        {"code": "source_error", "severity": "unknown", "message": "grace: too long"}
    ]
    bare = judge(observation(job, None, None), now=NOW)
    assert bare.state.reasons[0].message == "the stored declaration is invalid"


def test_a_heartbeat_job_is_judged_on_its_pings() -> None:
    heartbeat = spec(source=None)
    job = row(heartbeat)
    ran = RunFacts(last_success_at=NOW - 30 * HOUR, last_finished_at=NOW - 30 * HOUR)
    judged = judge(observation(job, heartbeat, None), ran, now=NOW)
    assert judged.state.status == "critical"
    assert [reason.code for reason in judged.state.reasons] == ["late"]
    assert (judged.state.latest_artifact, judged.state.artifact_count, judged.sync) == (
        None, 0, False,
    )  # fmt: skip


def test_a_newest_file_being_written_is_said_so() -> None:
    files = [*FILES, entry("db-3.sql.gz", 10, timedelta(seconds=5))]
    judged = judge(observation(row(DAILY), spec(source={**SOURCE, "settle": 60}), files), now=NOW)
    assert judged.state.latest_artifact is not None
    assert judged.state.latest_artifact["being_written"] is True
    assert judged.state.status == "ok"  # its size is not judged yet


def test_a_job_that_cannot_be_judged_is_unknown_and_synced_again_later() -> None:
    known = {"path": "db-0.sql.gz", "size": 10, "mtime": (NOW - HOUR).isoformat()}
    job = row(DAILY, latest_artifact=known, artifact_count=3, listing_digest="d1")
    judged = unjudged(observation(job, DAILY, FILES, digest="d1"), "boom", now=NOW)
    assert judged.state == JobState(
        "unknown", (Reason("scan_error", "unknown", "boom"),), None, known, 3, None
    )
    assert (judged.sync, judged.error, judged.seen_at) == (False, "boom", NOW)


def _settled(job: JobRow, judged: Judgement) -> JobRow:
    """The job as stored once this judgement is written."""
    after = aftermath(judged, job)
    state = judged.state
    return replace(
        job, status=state.status, reasons=state.stored_reasons(),
        next_check_at=state.next_check_at, latest_artifact=state.latest_artifact,
        artifact_count=state.artifact_count, listing_digest=state.listing_digest,
        checked_at=judged.seen_at, status_changed_at=after.status_changed_at,
        renotify_at=after.renotify_at, notified_status=after.notified_status,
        notified_reasons=after.notified_reasons, bad_since=after.streak.since,
        bad_count=after.streak.count,
    )  # fmt: skip


def test_a_judgement_that_changes_nothing_is_only_touched() -> None:
    job = row(DAILY)
    first = judge(observation(job, DAILY, FILES, digest="d1"), now=NOW)
    assert must_write(first, job)
    stored = _settled(job, first)
    again = judge(observation(stored, DAILY, FILES, digest="d1"), now=NOW + HOUR)
    assert not must_write(again, stored)


def test_a_due_reminder_is_written_with_the_judgement() -> None:
    late = [entry("db-1.sql.gz", 5000, 30 * HOUR)]
    critical = spec(notify={"renotify_every": 3600})
    job = row(critical)
    first = judge(observation(job, critical, late, digest="d1"), now=NOW)
    stored = _settled(job, first)
    assert stored.renotify_at == NOW + HOUR
    before = judge(observation(stored, critical, late, digest="d1"), now=NOW + HOUR / 2)
    assert not must_write(before, stored)
    due = judge(observation(stored, critical, late, digest="d1"), now=NOW + HOUR)
    assert must_write(due, stored)
    assert aftermath(due, stored).news.kind == "reminder"


@pytest.mark.parametrize(("after", "told"), [(1, "problem"), (2, None)])
def test_a_first_problem_is_told_or_held_by_notify_after(after: int, told: str | None) -> None:
    declared = spec(notify={"after": after})
    job = row(declared, status="ok", notified_status="ok", notified_reasons=[])
    late = [entry("db-1.sql.gz", 5000, 30 * HOUR)]
    judged = judge(observation(job, declared, late, digest="d1"), now=NOW)
    result = aftermath(judged, job)
    assert result.news.recorded  # a history row whatever is told
    assert result.news.kind == told
    assert (result.streak.since, result.streak.count) == (NOW, 1)
    assert result.status_changed_at == NOW
    if told is None:
        assert result.news.held is not None and result.news.held.judgements == 1
        assert (result.notified_status, result.notified_reasons) == ("ok", [])
    else:
        assert result.notified_status == "critical"
        assert result.notified_reasons == judged.state.stored_reasons()
    # The second bad judgement in a row tells what the first held.
    second = judge(observation(_settled(job, judged), declared, late), now=NOW + HOUR)
    assert aftermath(second, _settled(job, judged)).news.kind == (None if told else "problem")


def test_a_silence_holds_the_notice_until_its_end() -> None:
    job = row(DAILY, status="ok", notified_status="ok", notified_reasons=[])
    late = [entry("db-1.sql.gz", 5000, 30 * HOUR)]
    until = NOW + 2 * HOUR
    judged = judge(observation(job, DAILY, late), now=NOW, silenced_until=until)
    result = aftermath(judged, job)
    assert result.news.kind is None
    assert result.news.held is not None and result.news.held.reason == "silence"
    assert result.renotify_at == until  # the deadline tick tells it then, if still owed


def test_retention_is_judged_on_every_file_listed_not_the_newest_few() -> None:
    # 40 nightly files: the judge hands evaluate only the newest 12, and the times of all.
    nightly = spec(schedule={"cron": "0 2 * * *"}, retention={"daily": 30})
    days = [d for d in range(40) if d != 20]  # the night 20 days ago is gone
    files = [
        entry(f"db-{d}.sql.gz", 5000, d * 24 * HOUR + HOUR) for d in sorted(days, reverse=True)
    ]
    judged = judge(observation(row(nightly), nightly, files), now=NOW)
    assert [r.message for r in judged.state.reasons] == [
        "no backup kept for 2026-11-10 (daily: 30 kept)"
    ]
    whole = [entry(f"db-{d}.sql.gz", 5000, d * 24 * HOUR + HOUR) for d in range(39, -1, -1)]
    assert judge(observation(row(nightly), nightly, whole), now=NOW).state.status == "ok"


@pytest.mark.parametrize(
    ("declared", "codes"),
    [
        (DAILY, []),
        (spec(schedule={"cron": "0 2 * * *"}, retention={"daily": 30}), ["retention_gap"]),
        (spec(rules={"min_count": 45, "max_size_drop": 20}), ["size_drop", "too_few"]),
    ],
    ids=["daily", "retention", "count-and-size-drop"],
)
def test_a_summary_of_a_listing_is_judged_as_the_whole_listing(
    declared: JobSpec, codes: list[str]
) -> None:
    # What a walker process sends of a listing still the one synced: the newest NEWEST_JUDGED
    # entries, the count and every time. A night is missing 20 days ago; the newest is small.
    days = [d for d in range(40) if d != 20]
    files = [
        entry(f"db-{d}.sql.gz", 5000 if d else 2000, d * 24 * HOUR + HOUR)
        for d in sorted(days, reverse=True)
    ]
    whole = Listing(entries=files, fingerprint="f")
    newest = files[-NEWEST_JUDGED:]
    summary = Listing.summary(newest, [e[2] for e in files], "f")
    job = row(declared, listing_digest="d1")
    judged = [
        judge(Observation(job, declared, listed, digest="d1"), now=NOW).state
        for listed in (whole, summary)
    ]
    assert judged[0] == judged[1]
    assert judged[1].artifact_count == 39
    assert [reason.code for reason in judged[1].reasons] == codes
