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
    never opens twice in one night), as service.core.rules does for job schedules."""
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
    return SilenceLookup(silences, now).silenced_until(job_name, job_tags)


def covering(
    job_name: str, job_tags: Iterable[str], silences: Sequence[Silence], now: datetime
) -> list[tuple[Silence, datetime]]:
    """The matching silences with a window covering `now`, each with that window's end,
    latest end first: what the dashboard shows (who silenced the job, why, until when)."""
    return SilenceLookup(silences, now).covering(job_name, job_tags)


def next_boundary(
    job_name: str, job_tags: Iterable[str], silences: Sequence[Silence], now: datetime
) -> datetime | None:
    """The next moment after `now` at which the job's silenced state changes: while silenced,
    `silenced_until`; otherwise the start of the next window of a matching silence (None: no
    window ahead). The deadline tick judges the job again then, so a job still bad when its
    window ends is announced at that moment."""
    return SilenceLookup(silences, now).next_boundary(job_name, job_tags)


def window_now(silence: Silence, now: datetime) -> tuple[datetime, datetime] | None:
    """The window of this silence covering `now` (the one ending last), or None."""
    return _Windows(silence, _utc(now)).covering()


def next_window(silence: Silence, now: datetime) -> tuple[datetime, datetime] | None:
    """The first window of this silence that starts after `now`, or None."""
    return _Windows(silence, _utc(now)).next()


class SilenceLookup:
    """The silences as they stand at one instant, for many jobs: each silence's windows are
    computed once, when a matching job first needs them (a scan asks about thousands of jobs;
    cron steps are what costs). The functions above answer for one job with a lookup of
    their own; the answers are the same."""

    def __init__(self, silences: Sequence[Silence], now: datetime) -> None:
        self.now = _utc(now)
        self.silences = tuple(silences)
        self._windows: dict[int, _Windows] = {}

    def silenced_until(self, job_name: str, job_tags: Iterable[str]) -> datetime | None:
        """See the module function silenced_until."""
        return self._chain_end(self._matching(job_name, job_tags))

    def covering(self, job_name: str, job_tags: Iterable[str]) -> list[tuple[Silence, datetime]]:
        """See the module function covering."""
        found = []
        for index in self._matching(job_name, job_tags):
            window = self._of(index).covering()
            if window is not None:
                found.append((self.silences[index], window[1]))
        found.sort(key=lambda pair: pair[1], reverse=True)
        return found

    def next_boundary(self, job_name: str, job_tags: Iterable[str]) -> datetime | None:
        """See the module function next_boundary."""
        matching = self._matching(job_name, job_tags)
        until = self._chain_end(matching)
        if until is not None:
            return until
        starts = [window[0] for i in matching if (window := self._of(i).next()) is not None]
        return min(starts, default=None)

    def _matching(self, job_name: str, job_tags: Iterable[str]) -> list[int]:
        tags = frozenset(job_tags)
        return [i for i, silence in enumerate(self.silences) if silence.matches(job_name, tags)]

    def _of(self, index: int) -> _Windows:
        windows = self._windows.get(index)
        if windows is None:
            windows = self._windows[index] = _Windows(self.silences[index], self.now)
        return windows

    def _chain_end(self, matching: Sequence[int]) -> datetime | None:
        """The end of the chain of windows that starts with those covering now."""
        ends = [window[1] for i in matching if (window := self._of(i).covering()) is not None]
        if not ends:
            return None
        until = max(ends)
        # Follow windows starting at or before the current end (start inclusive: a window
        # opening exactly when another closes leaves no gap) until none extends it.
        positions = dict.fromkeys(matching, 0)
        extended = True
        while extended:
            extended = False
            for i in matching:
                windows = self._of(i)
                while (window := windows.at(positions[i])) is not None and window[0] <= until:
                    positions[i] += 1
                    if window[1] > until:
                        until = window[1]
                        extended = True
        return until


class _Windows:
    """One silence's windows that end after `now`, in order of start: computed as far as asked,
    and at most MAX_CHAIN of them."""

    __slots__ = ("_done", "_now", "_seen", "_source")

    def __init__(self, silence: Silence, now: datetime) -> None:
        self._now = now
        self._source = silence.windows(now)
        self._seen: list[tuple[datetime, datetime]] = []
        self._done = False

    def at(self, index: int) -> tuple[datetime, datetime] | None:
        while len(self._seen) <= index and not self._done:
            window = next(self._source, None) if len(self._seen) < MAX_CHAIN else None
            if window is None:
                self._done = True
            else:
                self._seen.append(window)
        return self._seen[index] if index < len(self._seen) else None

    def covering(self) -> tuple[datetime, datetime] | None:
        """The window covering now that ends last (they all end after now)."""
        best: tuple[datetime, datetime] | None = None
        index = 0
        while (window := self.at(index)) is not None and window[0] <= self._now:
            if best is None or window[1] > best[1]:
                best = window
            index += 1
        return best

    def next(self) -> tuple[datetime, datetime] | None:
        """The first window that starts after now."""
        index = 0
        while (window := self.at(index)) is not None:
            if window[0] > self._now:
                return window
            index += 1
        return None


def _utc(moment: datetime) -> datetime:
    _check_aware(moment)
    return moment.astimezone(UTC)


def _check_aware(moment: datetime | None) -> None:
    # A naive datetime here is a bug in the caller (SQLite hands back naive values unless the
    # column type converts them), never user input.
    if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
        raise ValueError(f"expected an aware datetime, got naive {moment.isoformat()}")
