"""The pure parts of the migration commands: the Nagios output of `check`, the plan of `jobs
apply --dry-run`, the mapping of Healthchecks checks to jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.cli.check import JobState, judged_too_long_ago, nagios_output, unknown_job
from service.config.healthchecks import ImportProblems, jobs_of_checks, slugify
from service.config.jobsfile import plan_jobs
from service.core.jobspec import parse_job

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def state(name: str, status: str, message: str = "", size: int | None = None) -> JobState:
    reasons = [{"code": "x", "severity": status, "message": message}] if message else []
    latest = None
    if size is not None:
        latest = {"path": "a", "size": size, "mtime": (NOW - timedelta(hours=2)).isoformat()}
    return JobState(name, status, reasons, latest)


def test_all_ok_one_job_and_perfdata():
    code, text = nagios_output([state("db", "ok", size=10)], NOW)
    assert code == 0
    assert text.splitlines() == [
        "OK - 1 job, none in trouble",
        "| 'age_db'=7200s;;;0 'size_db'=10B;;;0",
    ]


def test_worst_status_decides_and_pending_paused_count_as_ok():
    states = [state("a", "unknown", "gone"), state("b", "pending"), state("c", "paused")]
    code, text = nagios_output(states, NOW)
    assert code == 3
    assert text.splitlines()[:2] == ["UNKNOWN - 1 unknown of 3 jobs", "UNKNOWN: a: gone"]
    code, text = nagios_output([*states, state("d", "warning", "few")], NOW)
    assert code == 1 and text.startswith("WARNING - 1 warning, 1 unknown of 4 jobs\n")


def test_a_reason_cannot_add_a_line_or_forge_perfdata():
    """A file name in a message with a line break or control characters: still one line each."""
    code, text = nagios_output([state("a", "critical", "bad\nOK - fine | x=1\x1b[2J")], NOW)
    assert code == 2
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[1] == "CRITICAL: a: bad OK - fine | x=1\\x1b[2J"


def test_unreadable_latest_artifact_is_undetermined():
    broken = JobState("a", "ok", [], {"path": "a", "size": "x", "mtime": "yesterday"})
    assert nagios_output([broken], NOW)[1].splitlines()[-1] == "| 'age_a'=U;;;0 'size_a'=U;;;0"


def test_unknown_job_names_the_first_twenty():
    names = [f"job{i:02}" for i in range(25)]
    text = unknown_job("nope", names)
    assert text.endswith("job19 and 5 more)")
    assert unknown_job("nope", []).startswith("no job named 'nope' (no jobs declared")


def test_plan_names_created_changed_fields_and_deleted():
    spec = parse_job({"name": "a", "schedule": {"every": "1d"}, "grace": "2h"})
    stored = parse_job({"name": "a", "schedule": {"every": "1d"}}).declaration()
    new = parse_job({"name": "b", "schedule": {"every": "1h"}})
    plan = plan_jobs({"a": stored, "old": stored}, [spec, new], prune=True)
    assert plan.created == ["b"] and plan.deleted == ["old"] and plan.unchanged == []
    assert [(c.field, c.old, c.new) for c in plan.changed["a"]] == [("grace", 3600, 7200)]
    assert plan_jobs({"a": stored, "old": stored}, [spec], prune=False).deleted == []


@pytest.mark.parametrize(
    ("name", "slug"),
    [("Database Backup", "database-backup"), ("9 lives", "hc-9-lives"), ("ÉTÉ!", "ete"),
     ("!!", "hc"), ("a" * 150, "a" * 100)],
)  # fmt: skip
def test_slugify(name, slug):
    assert slugify(name) == slug


def test_checks_without_ping_urls_or_with_bad_schedules_are_all_told():
    document = {
        "checks": [
            {"name": "a", "timeout": 60, "grace": 60},
            {"name": "b", "schedule": "61 * * * *", "tz": "UTC", "grace": 60,
             "ping_url": "https://hc/ping/0f6c3a1e-2b4d-4c6e-8a0b-9d8c7b6a5f4e"},
            {"name": "c", "timeout": 60, "grace": 60,
             "uuid": "0f6c3a1e-2b4d-4c6e-8a0b-9d8c7b6a5f4e"},
        ]
    }  # fmt: skip
    with pytest.raises(ImportProblems) as caught:
        jobs_of_checks(document, "x.json")
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("checks[0] (a): no ping URL")
    assert problems[1].startswith("checks[1] (b): schedule")
    with pytest.raises(ImportProblems):
        jobs_of_checks({"checks": {}}, "x.json")


def test_max_age_doubts_what_nobody_judged_lately():
    fresh = JobState("fresh", "ok", [], None, NOW - timedelta(minutes=5))
    old = JobState("old", "ok", [], None, NOW - timedelta(hours=2))
    bad = JobState("bad", "critical", [{"message": "late"}], None, NOW - timedelta(hours=2))
    never = JobState("never", "pending", [], None, None)
    paused = JobState("paused", "paused", [], None, None)
    states = judged_too_long_ago([fresh, old, bad, never, paused], NOW, timedelta(minutes=30))
    assert [s.status for s in states] == ["ok", "unknown", "critical", "unknown", "paused"]
    code, text = nagios_output(states, NOW)
    assert code == 2
    assert text.splitlines()[:5] == [
        "CRITICAL - 1 critical, 2 unknown of 5 jobs",
        "UNKNOWN: old: last judged 2 h ago (is the service scanning?)",
        "CRITICAL: bad: late; last judged 2 h ago (is the service scanning?)",
        "UNKNOWN: never: never judged (is the service scanning?)",
        "| 'age_fresh'=U;;;0 'size_fresh'=U;;;0 'age_old'=U;;;0 'size_old'=U;;;0 "
        "'age_bad'=U;;;0 'size_bad'=U;;;0 'age_never'=U;;;0 'size_never'=U;;;0 "
        "'age_paused'=U;;;0 'size_paused'=U;;;0",
    ]
