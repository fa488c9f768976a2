"""Notices held back by notify.after, notify.for and silences (pure rules of
service.notify.events): a job's judgements played in order, as the scanner keeps the state."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.notify.events import (
    Hold,
    NoticeRule,
    Streak,
    bad_streak,
    hold_of,
    news,
    notice_due,
    owed_notice,
    renotify_at,
)

T0 = datetime(2026, 11, 30, 3, 10, tzinfo=UTC)
LATE, SMALL, ERR = "late", "too_small", "source_error"
SEVERITY = {LATE: "critical", SMALL: "critical", ERR: "unknown", "size_drop": "warning"}


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def reasons_of(codes: set[str] | frozenset[str]) -> list[dict[str, str]]:
    return [{"code": c, "severity": SEVERITY[c], "message": c} for c in sorted(codes)]


@dataclass
class Job:
    """A job's stored state, as the scanner writes it after each judgement."""

    rule: NoticeRule
    every: int | None = None  # notify.renotify_every
    status: str = "pending"
    reasons: list[dict[str, str]] = field(default_factory=list)
    notified: str | None = None
    notified_reasons: list[dict[str, str]] | None = None
    streak: Streak = field(default_factory=Streak)
    renotify: datetime | None = None
    told: list[tuple[float, str, str, frozenset[str]]] = field(default_factory=list)

    def judge(
        self,
        minutes: float,
        status: str,
        codes: set[str] = frozenset(),  # type: ignore[assignment]
        silenced_until: datetime | None = None,
    ) -> Any:
        now, reasons = at(minutes), reasons_of(codes)
        streak = bad_streak(self.streak, status, now, self.rule.after)
        told = news(
            stored=self.status, stored_reasons=self.reasons, notified=self.notified,
            notified_reasons=self.notified_reasons,
            reminder_due=self.renotify is not None and self.renotify <= now, status=status,
            reasons=reasons, streak=streak, rule=self.rule, now=now,
            silenced_until=silenced_until,
        )  # fmt: skip
        reminder = renotify_at(
            status, self.status, self.renotify, self.every, now, told_now=told.kind is not None
        )
        self.renotify = notice_due(reminder, told.held, self.notified, status)
        if told.kind is not None:
            self.told.append((minutes, told.kind, status, frozenset(codes)))
            self.notified, self.notified_reasons = status, reasons
        self.status, self.reasons, self.streak = status, reasons, streak
        return told


# Each step: (minutes after T0, status, codes, silenced until (minutes) or None).
Step = tuple[float, str, set[str], float | None]
OK: set[str] = set()

