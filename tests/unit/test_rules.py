"""The pure evaluation rules, each at its boundary (service/core/rules.py)."""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pytest

from service.core.jobspec import JobSpec, parse_job
from service.core.rules import (
    FUTURE_TOLERANCE,
    ArtifactFact,
    Evaluation,
    Reason,
    RunFacts,
    being_written,
    evaluate,
    next_check,
    next_deadline,
    worst_status,
)

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MIB = 1024**2
GIB = 1024**3

SOURCE = {"type": "local", "path": "/backups/db", "pattern": "*.sql.gz"}
# The reference backup: written at 03:00 UTC; with `every: 1d` and `grace: 1h` it is
# fresh until T0 + 25 h.
T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def job(**fields: Any) -> JobSpec:
    """A daily job on /backups/db with a 1 h grace; `fields` override the declaration."""
    data: dict[str, Any] = {
        "name": "db-nightly",
        "source": SOURCE,
        "schedule": {"every": 86400},
        "grace": 3600,
    }
    data.update(fields)
    return parse_job(data)


def art(mtime: datetime, size: int = 1000, path: str | None = None) -> ArtifactFact:
    return ArtifactFact(path or f"db-{mtime:%Y-%m-%dT%H%M%S}.sql.gz", size, mtime)


def series(sizes: Sequence[int], *, newest: datetime = T0) -> list[ArtifactFact]:
    """One artifact a day, oldest first, the last one at `newest`."""
    count = len(sizes)
    return [art(newest - (count - 1 - i) * DAY, size) for i, size in enumerate(sizes)]


def run(
    spec: JobSpec,
    artifacts: Sequence[ArtifactFact],
    now: datetime = T0 + HOUR,
    **kwargs: Any,
) -> Evaluation:
    # Shuffled: evaluate() must not depend on the order the source listed the files in.
    shuffled = list(artifacts)
    random.Random(len(shuffled)).shuffle(shuffled)
    kwargs.setdefault("created_at", CREATED)
    return evaluate(spec, shuffled, now=now, **kwargs)


def codes(evaluation: Evaluation) -> list[str]:
    return [reason.code for reason in evaluation.reasons]


def reason(evaluation: Evaluation, code: str) -> Reason:
    (found,) = [r for r in evaluation.reasons if r.code == code]
    return found


# --- freshness: late ------------------------------------------------------------------------

CRON_UTC = {"cron": "0 2 * * *"}
CRON_PARIS = {"cron": "0 2 * * *", "timezone": "Europe/Paris"}


@pytest.mark.parametrize(
    ("schedule", "grace", "mtime", "deadline"),
    [
        pytest.param({"every": 86400}, 3600, T0, T0 + 25 * HOUR, id="every-1d-grace-1h"),
        pytest.param({"every": "1d"}, 0, T0, T0 + DAY, id="every-no-grace"),
        pytest.param({"every": 900}, 60, T0, T0 + 16 * MINUTE, id="every-15m"),
        pytest.param(
            CRON_UTC,
            3600,
            datetime(2026, 11, 20, 2, 5, tzinfo=UTC),
            datetime(2026, 11, 21, 3, 0, tzinfo=UTC),
            id="cron-utc-written-after-fire",
        ),
        pytest.param(
            CRON_UTC,
            3600,
            datetime(2026, 11, 20, 2, 0, tzinfo=UTC),
            datetime(2026, 11, 21, 3, 0, tzinfo=UTC),
            id="cron-utc-written-at-fire-time-waits-next-fire",
        ),
        pytest.param(
            CRON_UTC,
            3600,
            datetime(2026, 11, 20, 1, 59, 59, tzinfo=UTC),
            datetime(2026, 11, 20, 3, 0, tzinfo=UTC),
            id="cron-utc-written-before-fire",
        ),
        pytest.param(
            CRON_PARIS,
            3600,
            datetime(2026, 11, 20, 1, 10, tzinfo=UTC),
            datetime(2026, 11, 21, 2, 0, tzinfo=UTC),
            id="cron-paris-winter",
        ),
        pytest.param(
            CRON_PARIS,
            3600,
            datetime(2026, 7, 20, 0, 10, tzinfo=UTC),
            datetime(2026, 7, 21, 1, 0, tzinfo=UTC),
            id="cron-paris-summer",
        ),
    ],
)
@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        pytest.param(-SECOND, [], id="before"),
        pytest.param(timedelta(0), [], id="at-deadline-not-late"),
        pytest.param(SECOND, ["late"], id="one-second-after-late"),
    ],
)
def test_late_boundary(
    schedule: dict[str, Any],
    grace: int,
    mtime: datetime,
    deadline: datetime,
    offset: timedelta,
    expected: list[str],
) -> None:
    evaluation = run(job(schedule=schedule, grace=grace), [art(mtime)], now=deadline + offset)
    assert codes(evaluation) == expected
    assert evaluation.status == ("critical" if expected else "ok")
    assert evaluation.deadline == deadline
    assert evaluation.deadline.tzinfo is UTC


@pytest.mark.parametrize(
    ("schedule", "mtime", "now", "message"),
    [
        pytest.param(
            CRON_PARIS,
            datetime(2026, 11, 20, 1, 0, tzinfo=UTC),
            datetime(2026, 11, 21, 3, 0, tzinfo=UTC),
            "newest backup db-2026-11-20.sql.gz is 26 h old; "
            "a new one was due by 2026-11-21 03:00 CET",
            id="cron-in-schedule-zone",
        ),
        pytest.param(
            {"every": 86400},
            datetime(2026, 11, 20, 1, 0, tzinfo=UTC),
            datetime(2026, 11, 23, 5, 0, tzinfo=UTC),
            "newest backup db-2026-11-20.sql.gz is 3 d 4 h old; "
            "a new one was due by 2026-11-21 02:00 UTC",
            id="every-in-utc",
        ),
    ],
)
def test_late_message(
    schedule: dict[str, Any], mtime: datetime, now: datetime, message: str
) -> None:
    evaluation = run(job(schedule=schedule), [art(mtime, path="db-2026-11-20.sql.gz")], now=now)
    assert evaluation.reasons == (Reason("late", "critical", message),)


def test_late_uses_newest_not_older_artifacts() -> None:
    artifacts = [*series([1000] * 5, newest=T0 - 3 * DAY), art(T0)]
    assert codes(run(job(), artifacts, now=T0 + 25 * HOUR)) == []


# --- no artifact: pending, then missing -----------------------------------------------------

