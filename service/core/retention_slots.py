"""Retention slots: which of the periods a job's retention policy keeps hold a backup (pure).

Not to be confused with service.store.retention, which deletes this service's own old rows.

A policy `{daily: 7, weekly: 4, monthly: 12, yearly: 0}` means what restic's and borg's
`--keep-daily 7 --keep-weekly 4 --keep-monthly 12` mean: one backup kept in each of the 7 most
recent calendar days, the 4 most recent ISO weeks (Monday to Sunday), the 12 most recent
months, in the job's schedule time zone (UTC for an `every` schedule). Each of those periods is
a *slot*; a slot is `kept` when at least one present backup's time falls in it.

Which slots are looked at (never a false alarm on a healthy job):

- The current period counts only when it holds a backup already. Then it is the first of the N
  slots and the N-1 completed periods before it follow; else the N most recent completed
  periods are the slots. This is what the tools keep: `forget`/`prune` run after today's backup
  keeps today and the 6 days before; run before it, the 7 days before today.
- A completed slot is expected (`missing` when empty) only when the job had to leave a backup in
  it: the job was declared before the slot began (a job younger than a slot's span is not
  blamed for it), and its schedule had a backup due inside the slot: for `cron`, a fire time in
  the slot whose grace also ends in it (a 23:30 backup with 1 h of grace may land on the next
  day without being late); for `every`, a slot at least `every + grace` long (a healthy job
  leaves at most that long between two backups, so only such a slot surely holds one; with
  `every: 1d` and any grace, days are not checked: give a cron schedule for that). Any other
  empty slot is `not_expected`, with the reason in words.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal, Protocol

from cronsim import CronSim

from service.core.jobspec import Retention, Schedule

SlotKind = Literal["daily", "weekly", "monthly", "yearly"]
SlotState = Literal["kept", "missing", "not_expected"]
SLOT_KINDS: tuple[SlotKind, ...] = ("daily", "weekly", "monthly", "yearly")
# The most labels a gap message names for one kind (then "and N more").
LABELS_SHOWN = 6
_MINUTE = timedelta(minutes=1)


class Times(Protocol):
    """Backup times, aware, oldest first: a list, or a view over a listing (bisected, so only
    a few of them are ever read)."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> datetime: ...


@dataclass(frozen=True, slots=True)
class Slot:
    """One period a retention policy keeps a backup in."""

    kind: SlotKind
    label: str  # 2026-11-30, 2026-W53, 2026-08, 2026
    start: datetime  # aware UTC, inclusive: the period's first instant in the zone
    end: datetime  # aware UTC, exclusive
    state: SlotState
    newest: datetime | None  # the newest backup in it (the one the tools keep), aware UTC
    current: bool = False  # the period `now` is in (listed only when it holds a backup)
    why: str = ""  # for `not_expected`: why no backup was due in it

    def as_dict(self) -> dict[str, object]:
        """The JSON form (times as ISO text)."""
        return {
            "kind": self.kind, "label": self.label, "start": self.start.isoformat(),
            "end": self.end.isoformat(), "state": self.state,
            "newest": None if self.newest is None else self.newest.isoformat(),
            "current": self.current, "why": self.why,
        }  # fmt: skip


def retention_slots(
    policy: Retention,
    backups: Times,
    *,
    schedule: Schedule,
    grace: int,
    created_at: datetime,
    now: datetime,
) -> tuple[Slot, ...]:
    """The slots of `policy` at `now`, newest first within each kind (daily, weekly, monthly,
    yearly), with their state. `backups`: the times of the backups present, aware, sorted
    oldest first (any sequence that bisects: a view over a listing does)."""
    now, created_at = _utc(now, "now"), _utc(created_at, "created_at")
    zone = schedule.zone
    slots: list[Slot] = []
    for kind in SLOT_KINDS:
        wanted = policy.count(kind)
        if wanted <= 0:
            continue
        first = _first_day(kind, now.astimezone(zone).date())
        start, end = _bounds(kind, first, zone)
        newest = _newest_in(backups, start, end)
        if newest is not None:
            slots.append(Slot(kind, _label(kind, first), start, end, "kept", newest, current=True))
            wanted -= 1
        for _ in range(wanted):
            first = _first_day(kind, first - timedelta(days=1))
            slots.append(_completed(kind, first, zone, backups, schedule, grace, created_at))
    return tuple(slots)


def window_start(policy: Retention, *, schedule: Schedule, now: datetime) -> datetime | None:
    """The earliest instant any slot of `policy` at `now` can begin (None: the policy keeps
    nothing): what a caller reads backups from."""
    zone = schedule.zone
    today = _utc(now, "now").astimezone(zone).date()
    starts = []
    for kind in SLOT_KINDS:
        first = _first_day(kind, today)
        for _ in range(policy.count(kind)):
            first = _first_day(kind, first - timedelta(days=1))
        if policy.count(kind) > 0:
            starts.append(_bounds(kind, first, zone)[0])
    return min(starts) if starts else None


