"""When the deadline tick judges a job again (service/core/rules.py `next_check`): the first
moment ahead at which its verdict can change, an open run's max_duration included (issue 11
item 3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.core.jobspec import parse_job
from service.core.rules import FUTURE_TOLERANCE, ArtifactFact, evaluate, next_check
from service.db.models import Ping
from service.store.pings import run_facts, runs_of

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
INSTANT = timedelta(microseconds=1)
CREATED = T0 - HOUR  # a heartbeat job that never succeeded is due at CREATED + 1 d
FIRST_DUE = CREATED + DAY


def heartbeat(max_duration: str | None = "10m", **fields: Any) -> Any:
    rules = {"max_duration": max_duration} if max_duration else {}
    data = {"name": "hb", "schedule": {"every": "1d"}, "grace": 0, "rules": rules, **fields}
    return parse_job(data)


def pings(*specs: str) -> list[Ping]:
    """One ping a minute from T0: `start`, an exit status (`0`, `1`), `:rid` for a run id;
    `=` at the start keeps the previous ping's time."""
    made, minute = [], -1
    for spec in specs:
        same_time, spec = spec.startswith("="), spec.removeprefix("=")
        minute += 0 if same_time else 1
        kind, _, rid = spec.partition(":")
        exit_status = int(kind) if kind.isdigit() else None
        if exit_status is not None:
            kind = "success" if exit_status == 0 else "fail"
        made.append(
            Ping(kind=kind, exit_status=exit_status, rid=rid or None, body="",
                 received_at=T0 + minute * MINUTE)
        )  # fmt: skip
    return made


def check(spec: Any, sent: list[Ping], now: datetime, created: datetime = CREATED) -> Any:
    facts = run_facts(runs_of(sent))
    evaluation = evaluate(spec, [], now=now, created_at=created, runs=facts)
    return next_check(spec, evaluation, facts, now), facts


@pytest.mark.parametrize(
    ("max_duration", "sent", "now", "created", "expected"),
    [
        # An open run: judged again the instant it is longer than max_duration.
        ("10m", ["start"], T0 + MINUTE, CREATED, T0 + 10 * MINUTE + INSTANT),
        # No max_duration: nothing to watch; the deadline.
        (None, ["start"], T0 + MINUTE, CREATED, FIRST_DUE),
        # A run longer than the time to the deadline: the deadline comes first.
        ("2d", ["start"], T0 + MINUTE, CREATED, FIRST_DUE),
        # A newer start supersedes the open run: its own max_duration counts.
        ("10m", ["start", "start"], T0 + 2 * MINUTE, CREATED, T0 + 11 * MINUTE + INSTANT),
        ("10m", ["start:a", "start"], T0 + 2 * MINUTE, CREATED, T0 + 11 * MINUTE + INSTANT),
        ("10m", ["start:a", "=start:b"], T0 + MINUTE, CREATED, T0 + 10 * MINUTE + INSTANT),
        # The newest start finished: no run is watched (an older one of another rid neither).
        ("10m", ["start:a", "start:b", "0:b"], T0 + 3 * MINUTE, CREATED, T0 + 2 * MINUTE + DAY),
        ("10m", ["start", "0"], T0 + 2 * MINUTE, CREATED, T0 + MINUTE + DAY),
        ("10m", ["start", "1"], T0 + 2 * MINUTE, CREATED, FIRST_DUE),
        # Already overdue: the next moment ahead is the deadline.
        ("10m", ["start"], T0 + 20 * MINUTE, CREATED, FIRST_DUE),
        # Exactly at max_duration (not overdue yet): the next instant.
        ("10m", ["start"], T0 + 10 * MINUTE, CREATED, T0 + 10 * MINUTE + INSTANT),
        # Late already (the deadline passed): the job keeps it (it is what the dashboard and
        # BackupJobLate show), though the run's max_duration is ahead.
        ("10m", ["start"], T0 + MINUTE, T0 - 2 * DAY, T0 - DAY),
        # Late and overdue: nothing ahead; the deadline as it was (the tick has judged it).
        ("10m", ["start"], T0 + 20 * MINUTE, T0 - 2 * DAY, T0 - DAY),
    ],
)
def test_next_check(max_duration, sent, now, created, expected):
    moment, _ = check(heartbeat(max_duration), pings(*sent), now, created)
    assert moment == expected


@pytest.mark.parametrize("sent", [["start"], ["start", "start"], ["start:a", "=start:b"]])
def test_the_verdict_changes_at_the_next_check(sent):
    """Judged at the moment next_check gives, the open run is overdue; an instant before, not."""
    spec, received = heartbeat("10m"), pings(*sent)
    moment, facts = check(spec, received, received[-1].received_at)
    assert moment is not None
    codes = [
        [
            reason.code
            for reason in evaluate(spec, [], now=at, created_at=CREATED, runs=facts).reasons
        ]
        for at in (moment - INSTANT, moment)
    ]
    assert codes == [[], ["run_overdue"]]


def test_a_file_dated_in_the_future_is_judged_again_when_it_no_longer_is():
    spec = parse_job(
        {"name": "db", "source": {"type": "local", "path": "/b"}, "schedule": {"every": "1d"}}
    )
    now = T0
    newest = ArtifactFact("db.sql.gz", 1000, now + 2 * HOUR)
    evaluation = evaluate(spec, [newest], now=now, created_at=CREATED)
    assert [reason.code for reason in evaluation.reasons] == ["future_mtime"]
    moment = next_check(spec, evaluation, None, now)
    assert moment == newest.mtime - FUTURE_TOLERANCE
    later = evaluate(spec, [newest], now=moment, created_at=CREATED)
    assert later.reasons == ()


def test_paused_or_unlisted_jobs_have_no_next_check():
    spec = heartbeat("10m", paused=True)
    facts = run_facts(runs_of(pings("start")))
    evaluation = evaluate(spec, [], now=T0, created_at=CREATED, runs=facts)
    assert next_check(spec, evaluation, facts, T0) is None