JOB_CREATED = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "pending_deadline", "shown"),
    [
        pytest.param(
            {"every": 86400},
            datetime(2026, 11, 21, 11, 0, tzinfo=UTC),
            "2026-11-21 11:00 UTC",
            id="every",
        ),
        pytest.param(
            CRON_PARIS,
            datetime(2026, 11, 21, 2, 0, tzinfo=UTC),
            "2026-11-21 03:00 CET",
            id="cron-paris",
        ),
        pytest.param(
            CRON_UTC,
            datetime(2026, 11, 21, 3, 0, tzinfo=UTC),
            "2026-11-21 03:00 UTC",
            id="cron-utc",
        ),
    ],
)
@pytest.mark.parametrize(
    ("offset", "status"),
    [
        pytest.param(-DAY, "pending", id="just-created"),
        pytest.param(timedelta(0), "pending", id="at-deadline-pending"),
        pytest.param(SECOND, "critical", id="one-second-after-missing"),
    ],
)
def test_pending_then_missing(
    schedule: dict[str, Any],
    pending_deadline: datetime,
    shown: str,
    offset: timedelta,
    status: str,
) -> None:
    evaluation = run(
        job(schedule=schedule, rules={"min_count": 7}),
        [],
        now=pending_deadline + offset,
        created_at=JOB_CREATED,
    )
    assert evaluation.status == status
    assert evaluation.deadline == pending_deadline
    assert evaluation.newest is None
    if status == "pending":
        assert evaluation.reasons == ()
    else:
        # min_count is not reported on top of `missing`: one problem, one reason.
        assert codes(evaluation) == ["missing"]
        message = reason(evaluation, "missing").message
        assert (
            message
            == f"no backup matching *.sql.gz in /backups/db; the first one was due by {shown}"
        )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"source": None},
            "no backup has been reported; the first one was due by 2026-11-21 11:00 UTC",
            id="heartbeat-job-without-source",
        ),
        pytest.param(
            {"source": {**SOURCE, "recursive": True}},
            "no backup matching *.sql.gz in /backups/db or its subdirectories; "
            "the first one was due by 2026-11-21 11:00 UTC",
            id="recursive-source",
        ),
    ],
)
def test_missing_message(fields: dict[str, Any], expected: str) -> None:
    evaluation = run(job(**fields), [], now=T0 + 10 * DAY, created_at=JOB_CREATED)
    assert evaluation.reasons == (Reason("missing", "critical", expected),)


def test_job_without_source_is_judged_on_its_reports() -> None:
    spec = job(source=None)
    assert run(spec, [art(T0, path="heartbeat")]).status == "ok"
    assert codes(run(spec, [art(T0, path="heartbeat")], now=T0 + 2 * DAY)) == ["late"]


# --- future mtime ---------------------------------------------------------------------------

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ahead", "expected", "deadline"),
    [
        pytest.param(
            FUTURE_TOLERANCE, [], NOW + FUTURE_TOLERANCE + 25 * HOUR, id="5-min-ahead-tolerated"
        ),
        pytest.param(
            FUTURE_TOLERANCE + SECOND,
            ["future_mtime"],
            NOW + 25 * HOUR,
            id="beyond-5-min-freshness-from-now",
        ),
        pytest.param(2 * HOUR, ["future_mtime"], NOW + 25 * HOUR, id="2-h-ahead"),
    ],
)
def test_future_mtime(ahead: timedelta, expected: list[str], deadline: datetime) -> None:
    # An older, long overdue artifact too: the future one is the newest, so not late.
    artifacts = [art(NOW - 10 * DAY), art(NOW + ahead)]
    evaluation = run(job(), artifacts, now=NOW)
    assert codes(evaluation) == expected
    assert evaluation.status == ("warning" if expected else "ok")
    assert evaluation.deadline == deadline
    assert evaluation.newest == artifacts[1]


def test_future_mtime_message() -> None:
    newest = art(datetime(2026, 11, 22, 10, 0, tzinfo=UTC), path="db-2026-11-22.sql.gz")
    message = reason(run(job(), [newest], now=NOW), "future_mtime").message
    assert "db-2026-11-22.sql.gz" in message
    assert "(2026-11-22 10:00 UTC, 2 h ahead)" in message
    assert "check the clock" in message


def test_future_mtime_cron_deadline_from_now() -> None:
    spec = job(schedule=CRON_PARIS)
    evaluation = run(spec, [art(NOW + DAY)], now=NOW)
    # Next 02:00 Paris after 2026-11-22 08:00 UTC is 2026-11-23 01:00 UTC, plus 1 h grace.
    assert evaluation.deadline == datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    assert "(2026-11-23 09:00 CET, 24 h ahead)" in reason(evaluation, "future_mtime").message


def test_future_mtime_never_becomes_late_while_in_the_future() -> None:
    # Were the future mtime the base, this job would be silent for ten days.
    spec = job()
    future = art(NOW + 10 * DAY)
    assert codes(run(spec, [future], now=NOW)) == ["future_mtime"]
    assert run(spec, [future], now=NOW).deadline == NOW + 25 * HOUR


# --- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "size", "expected"),
    [
        pytest.param({}, 0, ["too_small"], id="default-rejects-empty"),
        pytest.param({}, 1, [], id="default-accepts-one-byte"),
        pytest.param({"min_size": 0}, 0, [], id="min-size-0-accepts-empty"),
        pytest.param({"min_size": "1MiB"}, MIB - 1, ["too_small"], id="one-byte-below-min"),
        pytest.param({"min_size": "1MiB"}, MIB, [], id="equal-to-min-ok"),
        pytest.param({"max_size": "2GiB"}, 2 * GIB, [], id="equal-to-max-ok"),
        pytest.param({"max_size": "2GiB"}, 2 * GIB + 1, ["too_large"], id="one-byte-above-max"),
        pytest.param({"min_size": 10, "max_size": 10}, 10, [], id="min-equals-max"),
    ],
)
def test_size_limits(rules: dict[str, Any], size: int, expected: list[str]) -> None:
    evaluation = run(job(rules=rules), [art(T0, size)])
    assert codes(evaluation) == expected
    severity = {"too_small": "critical", "too_large": "warning"}
    assert [r.severity for r in evaluation.reasons] == [severity[c] for c in expected]


@pytest.mark.parametrize(
    ("rules", "size", "message"),
    [
        pytest.param({}, 0, "newest backup x.sql.gz is empty (0 bytes)", id="empty-default"),
        pytest.param(
            {"min_size": "1MiB"}, 0, "newest backup x.sql.gz is empty (0 bytes)", id="empty-min"
        ),
        pytest.param(
            {"min_size": "1MiB"},
            12,
            "newest backup x.sql.gz is 12 B, below the minimum of 1.0 MiB",
            id="small",
        ),
        pytest.param(
            {"min_size": 1500},
            1499,
            "newest backup x.sql.gz is 1.5 KiB (1499 bytes), below the minimum of "
            "1.5 KiB (1500 bytes)",
            id="small-exact-bytes-when-rounding-hides-the-difference",
        ),
        pytest.param(
            {"max_size": "2GiB"},
            int(3.2 * GIB),
            "newest backup x.sql.gz is 3.2 GiB, above the maximum of 2.0 GiB",
            id="large",
        ),
        pytest.param(
            {"max_size": "2GiB"},
            2 * GIB + 1,
            "newest backup x.sql.gz is 2.0 GiB (2147483649 bytes), above the maximum of "
            "2.0 GiB (2147483648 bytes)",
            id="large-exact-bytes",
        ),
    ],
)
def test_size_messages(rules: dict[str, Any], size: int, message: str) -> None:
    (found,) = run(job(rules=rules), [art(T0, size, path="x.sql.gz")]).reasons
    assert found.message == message


