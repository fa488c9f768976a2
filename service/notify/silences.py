"""Silences (maintenance windows): pure rules of which job is silenced when, and until when.

A silence holds a job's notices, never its judgement: the job is still judged and recorded,
and whoever sends notices asks `silenced_until` first. No I/O, no clock: `now` is passed in.

Matching: a job is covered by a silence when its name is in `jobs` OR it carries one of `tags`
(the two lists add up; a silence with both covers the named jobs and every job with a tag).

Windows are half-open, [start, end): silenced at its start, no longer at its end.
- one-off: [starts_at, ends_at);
- recurring: each fire time f of a 5-field cron expression, evaluated in an IANA time zone like
  a job's cron schedule (Debian cron's DST rules, as cronsim implements them: a time skipped by
  a spring-forward fires at the end of the gap, a time repeated by a fall-back fires once, at
  its first occurrence), opens [f, f + duration).
Either kind is cut at `ended_at` (ended early; for a recurring one, no window opens after it).
Windows of several silences that overlap or touch chain: `silenced_until` is the end of the
whole chain, as far as MAX_CHAIN windows look ahead (beyond that, the job is judged again at the
end found and the next lookup goes on from there).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

# How many windows a lookup follows: the windows covering `now` of one recurring silence (those
# opened during the last `duration`) and then the chain ahead. A silence firing every minute
# with a week-long duration would otherwise cost 10 080 cron steps per job and per lookup.
MAX_CHAIN = 200


@dataclass(frozen=True, slots=True)
class Recurrence:
    """A window of `duration` seconds opening at each fire time of `cron` in `timezone`."""

    cron: str
    timezone: str
    duration: int  # seconds, > 0

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class Silence:
    """A maintenance window: either one-off (`starts_at`, `ends_at`) or `recurring`."""

    id: int | None
    comment: str
    jobs: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    starts_at: datetime | None = None  # one-off only, aware
    ends_at: datetime | None = None  # one-off only, aware
    recurring: Recurrence | None = None
    ended_at: datetime | None = None  # ended early (DELETE, or pruned from the jobs file)
    name: str | None = None  # silences declared in the jobs file are named
    created_by: str = ""

    def __post_init__(self) -> None:
        if (self.recurring is None) == (self.starts_at is None or self.ends_at is None):
            raise ValueError("a silence has either starts_at and ends_at, or a recurrence")
        for moment in (self.starts_at, self.ends_at, self.ended_at):
            _check_aware(moment)

    def matches(self, job_name: str, job_tags: Iterable[str]) -> bool:
        """Whether this silence covers the job: its name is listed, or it has a listed tag."""
        return job_name in self.jobs or not self.tags.isdisjoint(job_tags)

    def windows(self, since: datetime) -> Iterator[tuple[datetime, datetime]]:
        """The windows [start, end) that end after `since`, in order of start (aware UTC)."""
        since = _utc(since)
        cut = _utc(self.ended_at) if self.ended_at is not None else None
        if self.recurring is None:
            assert self.starts_at is not None
            assert self.ends_at is not None
            start, end = _utc(self.starts_at), _utc(self.ends_at)
            if cut is not None:
                end = min(end, cut)
            if start < end and end > since:
                yield start, end
            return
        duration = timedelta(seconds=self.recurring.duration)
        for fire in fires_after(self.recurring, since - duration):
            if cut is not None and fire >= cut:
                return
            end = fire + duration if cut is None else min(fire + duration, cut)
            yield fire, end


def fires_after(recurrence: Recurrence, after: datetime) -> Iterator[datetime]:
    """The fire times strictly after `after`, in order, aware UTC.

    cronsim walks local wall-clock times and returns the first occurrence of a repeated one, so
    right after a fall-back it may hand back a time already past: those are skipped (a window
    never opens twice in one night), as service.scanner.rules does for job schedules."""
    after = _utc(after)
    for fire in CronSim(recurrence.cron, after.astimezone(recurrence.zone)):
        fire_utc = fire.astimezone(UTC)
        if fire_utc > after:
            after = fire_utc
            yield fire_utc


def silenced_until(
    job_name: str, job_tags: Iterable[str], silences: Sequence[Silence], now: datetime
) -> datetime | None:
    """When the job's notices stop being held: the end of the window covering `now` (the latest
    end when several do, followed through windows that overlap or touch it), or None when no
    window of a silence matching the job covers `now`."""
    return _chain_end(_matching(job_name, job_tags, silences), _utc(now))


def covering(
    job_name: str, job_tags: Iterable[str], silences: Sequence[Silence], now: datetime
) -> list[tuple[Silence, datetime]]:
    """The matching silences with a window covering `now`, each with that window's end,
    latest end first: what the dashboard shows (who silenced the job, why, until when)."""
    now = _utc(now)
    found = []
    for silence in _matching(job_name, job_tags, silences):
        end = _covering_end(silence, now)
        if end is not None:
            found.append((silence, end))
    found.sort(key=lambda pair: pair[1], reverse=True)
    return found


def next_boundary(
    job_name: str, job_tags: Iterable[str], silences: Sequence[Silence], now: datetime
) -> datetime | None:
    """The next moment after `now` at which the job's silenced state changes: while silenced,
    `silenced_until`; otherwise the start of the next window of a matching silence (None: no
    window ahead). The deadline tick judges the job again then, so a job still bad when its
    window ends is announced at that moment."""
    now = _utc(now)
    matching = _matching(job_name, job_tags, silences)
    until = _chain_end(matching, now)
    if until is not None:
        return until
    starts = [start for start in (_next_start(s, now) for s in matching) if start is not None]
    return min(starts, default=None)


def window_now(silence: Silence, now: datetime) -> tuple[datetime, datetime] | None:
    """The window of this silence covering `now` (the one ending last), or None."""
    now = _utc(now)
    best: tuple[datetime, datetime] | None = None
    for count, (start, end) in enumerate(silence.windows(now)):
        if start > now or count >= MAX_CHAIN:
            break
        if best is None or end > best[1]:
            best = (start, end)
    return best


def next_window(silence: Silence, now: datetime) -> tuple[datetime, datetime] | None:
    """The first window of this silence that starts after `now`, or None."""
    now = _utc(now)
    for count, (start, end) in enumerate(silence.windows(now)):
        if start > now:
            return start, end
        if count >= MAX_CHAIN:
            break
    return None


def _matching(job_name: str, job_tags: Iterable[str], silences: Sequence[Silence]) -> list[Silence]:
    tags = frozenset(job_tags)
    return [silence for silence in silences if silence.matches(job_name, tags)]


def _covering_end(silence: Silence, now: datetime) -> datetime | None:
    window = window_now(silence, now)
    return window[1] if window is not None else None


def _next_start(silence: Silence, now: datetime) -> datetime | None:
    window = next_window(silence, now)
    return window[0] if window is not None else None


def _chain_end(silences: Sequence[Silence], now: datetime) -> datetime | None:
    """The end of the chain of windows that starts with those covering `now`."""
    until: datetime | None = None
    for silence in silences:
        end = _covering_end(silence, now)
        if end is not None and (until is None or end > until):
            until = end
    if until is None:
        return None
    # Follow windows starting at or before the current end (start inclusive: a window opening
    # exactly when another closes leaves no gap) until none extends it.
    pending = [iter(silence.windows(now)) for silence in silences]
    heads: list[tuple[datetime, datetime] | None] = [next(it, None) for it in pending]
    steps = 0
    extended = True
    while extended and steps < MAX_CHAIN:
        extended = False
        for index, iterator in enumerate(pending):
            while (head := heads[index]) is not None and head[0] <= until and steps < MAX_CHAIN:
                steps += 1
                if head[1] > until:
                    until = head[1]
                    extended = True
                heads[index] = next(iterator, None)
    return until


def _utc(moment: datetime) -> datetime:
    _check_aware(moment)
    return moment.astimezone(UTC)


def _check_aware(moment: datetime | None) -> None:
    # A naive datetime here is a bug in the caller (SQLite hands back naive values unless the
    # column type converts them), never user input.
    if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
        raise ValueError(f"expected an aware datetime, got naive {moment.isoformat()}")
