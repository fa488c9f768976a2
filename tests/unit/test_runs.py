"""Runs from pings (service/store/pings.py `runs_of`, `run_facts`): pairing, supersede, what is
judged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.core.jobspec import parse_job
from service.core.rules import evaluate
from service.db.models import Ping
from service.store.pings import run_facts, runs_of

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def pings(*specs: str) -> list[Ping]:
    """One ping a minute from T0: `start`, `success`, `fail`, `log` or an exit status, with
    `:rid` for a run id (`start:a`); `=` at the start keeps the previous ping's time."""
    made: list[Ping] = []
    minute = -1
    for spec in specs:
        same_time, spec = spec.startswith("="), spec.removeprefix("=")
        minute += 0 if same_time else 1
        kind, _, rid = spec.partition(":")
        exit_status = None
        if kind.isdigit():
            exit_status = int(kind)
            kind = "success" if exit_status == 0 else "fail"
        made.append(
            Ping(kind=kind, exit_status=exit_status, rid=rid or None, body=spec,
                 received_at=T0 + minute * MINUTE)
        )  # fmt: skip
    return made


def minute_of(moment: datetime | None) -> int | None:
    return None if moment is None else int((moment - T0) / MINUTE)


def summary(specs: tuple[str, ...]) -> list[tuple[str, int | None, int | None, str | None]]:
    """Each run as (outcome, minute started, minute finished, run id), oldest first."""
    return [
        (run.outcome, minute_of(run.started_at), minute_of(run.finished_at), run.rid)
        for run in runs_of(pings(*specs))
    ]


CASES = {
    # The scenario: the first script died; a later start supersedes it.
    "start, start, success": (
        ("start", "start", "success"),
        [("abandoned", 0, None, None), ("success", 1, 2, None)],
        None,
    ),
    "same run id supersedes": (
        ("start:a", "start:a", "success:a"),
        [("abandoned", 0, None, "a"), ("success", 1, 2, "a")],
        None,
    ),
    "every start supersedes the one before": (
        ("start", "start", "start"),
        [("abandoned", 0, None, None), ("abandoned", 1, None, None), ("running", 2, None, None)],
        2,
    ),
    "a failed run after a dead one": (
        ("start", "start", "3"),
        [("abandoned", 0, None, None), ("fail", 1, 2, None)],
        None,
    ),
    "a fail closes its run": (("start", "fail"), [("fail", 0, 1, None)], None),
    "a start after a finish is a new run": (
        ("start", "success", "start"),
        [("success", 0, 1, None), ("running", 2, None, None)],
        2,
    ),
    "a start after a finish, then a dead one": (
        ("start", "success", "start", "start"),
        [("success", 0, 1, None), ("abandoned", 2, None, None), ("running", 3, None, None)],
        3,
    ),
    "a log ping does not close or supersede": (
        ("start", "log", "start", "success"),
        [("abandoned", 0, None, None), ("log", None, 1, None), ("success", 2, 3, None)],
        None,
    ),
    "a second finish has nothing open": (
        ("start", "start", "success", "success"),
        [("abandoned", 0, None, None), ("success", 1, 2, None), ("success", None, 3, None)],
        None,
    ),
    # Run ids: different ones overlap, none supersedes another.
    "different run ids overlap": (
        ("start:a", "start:b"),
        [("running", 0, None, "a"), ("running", 1, None, "b")],
        1,
    ),
    "overlapping runs each get their duration": (
        ("start:a", "start:b", "success:a", "success:b"),
        [("success", 0, 2, "a"), ("success", 1, 3, "b")],
        None,
    ),
    "an older run still open is not judged once a newer one finished": (
        ("start:a", "start:b", "0:b"),
        [("running", 0, None, "a"), ("success", 1, 2, "b")],
        None,
    ),
    "the newest start is judged while it is open": (
        ("start:a", "start:b", "success:a"),
        [("running", 1, None, "b"), ("success", 0, 2, "a")],
        1,
    ),
    "no run id and a run id overlap": (
        ("start", "start:a"),
        [("running", 0, None, None), ("running", 1, None, "a")],
        1,
    ),
    "a run id and no run id overlap": (
        ("start:a", "start", "success"),
        [("running", 0, None, "a"), ("success", 1, 2, None)],
        None,
    ),
    "a finish without the run id does not close a run with one": (
        ("start:a", "success"),
        [("running", 0, None, "a"), ("success", None, 1, None)],
        0,
    ),
    "two starts at the same instant: the later one is open": (
        ("start", "=start"),
        [("abandoned", 0, None, None), ("running", 0, None, None)],
        0,
    ),
}


@pytest.mark.parametrize(("specs", "runs", "running_since"), CASES.values(), ids=CASES.keys())
def test_runs_and_the_run_judged(specs, runs, running_since):
    assert summary(specs) == runs
    assert minute_of(run_facts(runs_of(pings(*specs))).running_since) == running_since


def test_an_abandoned_run_keeps_its_start_and_log_and_has_no_duration():
    (abandoned, success) = runs_of(pings("start", "start", "success"))
    assert abandoned.outcome == "abandoned"
    assert abandoned.started_at == T0 and abandoned.finished_at is None
    assert abandoned.duration is None and abandoned.log == "start"
    assert success.duration == 60.0


@pytest.mark.parametrize(
    ("specs", "status", "codes"),
    [
        (("start",), "critical", ["run_overdue"]),  # the script died: overdue, as before
        (("start", "start", "0"), "ok", []),  # the issue: a later run succeeded
        (("start:x", "start:x", "0:x"), "ok", []),
        (("start:x", "start:y", "0:y"), "ok", []),  # a fresh run id each run (runitor)
        (("start", "start"), "critical", ["run_overdue"]),  # the newer one hangs too
    ],
)
def test_a_dead_run_is_judged_until_a_later_start(specs, status, codes):
    """max_duration 20 s; the pings a minute apart; judged a day later: only the newest start
    is watched, so a crash no longer pins the job critical once a later run succeeded."""
    spec = parse_job({"name": "hb", "schedule": {"every": "7d"}, "rules": {"max_duration": "20s"}})
    facts = run_facts(runs_of(pings(*specs)))
    result = evaluate(spec, [], now=T0 + timedelta(days=1), created_at=T0, runs=facts)
    assert (result.status, [reason.code for reason in result.reasons]) == (status, codes)