@pytest.mark.parametrize(
    ("max_drop", "previous", "newest", "expected"),
    [
        pytest.param(50, [1000] * 3, 500, [], id="drop-exactly-at-limit-ok"),
        pytest.param(50, [1000] * 3, 499, ["size_drop"], id="one-byte-beyond-limit"),
        pytest.param("50%", [1000] * 3, 499, ["size_drop"], id="percent-string"),
        pytest.param(50, [1000] * 2, 1, [], id="2-previous-not-checked"),
        pytest.param(50, [1000] * 3, 1, ["size_drop"], id="3-previous-checked"),
        pytest.param(50, [100, 200, 300, 400], 125, [], id="even-count-median-250-boundary"),
        pytest.param(50, [400, 100, 300, 200], 124, ["size_drop"], id="even-count-median-below"),
        pytest.param(50, [10**6] + [100] * 5 + [1000] * 5, 275, [], id="window-ignores-11th"),
        pytest.param(
            50, [10**6] + [100] * 5 + [1000] * 5, 274, ["size_drop"], id="window-median-550"
        ),
        pytest.param(0, [1000] * 3, 999, ["size_drop"], id="0-percent-any-shrink"),
        pytest.param(0, [1000] * 3, 1000, [], id="0-percent-same-size-ok"),
        pytest.param(100, [1000] * 3, 1, [], id="100-percent-never"),
        # 10 * (1 - 0.7) is 3.0000000000000004 in floats: exact arithmetic keeps 3 at the limit.
        pytest.param(70, [10] * 3, 3, [], id="exact-arithmetic-at-limit"),
        pytest.param(70, [10] * 3, 2, ["size_drop"], id="exact-arithmetic-beyond"),
        pytest.param(None, [1000] * 3, 1, [], id="rule-unset"),
        pytest.param(50, [1000] * 3, 5000, [], id="growth-is-not-a-drop"),
    ],
)
def test_size_drop(
    max_drop: float | str | None, previous: list[int], newest: int, expected: list[str]
) -> None:
    evaluation = run(job(rules={"max_size_drop": max_drop}), series([*previous, newest]))
    assert codes(evaluation) == expected
    assert evaluation.status == ("warning" if expected else "ok")


def test_size_drop_message() -> None:
    artifacts = series([680 * MIB] * 12 + [120 * MIB])
    evaluation = run(job(rules={"max_size_drop": "50%"}), artifacts)
    newest = artifacts[-1].path
    assert evaluation.reasons == (
        Reason(
            "size_drop",
            "warning",
            f"newest backup {newest} is 120.0 MiB, 82 % smaller than the median of the "
            "previous 10 (680.0 MiB); the limit is a 50 % drop",
        ),
    )


@pytest.mark.parametrize(
    ("max_drop", "previous", "newest", "fragments"),
    [
        pytest.param(
            50, [1000] * 3, 400, ["60 % smaller", "previous 3 (1000 B)", "a 50 % drop"], id="odd"
        ),
        pytest.param(
            12.5,
            [100, 200, 300, 400],
            100,
            ["60 %", "previous 4 (250 B)", "a 12.5 % drop"],
            id="fractional-limit",
        ),
    ],
)
def test_size_drop_message_numbers(
    max_drop: float, previous: list[int], newest: int, fragments: list[str]
) -> None:
    evaluation = run(job(rules={"max_size_drop": max_drop}), series([*previous, newest]))
    message = reason(evaluation, "size_drop").message
    for fragment in fragments:
        assert fragment in message


def test_size_drop_percent_never_reads_as_within_the_limit() -> None:
    # 50.1 % rounds to "50 %", which would read as exactly the accepted limit.
    evaluation = run(job(rules={"max_size_drop": 50}), series([1000] * 3 + [499]))
    assert "50.1 % smaller" in reason(evaluation, "size_drop").message


@pytest.mark.parametrize(
    ("previous", "newest", "fragment"),
    [
        pytest.param([2_000_000] * 3, 10_000, "99.5 % smaller", id="truncated-is-not-empty"),
        pytest.param([10**12] * 3, 1, "99.9999999999 % smaller", id="one-byte-of-a-terabyte"),
        pytest.param([2_000_000] * 3, 0, "100 % smaller", id="empty-is-100"),
        pytest.param([10**16] * 3, 1, "over 99.999999999999 % smaller", id="one-byte-of-10-pb"),
    ],
)
def test_size_drop_percent_reads_as_100_only_for_an_empty_file(
    previous: list[int], newest: int, fragment: str
) -> None:
    # A dump cut at 0.5 % of its size must not read as an empty file.
    evaluation = run(job(rules={"max_size_drop": 50}), series([*previous, newest]))
    assert fragment in reason(evaluation, "size_drop").message


def test_size_drop_previous_in_mtime_then_path_order() -> None:
    # One mtime for all: the order is by path, so "e" is the newest and "a" to "d" the previous.
    artifacts = [
        art(T0, 100, "a"),
        art(T0, 1000, "b"),
        art(T0, 1000, "c"),
        art(T0, 1000, "d"),
        art(T0, 400, "e"),
    ]
    spec = job(rules={"max_size_drop": 50})
    for order in (artifacts, artifacts[::-1]):
        evaluation = evaluate(spec, order, now=T0 + HOUR, created_at=CREATED)
        assert evaluation.newest == artifacts[-1]
        assert codes(evaluation) == ["size_drop"]  # median of 100, 1000, 1000, 1000 is 1000


# --- count ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_count", "present", "message"),
    [
        pytest.param(3, 2, "only 2 backups present; at least 3 expected", id="below"),
        pytest.param(3, 3, None, id="equal-ok"),
        pytest.param(3, 4, None, id="above-ok"),
        pytest.param(2, 1, "only 1 backup present; at least 2 expected", id="singular"),
        pytest.param(None, 1, None, id="rule-unset"),
    ],
)
def test_too_few(min_count: int | None, present: int, message: str | None) -> None:
    evaluation = run(job(rules={"min_count": min_count}), series([1000] * present))
    expected = () if message is None else (Reason("too_few", "warning", message),)
    assert evaluation.reasons == expected


# --- paused, source errors, partial listings ------------------------------------------------


@pytest.mark.parametrize(
    ("artifacts", "kwargs"),
    [
        pytest.param([], {"now": T0 + 100 * DAY}, id="long-missing"),
        pytest.param([art(T0, 0)], {"now": T0 + 100 * DAY}, id="late-and-empty"),
        pytest.param([art(T0)], {"source_error": "cannot read /backups/db: gone"}, id="error"),
        pytest.param([art(T0)], {"listing_warnings": ["cannot read /x"]}, id="listing"),
        pytest.param([art(T0 + DAY)], {}, id="future"),
    ],
)
def test_paused_wins_over_everything(artifacts: list[ArtifactFact], kwargs: dict[str, Any]) -> None:
    evaluation = run(job(paused=True, rules={"min_count": 5}), artifacts, **kwargs)
    assert evaluation.status == "paused"
    assert evaluation.reasons == ()
    assert evaluation.deadline is None
    # Still shown: what was there when the job was paused is useful on the dashboard.
    assert evaluation.newest == (artifacts[0] if artifacts else None)