def missing_slots(slots: Sequence[Slot]) -> list[Slot]:
    """The slots expected to hold a backup that hold none."""
    return [slot for slot in slots if slot.state == "missing"]


def gap_message(policy: Retention, slots: Sequence[Slot]) -> str | None:
    """The missing slots in words ("no backup kept for 2026-08 and 2026-09 (monthly: 12
    kept)"), oldest first within each kind; None when nothing is missing."""
    parts = []
    for kind in SLOT_KINDS:
        labels = [s.label for s in reversed(slots) if s.kind == kind and s.state == "missing"]
        if labels:
            parts.append(f"{_and(labels)} ({kind}: {policy.count(kind)} kept)")
    if not parts:
        return None
    return f"no backup kept for {'; '.join(parts)}"


def slots_of(moment: datetime, slots: Sequence[Slot]) -> list[Slot]:
    """The slots a backup made at `moment` is the kept one of (the newest in its slot)."""
    return [slot for slot in slots if slot.newest is not None and slot.newest == moment]


def _and(labels: Sequence[str]) -> str:
    shown = list(labels[:LABELS_SHOWN])
    hidden = len(labels) - len(shown)
    if hidden > 0:
        return f"{', '.join(shown)} and {hidden} more"
    if len(shown) == 1:
        return shown[0]
    return f"{', '.join(shown[:-1])} and {shown[-1]}"


def _completed(
    kind: SlotKind,
    first: date,
    zone: tzinfo,
    backups: Times,
    schedule: Schedule,
    grace: int,
    created_at: datetime,
) -> Slot:
    start, end = _bounds(kind, first, zone)
    label = _label(kind, first)
    newest = _newest_in(backups, start, end)
    if newest is not None:
        return Slot(kind, label, start, end, "kept", newest)
    why = _not_due(start, end, schedule, grace, created_at)
    if why:
        return Slot(kind, label, start, end, "not_expected", None, why=why)
    return Slot(kind, label, start, end, "missing", None)


def _not_due(
    start: datetime, end: datetime, schedule: Schedule, grace: int, created_at: datetime
) -> str:
    """Why no backup had to be left in [start, end) ("": one had to)."""
    if created_at > start:
        return "the job was declared after it began"
    if schedule.every is not None:
        if (end - start).total_seconds() < schedule.every + grace:
            return "shorter than the schedule's interval with its grace"
        return ""
    if schedule.cron is None:  # pragma: no cover - Schedule validation guarantees one of both
        return ""
    for fire in CronSim(schedule.cron, (start - _MINUTE).astimezone(schedule.zone)):
        fire_utc = fire.astimezone(UTC)
        if fire_utc < start:  # an ambiguous time's first occurrence (see rules._next_fire)
            continue
        if fire_utc + timedelta(seconds=grace) < end:
            return ""
        return "the schedule has no backup due in it"
    return "the schedule has no backup due in it"


def _newest_in(backups: Times, start: datetime, end: datetime) -> datetime | None:
    low = bisect.bisect_left(backups, start)
    high = bisect.bisect_left(backups, end, lo=low)
    return backups[high - 1].astimezone(UTC) if high > low else None


def _first_day(kind: SlotKind, day: date) -> date:
    """The first day of the period of `kind` that `day` is in."""
    if kind == "daily":
        return day
    if kind == "weekly":
        return day - timedelta(days=day.isoweekday() - 1)
    if kind == "monthly":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def _next_first_day(kind: SlotKind, first: date) -> date:
    if kind == "daily":
        return first + timedelta(days=1)
    if kind == "weekly":
        return first + timedelta(days=7)
    if kind == "monthly":
        return date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return date(first.year + 1, 1, 1)


def _bounds(kind: SlotKind, first: date, zone: tzinfo) -> tuple[datetime, datetime]:
    return _midnight(first, zone), _midnight(_next_first_day(kind, first), zone)


def _midnight(day: date, zone: tzinfo) -> datetime:
    """The first instant of `day` in `zone`, aware UTC. A midnight skipped by a DST change
    (fold 0 takes the offset before it) is the instant of the change; a repeated one, its first
    occurrence."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _label(kind: SlotKind, first: date) -> str:
    if kind == "daily":
        return first.isoformat()
    if kind == "weekly":
        year, week, _ = first.isocalendar()
        return f"{year}-W{week:02d}"
    if kind == "monthly":
        return f"{first.year:04d}-{first.month:02d}"
    return f"{first.year:04d}"


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)