Told = tuple[float, str, str, set[str]]  # minutes, kind, status, codes
CASES: list[tuple[str, NoticeRule, int | None, list[Step], list[Told]]] = [
    # after: 2, exactly two bad judgements in a row: told at the second, once.
    ("after-exactly-n", NoticeRule(after=2), None,
     [(0, "unknown", {ERR}, None), (5, "unknown", {ERR}, None), (10, "unknown", {ERR}, None)],
     [(5, "problem", "unknown", {ERR})]),
    # A flapping NFS mount: never two bad in a row, never told, never "recovered".
    ("after-flapping", NoticeRule(after=2), None,
     [(0, "unknown", {ERR}, None), (5, "ok", OK, None), (10, "unknown", {ERR}, None),
      (15, "ok", OK, None), (20, "critical", {LATE}, None), (25, "ok", OK, None)],
     []),
    # Told after two, then recovered: the recovery is told (the problem was).
    ("after-then-recovery", NoticeRule(after=2), None,
     [(0, "critical", {LATE}, None), (5, "critical", {LATE}, None), (10, "ok", OK, None)],
     [(5, "problem", "critical", {LATE}), (10, "recovery", "ok", set())]),
    # for: 30 min: held one second before, told at exactly 30 min.
    ("for-exactly", NoticeRule(for_seconds=1800), None,
     [(0, "critical", {LATE}, None), (29 + 59 / 60, "critical", {LATE}, None),
      (30, "critical", {LATE}, None), (45, "critical", {LATE}, None)],
     [(30, "problem", "critical", {LATE})]),
    # Bad for 20 min, ok, bad again: `for` counts from the new run, not the first.
    ("for-broken-run", NoticeRule(for_seconds=1800), None,
     [(0, "critical", {LATE}, None), (20, "ok", OK, None), (25, "critical", {LATE}, None),
      (50, "critical", {LATE}, None), (55, "critical", {LATE}, None)],
     [(55, "problem", "critical", {LATE})]),
    # Warning, then critical while held: one notice, with the status at the end.
    ("warning-to-critical-while-held", NoticeRule(for_seconds=1800), None,
     [(0, "warning", {"size_drop"}, None), (10, "critical", {LATE}, None),
      (30, "critical", {LATE}, None)],
     [(30, "problem", "critical", {LATE})]),
    # A held problem that recovers: nothing at all, neither problem nor recovery.
    ("held-then-recovers", NoticeRule(for_seconds=1800), None,
     [(0, "critical", {LATE}, None), (10, "ok", OK, None), (40, "ok", OK, None)],
     []),
    # Problems changing while held: no "changed", one notice with the problems at the end.
    ("changed-while-held", NoticeRule(for_seconds=1800), None,
     [(0, "critical", {LATE}, None), (10, "critical", {LATE, SMALL}, None),
      (30, "critical", {LATE, SMALL}, None)],
     [(30, "problem", "critical", {LATE, SMALL})]),
    # Reminders every 10 min: none while held, the first 10 min after the notice.
    ("reminder-while-held", NoticeRule(for_seconds=1800), 600,
     [(0, "critical", {LATE}, None), (10, "critical", {LATE}, None),
      (20, "critical", {LATE}, None), (30, "critical", {LATE}, None),
      (35, "critical", {LATE}, None), (40, "critical", {LATE}, None)],
     [(30, "problem", "critical", {LATE}), (40, "reminder", "critical", {LATE})]),
    # Both: bad for the duration and for 3 judgements in a row.
    ("after-and-for", NoticeRule(after=3, for_seconds=600), None,
     [(0, "critical", {LATE}, None), (10, "critical", {LATE}, None),
      (11, "critical", {LATE}, None)],
     [(11, "problem", "critical", {LATE})]),
    ("for-and-after", NoticeRule(after=2, for_seconds=600), None,
     [(0, "critical", {LATE}, None), (1, "critical", {LATE}, None),
      (10, "critical", {LATE}, None)],
     [(10, "problem", "critical", {LATE})]),
    # Once told, the run goes on: a change of problems or of status is told at once.
    ("told-then-changes", NoticeRule(after=2, for_seconds=600), None,
     [(0, "warning", {"size_drop"}, None), (10, "warning", {"size_drop"}, None),
      (11, "critical", {LATE}, None), (12, "critical", {LATE, SMALL}, None)],
     [(10, "problem", "warning", {"size_drop"}), (11, "problem", "critical", {LATE}),
      (12, "changed", "critical", {LATE, SMALL})]),
    # Silenced: held to the end of the silence, told once then if still bad...
    ("after-silence", NoticeRule(), None,
     [(0, "critical", {LATE}, 60), (30, "critical", {LATE, SMALL}, 60),
      (60, "critical", {LATE, SMALL}, 60), (70, "critical", {LATE, SMALL}, None)],
     [(60, "problem", "critical", {LATE, SMALL})]),
    # ...and not at all if it recovered meanwhile.
    ("silence-recovered", NoticeRule(), None,
     [(0, "critical", {LATE}, 60), (30, "ok", OK, 60), (60, "ok", OK, 60)],
     []),
    # A problem told before the silence: its recovery waits for the end.
    ("silenced-recovery", NoticeRule(), None,
     [(0, "critical", {LATE}, None), (10, "ok", OK, 60), (60, "ok", OK, None)],
     [(0, "problem", "critical", {LATE}), (60, "recovery", "ok", set())]),
    # ...and a reminder due during the silence goes out once, at its end.
    ("silenced-reminder", NoticeRule(), 600,
     [(0, "critical", {LATE}, None), (10, "critical", {LATE}, 60),
      (30, "critical", {LATE}, 60), (60, "critical", {LATE}, None),
      (65, "critical", {LATE}, None), (70, "critical", {LATE}, None)],
     [(0, "problem", "critical", {LATE}), (60, "reminder", "critical", {LATE}),
      (70, "reminder", "critical", {LATE})]),
    # Silence and for together: the later of the two ends.
    ("silence-and-for", NoticeRule(for_seconds=5400), None,
     [(0, "critical", {LATE}, 60), (60, "critical", {LATE}, None),
      (90, "critical", {LATE}, None)],
     [(90, "problem", "critical", {LATE})]),
    # Pending (a young job) and paused are not bad: they end a run.
    ("pending-breaks-run", NoticeRule(after=2), None,
     [(0, "unknown", {ERR}, None), (5, "pending", OK, None), (10, "unknown", {ERR}, None)],
     []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "every", "steps", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_judgements_in_order_tell_what_lasted(
    rule: NoticeRule,
    every: int | None,
    steps: list[Step],
    expected: list[tuple[float, str, str, set[str]]],
) -> None:
    job = Job(rule, every)
    for minutes, status, codes, silenced in steps:
        job.judge(minutes, status, codes, None if silenced is None else at(silenced))
    assert job.told == [(m, kind, status, frozenset(codes)) for m, kind, status, codes in expected]


def test_a_held_notice_says_why_and_until_when() -> None:
    job = Job(NoticeRule(after=3, for_seconds=1800))
    first = job.judge(0, "critical", {LATE})
    assert first.recorded and first.kind is None
    assert first.held == Hold("for", "problem", at(30), judgements=2)
    # The tick judges it again when the `for` ends (renotify_at), not before.
    assert job.renotify == at(30)
    assert job.judge(30, "critical", {LATE}).held == Hold("after", "problem", None, 1)
    assert job.renotify is None  # nothing due at a moment: the next judgement counts
    told = job.judge(31, "critical", {LATE})
    assert (told.recorded, told.kind, told.held) == (False, "problem", None)


def test_a_held_problem_has_no_reminder_until_told() -> None:
    job = Job(NoticeRule(for_seconds=1800), every=600)
    job.judge(0, "critical", {LATE})
    assert job.renotify == at(30)  # the held notice's moment, not a reminder at 10 min
    job.judge(30, "critical", {LATE})
    assert job.renotify == at(40)  # reminders count from the notice


def test_silenced_while_for_runs_is_due_at_the_later_end() -> None:
    held = hold_of("problem", Streak(at(0), 1), NoticeRule(for_seconds=600), at(1), at(60))
    assert held == Hold("silence", "problem", at(60))
    held = hold_of("problem", Streak(at(0), 1), NoticeRule(for_seconds=7200), at(1), at(60))
    assert held == Hold("silence", "problem", at(120))
    # A silence that ended holds nothing.
    assert hold_of("problem", Streak(at(0), 1), NoticeRule(), at(60), at(60)) is None


def test_reminders_and_recoveries_wait_only_for_a_silence() -> None:
    rule = NoticeRule(after=5, for_seconds=3600)
    assert hold_of("recovery", Streak(), rule, at(1)) is None
    assert hold_of("reminder", Streak(at(0), 5), rule, at(1)) is None
    assert hold_of("recovery", Streak(), rule, at(1), at(10)) == Hold("silence", "recovery", at(10))


@pytest.mark.parametrize(
    ("before", "status", "after", "expected"),
    [
        (Streak(), "critical", 3, Streak(at(5), 1)),
        (Streak(at(0), 1), "warning", 3, Streak(at(0), 2)),
        (Streak(at(0), 2), "unknown", 3, Streak(at(0), 3)),
        # Counted up to `after`: a job that stays bad writes nothing new.
        (Streak(at(0), 3), "critical", 3, Streak(at(0), 3)),
        (Streak(at(0), 1), "critical", 1, Streak(at(0), 1)),
        # A count above a lowered `after` stays (it only matters that it is reached).
        (Streak(at(0), 5), "critical", 2, Streak(at(0), 5)),
        (Streak(at(0), 2), "ok", 3, Streak()),
        (Streak(at(0), 2), "pending", 3, Streak()),
        (Streak(at(0), 2), "paused", 3, Streak()),
    ],
)  # fmt: skip
def test_bad_streak(before: Streak, status: str, after: int, expected: Streak) -> None:
    assert bad_streak(before, status, at(5), after) == expected


@pytest.mark.parametrize(
    ("reminder", "held", "notified", "status", "expected"),
    [
        (at(10), None, "critical", "critical", at(10)),
        # A problem not told yet: no reminder; due when the `for` ends.
        (at(10), Hold("for", "problem", at(30)), "ok", "critical", at(30)),
        (at(10), Hold("after", "problem", None, 1), None, "critical", None),
        # Told at this status (a change of problems held): the reminder stays, not before the end.
        (at(10), Hold("after", "changed", None, 1), "critical", "critical", at(10)),
        (at(10), Hold("for", "changed", at(30)), "critical", "critical", at(30)),
        # Due when the hold ends, not at a later reminder: the judgement then tells it and sets
        # the next reminder (a change held by a silence must not wait for tomorrow's reminder).
        (at(90), Hold("silence", "reminder", at(60)), "critical", "critical", at(60)),
        (at(1440), Hold("silence", "changed", at(60)), "critical", "critical", at(60)),
        (None, Hold("silence", "recovery", at(60)), "critical", "ok", at(60)),
    ],
)  # fmt: skip
def test_notice_due(
    reminder: datetime | None, held: Hold | None, notified: str, status: str, expected: Any
) -> None:
    assert notice_due(reminder, held, notified, status) == expected


def test_without_a_streak_nothing_is_held_and_a_rule_needs_one() -> None:
    plain = news(
        stored="ok", stored_reasons=[], notified="ok", notified_reasons=[], reminder_due=False,
        status="critical", reasons=reasons_of({LATE}),
    )  # fmt: skip
    assert (plain.kind, plain.held) == ("problem", None)
    with pytest.raises(ValueError, match="streak"):
        news(
            stored="ok", stored_reasons=[], notified="ok", notified_reasons=[],
            reminder_due=False, status="critical", reasons=reasons_of({LATE}),
            rule=NoticeRule(after=2),
        )  # fmt: skip


def test_owed_notice_as_the_last_judgement_left_it() -> None:
    common: dict[str, Any] = {"reasons": reasons_of({LATE}), "notified_reasons": []}
    rule = NoticeRule(for_seconds=1800)
    held = owed_notice(status="critical", notified="ok", streak=Streak(at(0), 1), rule=rule,
                       judged_at=at(5), **common)  # fmt: skip
    assert held == Hold("for", "problem", at(30))
    # Told already: nothing owed, nothing held.
    told = owed_notice(
        status="critical", notified="critical", streak=Streak(at(0), 1), rule=rule,
        judged_at=at(5), reasons=reasons_of({LATE}), notified_reasons=reasons_of({LATE}),
    )  # fmt: skip
    assert told is None
    # A held problem gone: nothing owed (no recovery for what was never told).
    gone = owed_notice(
        status="ok", notified="ok", streak=Streak(), rule=rule, judged_at=at(5), reasons=[],
        notified_reasons=[],
    )  # fmt: skip
    assert gone is None