def test_source_error_alone() -> None:
    error = "cannot read /backups/db: [Errno 2] No such file or directory"
    evaluation = run(
        job(rules={"min_count": 5, "max_size": 1}),
        [art(T0 - 10 * DAY, 0)],
        now=T0,
        source_error=error,
        listing_warnings=["cannot read /backups/db/old: [Errno 13] Permission denied"],
    )
    assert evaluation == Evaluation(
        status="unknown",
        reasons=(Reason("source_error", "unknown", error),),
        deadline=None,
        newest=None,
    )


def test_source_error_without_artifacts_is_not_missing() -> None:
    evaluation = run(job(), [], now=T0 + 100 * DAY, source_error="timed out after 30 s")
    assert [(r.code, r.message) for r in evaluation.reasons] == [
        ("source_error", "timed out after 30 s")
    ]


WARNINGS = [f"cannot read /backups/db/d{i}: [Errno 13] Permission denied" for i in range(5)]


@pytest.mark.parametrize(
    ("warnings", "shown", "hidden", "more"),
    [
        pytest.param(WARNINGS[:1], WARNINGS[:1], [], None, id="one"),
        pytest.param(WARNINGS[:3], WARNINGS[:3], [], None, id="three-all-shown"),
        pytest.param(WARNINGS[:4], WARNINGS[:3], WARNINGS[3:], "(and 1 more)", id="four"),
        pytest.param(WARNINGS, WARNINGS[:3], WARNINGS[3:], "(and 2 more)", id="five"),
    ],
)
def test_listing_warnings_message(
    warnings: list[str], shown: list[str], hidden: list[str], more: str | None
) -> None:
    evaluation = run(job(), [art(T0)], listing_warnings=warnings)
    assert evaluation.status == "unknown"
    assert evaluation.deadline == T0 + 25 * HOUR
    message = reason(evaluation, "source_error").message
    assert "; ".join(shown) in message
    assert all(text not in message for text in hidden)
    if more is None:
        assert "more)" not in message
    else:
        assert message.endswith(more)


@pytest.mark.parametrize(
    ("artifacts", "now", "expected_codes", "status"),
    [
        pytest.param(series([1000] * 3), T0 + HOUR, ["source_error"], "unknown", id="otherwise-ok"),
        pytest.param(
            series([1000] * 3), T0 + 2 * DAY, ["source_error", "late"], "critical", id="with-late"
        ),
        pytest.param(
            series([1000, 1000, 0]),
            T0 + HOUR,
            ["source_error", "too_small"],
            "critical",
            id="with-empty",
        ),
        pytest.param(
            series([1000] * 2),
            T0 + HOUR,
            ["source_error", "too_few"],
            "warning",
            id="warning-beats-unknown",
        ),
        pytest.param([], CREATED + HOUR, ["source_error"], "unknown", id="nothing-found-yet"),
        pytest.param(
            [], CREATED + 2 * DAY, ["source_error", "missing"], "critical", id="with-missing"
        ),
    ],
)
def test_listing_warnings_with_other_reasons(
    artifacts: list[ArtifactFact], now: datetime, expected_codes: list[str], status: str
) -> None:
    evaluation = run(job(rules={"min_count": 3}), artifacts, now=now, listing_warnings=WARNINGS[:1])
    assert codes(evaluation) == expected_codes
    assert evaluation.status == status


def test_listing_warnings_keep_the_pending_deadline() -> None:
    evaluation = run(job(), [], now=CREATED + HOUR, listing_warnings=WARNINGS[:1])
    # Nothing seen in a partial listing may be in the unreadable part: unknown, not pending.
    assert evaluation.status == "unknown"
    assert evaluation.deadline == CREATED + 25 * HOUR


# --- severities, status and order -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "artifacts", "kwargs", "expected_codes", "status"),
    [
        pytest.param(
            {"rules": {"min_count": 10, "max_size_drop": 50}},
            [*series([1000] * 3, newest=T0 - DAY), art(T0, 0)],
            {"now": T0 + 2 * DAY, "listing_warnings": ["w"]},
            ["source_error", "late", "too_small", "size_drop", "too_few"],
            "critical",
            id="critical-order",
        ),
        pytest.param(
            {"rules": {"min_count": 10, "max_size_drop": 50, "max_size": 100}},
            [*series([1000] * 3, newest=T0 - DAY), art(T0 + HOUR, 200)],
            {"now": T0, "listing_warnings": ["w"]},
            ["source_error", "future_mtime", "too_large", "size_drop", "too_few"],
            "warning",
            id="warning-order",
        ),
        pytest.param(
            {"rules": {"max_size": 100, "min_count": 2}},
            [art(T0, 200)],
            {},
            ["too_large", "too_few"],
            "warning",
            id="warnings-only",
        ),
        pytest.param({}, [art(T0)], {}, [], "ok", id="ok"),
    ],
)
def test_status_is_worst_severity_and_reasons_are_ordered(
    fields: dict[str, Any],
    artifacts: list[ArtifactFact],
    kwargs: dict[str, Any],
    expected_codes: list[str],
    status: str,
) -> None:
    evaluation = run(job(**fields), artifacts, **kwargs)
    assert codes(evaluation) == expected_codes
    assert evaluation.status == status


@pytest.mark.parametrize(
    ("code", "severity"),
    [
        ("source_error", "unknown"),
        ("missing", "critical"),
        ("late", "critical"),
        ("future_mtime", "warning"),
        ("too_small", "critical"),
        ("too_large", "warning"),
        ("size_drop", "warning"),
        ("too_few", "warning"),
    ],
)
def test_severity_of_each_code(code: str, severity: str) -> None:
    spec = job(rules={"min_count": 10, "max_size_drop": 50, "max_size": 100})
    cases = {
        "source_error": run(spec, [art(T0)], source_error="x"),
        "missing": run(spec, [], now=CREATED + 100 * DAY),
        "late": run(spec, [art(T0)], now=T0 + 100 * DAY),
        "future_mtime": run(spec, [art(T0 + DAY)]),
        "too_small": run(spec, [art(T0, 0)]),
        "too_large": run(spec, [art(T0, 101)]),
        "size_drop": run(spec, series([100] * 3 + [10])),
    }
    cases["too_few"] = cases["too_large"]
    assert reason(cases[code], code).severity == severity


def test_reason_as_dict() -> None:
    assert Reason("late", "critical", "m").as_dict() == {
        "code": "late",
        "severity": "critical",
        "message": "m",
    }


# --- newest, time zones of inputs and outputs, naive datetimes -------------------------------


def test_newest_is_max_by_mtime_then_path() -> None:
    artifacts = [art(T0, path="b"), art(T0, path="a"), art(T0 - DAY, path="z")]
    for order in itertools.permutations(artifacts):
        assert evaluate(job(), order, now=T0, created_at=CREATED).newest == artifacts[0]


def test_aware_non_utc_inputs_give_utc_outputs() -> None:
    newest = ArtifactFact("x", 1000, T0.astimezone(PARIS))
    evaluation = evaluate(job(), [newest], now=(T0 + HOUR).astimezone(NEW_YORK), created_at=CREATED)
    assert evaluation.status == "ok"
    assert evaluation.deadline == T0 + 25 * HOUR
    assert evaluation.deadline is not None
    assert evaluation.deadline.tzinfo is UTC
    assert evaluation.newest == ArtifactFact("x", 1000, T0)
    assert evaluation.newest is not None
    assert evaluation.newest.mtime.tzinfo is UTC


@pytest.mark.parametrize(
    ("kwargs", "artifacts", "name"),
    [
        pytest.param({"now": T0.replace(tzinfo=None)}, [], "now", id="now"),
        pytest.param({"created_at": CREATED.replace(tzinfo=None)}, [], "created_at", id="created"),
        pytest.param({}, [art(T0.replace(tzinfo=None), path="x")], "mtime of x", id="mtime"),
    ],
)
def test_naive_datetimes_are_rejected(
    kwargs: dict[str, Any], artifacts: list[ArtifactFact], name: str
) -> None:
    arguments: dict[str, Any] = {"now": T0, "created_at": CREATED, **kwargs}
    with pytest.raises(ValueError, match=name):
        evaluate(job(), artifacts, **arguments)


def test_next_deadline_rejects_naive() -> None:
    with pytest.raises(ValueError, match="after"):
        next_deadline(job().schedule, 0, T0.replace(tzinfo=None))


# --- DST ------------------------------------------------------------------------------------


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "zone", "after", "deadline"),
    [
        # Europe/Paris, spring forward 2026-03-29: 02:00 CET -> 03:00 CEST, 02:30 never happens.
        pytest.param(
            "30 2 * * *",
            "Europe/Paris",
            utc(2026, 3, 27, 12),
            utc(2026, 3, 28, 1, 30),
            id="paris-day-before-spring",
        ),
        pytest.param(
            "30 2 * * *",
            "Europe/Paris",
            utc(2026, 3, 28, 12),
            utc(2026, 3, 29, 1, 0),
            id="paris-skipped-0230-fires-0300-cest",
        ),
        pytest.param(
            "30 2 * * *",
            "Europe/Paris",
            utc(2026, 3, 29, 1, 0),
            utc(2026, 3, 30, 0, 30),
            id="paris-at-the-0300-fire-next-day-cest",
        ),
        # Europe/Paris, fall back 2026-10-25: 03:00 CEST -> 02:00 CET, 02:30 happens twice.
        pytest.param(
            "30 2 * * *",
            "Europe/Paris",
            utc(2026, 10, 24, 12),
            utc(2026, 10, 25, 0, 30),
            id="paris-ambiguous-first-occurrence",
        ),
        pytest.param(
            "30 2 * * *",
            "Europe/Paris",
            utc(2026, 10, 25, 0, 30),
            utc(2026, 10, 26, 1, 30),
            id="paris-at-first-occurrence-not-the-second",
        ),
        pytest.param(
            "30 2 * * *",
            "Europe/Paris",
            utc(2026, 10, 25, 0, 45),
            utc(2026, 10, 26, 1, 30),
            id="paris-between-occurrences",
        ),
        pytest.param(
            "30 2 * * *",
            "Europe/Paris",
            utc(2026, 10, 25, 1, 15),
            utc(2026, 10, 26, 1, 30),
            id="paris-second-pass-before-0230-never-past",
        ),
        pytest.param(
            "30 2 * * *",
            "Europe/Paris",
            utc(2026, 10, 25, 1, 45),
            utc(2026, 10, 26, 1, 30),
            id="paris-after-both",
        ),
        # America/New_York, spring forward 2026-03-08: 02:00 EST -> 03:00 EDT.
        pytest.param(
            "30 2 * * *",
            "America/New_York",
            utc(2026, 3, 7, 12),
            utc(2026, 3, 8, 7, 0),
            id="ny-skipped-0230-fires-0300-edt",
        ),
        pytest.param(
            "30 2 * * *",
            "America/New_York",
            utc(2026, 3, 8, 7, 0),
            utc(2026, 3, 9, 6, 30),
            id="ny-next-day-edt",
        ),
        pytest.param(
            "30 2 * * *",
            "America/New_York",
            utc(2026, 3, 6, 12),
            utc(2026, 3, 7, 7, 30),
            id="ny-day-before-spring-est",
        ),
        # America/New_York, fall back 2026-11-01: 02:00 EDT -> 01:00 EST; 02:30 is unambiguous,
        # 01:30 happens twice.
        pytest.param(
            "30 2 * * *",
            "America/New_York",
            utc(2026, 10, 31, 12),
            utc(2026, 11, 1, 7, 30),
            id="ny-fall-0230-est",
        ),
        pytest.param(
            "30 1 * * *",
            "America/New_York",
            utc(2026, 10, 31, 12),
            utc(2026, 11, 1, 5, 30),
            id="ny-ambiguous-0130-first-occurrence",
        ),
        pytest.param(
            "30 1 * * *",
            "America/New_York",
            utc(2026, 11, 1, 5, 30),
            utc(2026, 11, 2, 6, 30),
            id="ny-at-first-0130-not-the-second",
        ),
        pytest.param(
            "30 1 * * *",
            "America/New_York",
            utc(2026, 11, 1, 6, 0),
            utc(2026, 11, 2, 6, 30),
            id="ny-second-pass-before-0130-never-past",
        ),
        # Hourly crons are not wall-clock pinned: every real hour fires, both 01:30s included.
        pytest.param(
            "30 * * * *",
            "America/New_York",
            utc(2026, 11, 1, 5, 45),
            utc(2026, 11, 1, 6, 30),
            id="ny-hourly-fires-in-repeated-hour",
        ),
        pytest.param(
            "30 * * * *",
            "Europe/Paris",
            utc(2026, 3, 29, 0, 45),
            utc(2026, 3, 29, 1, 30),
            id="paris-hourly-across-gap",
        ),
    ],
)
def test_cron_deadline_across_dst(
    cron: str, zone: str, after: datetime, deadline: datetime
) -> None:
    schedule = job(schedule={"cron": cron, "timezone": zone}).schedule
    assert next_deadline(schedule, 0, after) == deadline
    assert next_deadline(schedule, 3600, after) == deadline + HOUR


@pytest.mark.parametrize(
    ("mtime", "now", "expected_codes", "shown"),
    [
        pytest.param(utc(2026, 3, 28, 12), utc(2026, 3, 29, 2, 0), [], "", id="spring-at-deadline"),
        pytest.param(
            utc(2026, 3, 28, 12),
            utc(2026, 3, 29, 2, 0, 1),
            ["late"],
            "due by 2026-03-29 04:00 CEST",
            id="spring-late",
        ),
        pytest.param(
            utc(2026, 10, 24, 12), utc(2026, 10, 25, 1, 30), [], "", id="fall-at-deadline"
        ),
        pytest.param(
            utc(2026, 10, 24, 12),
            utc(2026, 10, 25, 1, 30, 1),
            ["late"],
            "due by 2026-10-25 02:30 CET",
            id="fall-late-second-0230-is-cet",
        ),
    ],
)
def test_cron_dst_in_evaluation(
    mtime: datetime, now: datetime, expected_codes: list[str], shown: str
) -> None:
    spec = job(schedule={"cron": "30 2 * * *", "timezone": "Europe/Paris"})
    evaluation = run(spec, [art(mtime)], now=now)
    assert codes(evaluation) == expected_codes
    if shown:
        assert shown in reason(evaluation, "late").message


@pytest.mark.parametrize(
    "mtime",
    [
        pytest.param(utc(2026, 3, 28, 12), id="paris-spring"),
        pytest.param(utc(2026, 10, 24, 12), id="paris-fall"),
        pytest.param(utc(2026, 3, 7, 12), id="ny-spring"),
        pytest.param(utc(2026, 10, 31, 12), id="ny-fall"),
    ],
)
def test_every_is_pure_seconds_across_dst(mtime: datetime) -> None:
    schedule = job(schedule={"every": "1d"}).schedule
    assert next_deadline(schedule, 0, mtime) == mtime + DAY
    assert next_deadline(schedule, 90, mtime) == mtime + DAY + 90 * SECOND


def _wall_time_exists(wall: datetime, zone: ZoneInfo) -> bool:
    aware = wall.replace(tzinfo=zone)
    return aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


@functools.cache
def _first_0200(zone: ZoneInfo, day: date) -> datetime:
    """02:00 of `day` in UTC: its first occurrence, or the first real minute after it if skipped."""
    wall = datetime.combine(day, time(2, 0))
    while not _wall_time_exists(wall, zone):
        wall += MINUTE
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _expected_0200(after: datetime, zone: ZoneInfo) -> datetime:
    """Oracle for "0 2 * * *", found by walking the calendar: the first 02:00 after `after`."""
    day: date = after.astimezone(zone).date() - DAY
    while _first_0200(zone, day) <= after:
        day += DAY
    return _first_0200(zone, day)


def _bases_for(zone: ZoneInfo) -> list[datetime]:
    """A few ordinary instants, plus every 50 minutes (varied minutes) around each 2026 offset
    change (DST transitions, but also zones changing their standard offset)."""
    bases = [utc(2026, 1, 15, h) for h in (0, 6, 12, 18)] + [utc(2026, 7, 15, 1, 30)]
    noon = [utc(2026, 1, 1, 12) + i * DAY for i in range(366)]
    offsets = [moment.astimezone(zone).utcoffset() for moment in noon]
    for i in range(1, len(noon)):
        if offsets[i] != offsets[i - 1]:
            start = noon[i - 1] - 12 * HOUR
            bases += [start + k * 50 * MINUTE for k in range(48 * 60 // 50)]
    return bases


def test_0200_daily_deadline_is_right_in_every_zone() -> None:
    mismatches = []
    for name in sorted(available_timezones()):
        zone = ZoneInfo(name)
        schedule = job(schedule={"cron": "0 2 * * *", "timezone": name}).schedule
        for after in _bases_for(zone):
            got, expected = next_deadline(schedule, 0, after), _expected_0200(after, zone)
            if got != expected:
                mismatches.append(f"{name} after {after}: {got} != {expected}")
    assert mismatches == []


# --- worst_status ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "worst"),
    [
        pytest.param([], "ok", id="empty"),
        pytest.param(["ok"], "ok", id="ok"),
        pytest.param(["pending", "paused", "ok"], "ok", id="pending-paused-count-as-ok"),
        pytest.param(["paused", "unknown"], "unknown", id="unknown-over-ok"),
        pytest.param(["unknown", "warning", "ok"], "warning", id="warning-over-unknown"),
        pytest.param(["warning", "critical", "unknown"], "critical", id="critical-over-all"),
        pytest.param(iter(["ok", "critical"]), "critical", id="any-iterable"),
    ],
)
def test_worst_status(statuses: Any, worst: str) -> None:
    assert worst_status(statuses) == worst


def test_worst_status_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="'broken'"):
        worst_status(["ok", "broken"])


# --- count: the caller passes only the newest artifacts ---------------------------------------


def _fifty(newest_size: int = 1000, older_size: int = 1000) -> list[ArtifactFact]:
    """50 daily artifacts, the newest at T0; the 10 before it weigh 1000 bytes each."""
    return series([older_size] * 39 + [1000] * 10 + [newest_size])


@pytest.mark.parametrize(
    ("rules", "artifacts", "now", "expected_codes"),
    [
        pytest.param({"min_count": 50}, _fifty(), T0 + HOUR, [], id="ok"),
        pytest.param({"min_count": 50}, _fifty(), T0 + 3 * DAY, ["late"], id="late"),
        pytest.param({"min_count": 51}, _fifty(), T0 + HOUR, ["too_few"], id="too-few"),
        pytest.param(
            {"max_size_drop": 50}, _fifty(newest_size=400), T0 + HOUR, ["size_drop"], id="drop"
        ),
        pytest.param(
            # Over all 49 previous the median would be 10 bytes: no drop. The window is the 10
            # before the newest, in both calls.
            {"max_size_drop": 50},
            _fifty(newest_size=400, older_size=10),
            T0 + HOUR,
            ["size_drop"],
            id="drop-window-ignores-older",
        ),
        pytest.param({"max_size": 100}, _fifty(), T0 + HOUR, ["too_large"], id="too-large"),
        pytest.param(
            {"min_count": 50}, _fifty(), T0 - 2 * HOUR, ["future_mtime"], id="future-mtime"
        ),
    ],
)
def test_count_with_newest_11_gives_the_same_verdict_as_all(
    rules: dict[str, Any],
    artifacts: list[ArtifactFact],
    now: datetime,
    expected_codes: list[str],
) -> None:
    spec = job(rules=rules)
    assert len(artifacts) == 50
    whole = run(spec, artifacts, now=now)
    newest_11 = run(spec, artifacts[-11:], now=now, count=50)
    assert codes(whole) == expected_codes
    assert newest_11 == whole


@pytest.mark.parametrize(
    ("min_count", "given", "count", "message"),
    [
        pytest.param(20, 11, 19, "only 19 backups present; at least 20 expected", id="below"),
        pytest.param(20, 11, 20, None, id="equal-ok"),
        pytest.param(20, 11, 500, None, id="above-ok"),
        pytest.param(
            20, 11, 11, "only 11 backups present; at least 20 expected", id="count-is-len"
        ),
        pytest.param(2, 1, 1, "only 1 backup present; at least 2 expected", id="singular"),
        pytest.param(None, 1, 1000, None, id="rule-unset"),
    ],
)
def test_too_few_uses_count(
    min_count: int | None, given: int, count: int, message: str | None
) -> None:
    artifacts = series([1000] * given)
    evaluation = run(job(rules={"min_count": min_count}), artifacts, count=count)
    expected = () if message is None else (Reason("too_few", "warning", message),)
    assert evaluation.reasons == expected
    assert evaluation.newest == artifacts[-1]


def test_count_defaults_to_the_artifacts_given() -> None:
    # Without count, the 11 given are all there is: a min_count of 20 is not met.
    evaluation = run(job(rules={"min_count": 20}), series([1000] * 11))
    assert codes(evaluation) == ["too_few"]


@pytest.mark.parametrize("count", [0, 10], ids=["zero", "one-less"])
def test_count_smaller_than_artifacts_given_is_rejected(count: int) -> None:
    with pytest.raises(
        ValueError, match=rf"^count \({count}\) is smaller than the artifacts given"
    ):
        run(job(), series([1000] * 11), count=count)


# --- runs reported by pings -------------------------------------------------------------------


def heartbeat(**fields: Any) -> JobSpec:
    return job(source=None, **fields)


@pytest.mark.parametrize(
    ("since_success", "status", "reason"),
    [
        (HOUR, "ok", None),
        (DAY + HOUR - SECOND, "ok", None),  # every 1 d + grace 1 h
        (DAY + HOUR + SECOND, "critical", "late"),
    ],
)
def test_heartbeat_freshness_comes_from_the_last_success(since_success, status, reason):
    now = T0 + since_success
    result = evaluate(
        heartbeat(), [], now=now, created_at=CREATED, runs=RunFacts(last_success_at=T0)
    )
    assert result.status == status
    assert codes(result) == ([reason] if reason else [])
    assert result.deadline == T0 + DAY + HOUR


def test_heartbeat_without_any_success():
    young = evaluate(heartbeat(), [], now=CREATED + HOUR, created_at=CREATED, runs=RunFacts())
    assert young.status == "pending"
    old = evaluate(heartbeat(), [], now=CREATED + 2 * DAY, created_at=CREATED, runs=RunFacts())
    assert old.status == "critical" and codes(old) == ["missing"]
    assert "no backup has been reported" in old.reasons[0].message


def test_a_failed_run_is_critical_until_a_success_even_with_fresh_files():
    failed = RunFacts(
        last_success_at=T0 - DAY, last_failed=True, last_finished_at=T0, last_exit_status=3
    )
    result = evaluate(job(), [art(T0)], now=T0 + HOUR, created_at=CREATED, runs=failed)
    assert result.status == "critical" and codes(result) == ["run_failed"]
    assert "exit status 3" in result.reasons[0].message
    recovered = RunFacts(last_success_at=T0 + HOUR, last_finished_at=T0 + HOUR)
    assert (
        evaluate(job(), [art(T0)], now=T0 + HOUR, created_at=CREATED, runs=recovered).status == "ok"
    )


@pytest.mark.parametrize(("running", "status"), [(HOUR, "ok"), (2 * HOUR + SECOND, "critical")])
def test_a_run_going_on_too_long_is_overdue(running, status):
    spec = heartbeat(rules={"max_duration": "2h"})
    facts = RunFacts(last_success_at=T0, running_since=T0 + HOUR)
    result = evaluate(spec, [], now=T0 + HOUR + running, created_at=CREATED, runs=facts)
    assert result.status == status
    assert codes(result) == ([] if status == "ok" else ["run_overdue"])


def test_a_success_too_quick_is_a_warning():
    spec = heartbeat(rules={"min_duration": "5m"})
    quick = RunFacts(last_success_at=T0, last_finished_at=T0, last_duration=2.0)
    result = evaluate(spec, [], now=T0 + HOUR, created_at=CREATED, runs=quick)
    assert result.status == "warning" and codes(result) == ["run_too_short"]
    assert "2 s" in result.reasons[0].message
    normal = RunFacts(last_success_at=T0, last_finished_at=T0, last_duration=600.0)
    assert evaluate(spec, [], now=T0 + HOUR, created_at=CREATED, runs=normal).status == "ok"


def test_paused_ignores_runs():
    failed = RunFacts(last_failed=True, last_finished_at=T0)
    result = evaluate(heartbeat(paused=True), [], now=T0, created_at=CREATED, runs=failed)
    assert result.status == "paused"


def test_min_duration_cannot_exceed_max_duration():
    with pytest.raises(ValueError, match="min_duration"):
        job(rules={"min_duration": "2h", "max_duration": "1h"})


def test_undated_files_are_a_warning_naming_them_and_the_rest_is_judged() -> None:
    undated = [(f"odd-{i}.tar", 10, 9_999_999_999_999_000_000 + i) for i in range(5)]
    evaluation = run(job(), series([1000, 1000]), undated=undated[:1])
    assert evaluation.status == "warning"
    assert codes(evaluation) == ["bad_mtime"]
    assert evaluation.reasons[0].message == (
        "1 file has a modification time outside the years 1 to 9999, in seconds since 1970: "
        "odd-0.tar (@9999999999999); ignored until their times are set right (touch -d)"
    )
    assert evaluation.newest is not None and evaluation.newest.mtime == T0
    many = run(job(), series([1000]), now=T0 + 3 * DAY, undated=undated)
    assert codes(many) == ["bad_mtime", "late"] and many.status == "critical"
    assert many.reasons[0].message.startswith("5 files have")
    assert "odd-2.tar (@9999999999999) (and 2 more)" in many.reasons[0].message
    # A paused job says nothing; a source that cannot be read says only that.
    assert codes(run(job(paused=True), [], undated=undated)) == []
    assert codes(run(job(), [], source_error="gone", undated=undated)) == ["source_error"]


# --- settle: a newest file still being written -----------------------------------------------

WRITTEN = art(T0, 5 * MIB, "db-2026-11-20.sql.gz")


@pytest.mark.parametrize(
    ("age", "last_listed", "settle", "expected"),
    [
        pytest.param(0 * SECOND, None, 120, True, id="modified-now"),
        pytest.param(119 * SECOND, None, 120, True, id="119s-old-writing"),
        pytest.param(120 * SECOND, None, 120, False, id="120s-old-settled"),
        pytest.param(-119 * SECOND, None, 120, True, id="119s-ahead-writing"),
        pytest.param(-120 * SECOND, None, 120, False, id="120s-ahead-settled"),
        pytest.param(0 * SECOND, None, 0, False, id="settle-0-never"),
        pytest.param(HOUR, replace(WRITTEN, size=4 * MIB), 120, True, id="grew-since-listed"),
        pytest.param(HOUR, replace(WRITTEN, mtime=T0 - DAY), 120, True, id="mtime-changed"),
        pytest.param(HOUR, WRITTEN, 120, False, id="same-as-listed"),
        pytest.param(HOUR, replace(WRITTEN, path="other", size=1), 120, False, id="new-file"),
        pytest.param(HOUR, replace(WRITTEN, size=4 * MIB), 0, False, id="settle-0-changed"),
    ],
)
def test_being_written(
    age: timedelta, last_listed: ArtifactFact | None, settle: int, expected: bool
) -> None:
    assert being_written(WRITTEN, last_listed, settle=settle, now=T0 + age) is expected


def _settling(*, settle: int = 120) -> JobSpec:
    rules = {"min_size": "8MiB", "max_size_drop": 40}
    return job(source={**SOURCE, "settle": settle}, rules=rules)


@pytest.mark.parametrize(
    ("artifacts", "age", "settle", "last_listed", "expected", "judged_is_writing"),
    [
        # Three good nightly dumps, tonight's is 5 MiB so far and modified 30 s ago.
        pytest.param(
            [*series([10 * MIB] * 3, newest=T0 - DAY), WRITTEN], 30 * SECOND, 120, None, [],
            True, id="being-written-not-judged",
        ),
        pytest.param(
            [*series([10 * MIB] * 3, newest=T0 - DAY), WRITTEN], 120 * SECOND, 120, None,
            ["too_small", "size_drop"], False, id="settled-at-exactly-settle",
        ),
        pytest.param(
            [*series([10 * MIB] * 3, newest=T0 - DAY), WRITTEN], 0 * SECOND, 0, None,
            ["too_small", "size_drop"], False, id="settle-0-judges-at-once",
        ),
        # Its time is an hour old (a writer's clock behind) but it grew since the last listing.
        pytest.param(
            [*series([10 * MIB] * 3, newest=T0 - DAY), WRITTEN], HOUR, 120,
            replace(WRITTEN, size=4 * MIB), [], True, id="changed-since-previous-listing",
        ),
        pytest.param(
            [*series([10 * MIB] * 3, newest=T0 - DAY), WRITTEN], HOUR, 120, WRITTEN,
            ["too_small", "size_drop"], False, id="unchanged-since-previous-listing",
        ),
        # The first backup ever is being written: no size is judged, and it is not missing.
        pytest.param([WRITTEN], 10 * SECOND, 120, None, [], True, id="no-settled-file"),
        # The newest settled one (yesterday's) was truncated: that is what is told.
        pytest.param(
            [*series([10 * MIB, 10 * MIB, 10 * MIB, 2 * MIB], newest=T0 - DAY), WRITTEN],
            10 * SECOND, 120, None, ["too_small", "size_drop"], True,
            id="newest-settled-is-older",
        ),
    ],
)  # fmt: skip
def test_settle_judges_the_newest_settled_file(
    artifacts: list[ArtifactFact],
    age: timedelta,
    settle: int,
    last_listed: ArtifactFact | None,
    expected: list[str],
    judged_is_writing: bool,
) -> None:
    now = T0 + age
    evaluation = run(_settling(settle=settle), artifacts, now=now, last_listed=last_listed)
    assert codes(evaluation) == expected
    assert evaluation.newest == WRITTEN  # freshness and the dashboard: the file being written
    assert evaluation.writing == (WRITTEN if judged_is_writing else None)
    if judged_is_writing:
        # Judged again once it may have settled, not at the next full scan.
        settled_at = WRITTEN.mtime + settle * SECOND
        settles_at = settled_at if settled_at > now else now + settle * SECOND
        assert evaluation.settles_at == settles_at
        assert next_check(_settling(settle=settle), evaluation, None, now) == settles_at
        assert evaluation.deadline is not None and evaluation.deadline > settles_at
        assert all(WRITTEN.path not in reason.message for reason in evaluation.reasons)
    if expected and judged_is_writing:
        assert evaluation.reasons[0].message.startswith("newest settled backup db-2026-11-19")


def test_a_backup_being_written_is_not_late() -> None:
    # Yesterday's is 26 h old (late by itself); tonight's, being written, proves the job ran.
    artifacts = [*series([10 * MIB] * 3, newest=T0 - 26 * HOUR + 10 * SECOND), WRITTEN]
    now = T0 + 10 * SECOND
    assert run(_settling(), artifacts[:-1], now=now).status == "critical"  # late without it
    evaluation = run(_settling(), artifacts, now=now)
    assert (evaluation.status, evaluation.writing) == ("ok", WRITTEN)


# --- retention_gap ----------------------------------------------------------------------------

NIGHTLY = {"cron": "0 3 * * *", "timezone": "Europe/Paris"}


def monthly_backups(skip: Sequence[int] = ()) -> list[ArtifactFact]:
    """The 10th of each month of 2026 up to November, 03:00 Paris, and the last 7 nights."""
    dates = [datetime(2026, month, 10, 2, tzinfo=UTC) for month in range(1, 12)]
    dates += [T0 - d * DAY for d in range(7)]
    return [art(moment) for moment in sorted(set(dates)) if moment.month not in skip]


@pytest.mark.parametrize(("strict", "severity"), [(False, "warning"), (True, "critical")])
def test_retention_gap_names_the_missing_months(strict: bool, severity: str) -> None:
    spec = job(schedule=NIGHTLY, retention={"daily": 7, "monthly": 12, "strict": strict})
    result = run(spec, monthly_backups(skip=(8, 9)), created_at=datetime(2025, 1, 1, tzinfo=UTC))
    gap = [r for r in result.reasons if r.code == "retention_gap"]
    assert gap == [
        Reason(
            "retention_gap", severity,  # type: ignore[arg-type]
            "no backup kept for 2025-12, 2026-08 and 2026-09 (monthly: 12 kept)",
        )
    ]  # fmt: skip
    assert result.status == severity


def test_retention_kept_everywhere_is_ok() -> None:
    spec = job(schedule=NIGHTLY, retention={"daily": 7, "monthly": 10})
    result = run(spec, monthly_backups(), created_at=datetime(2025, 1, 1, tzinfo=UTC))
    assert result.status == "ok", result.reasons


def test_retention_does_not_blame_a_young_job() -> None:
    # Declared in June: the earlier months were not the job's to keep.
    spec = job(schedule=NIGHTLY, retention={"monthly": 12})
    backups = [b for b in monthly_backups() if b.mtime.month >= 7]
    assert run(spec, backups, created_at=datetime(2026, 6, 15, tzinfo=UTC)).status == "ok"
    older = run(spec, backups, created_at=datetime(2026, 5, 31, tzinfo=UTC))
    assert [r.message for r in older.reasons] == ["no backup kept for 2026-06 (monthly: 12 kept)"]


def test_retention_is_not_judged_from_a_partial_listing() -> None:
    spec = job(schedule=NIGHTLY, retention={"monthly": 12})
    backups = monthly_backups(skip=(8,))
    result = run(spec, backups, listing_warnings=["permission denied: /backups/db/2026-08"])
    assert [r.code for r in result.reasons] == ["source_error"]


def test_retention_uses_all_backup_times_given() -> None:
    # The judge passes only the newest artifacts, and the times of all of them apart.
    spec = job(schedule=NIGHTLY, retention={"monthly": 12})
    backups = monthly_backups()
    newest = backups[-3:]
    times = [b.mtime for b in backups]
    assert run(spec, newest, backup_times=times, count=len(backups)).status == "ok"
    assert run(spec, newest, backup_times=times[-3:]).status == "warning"
