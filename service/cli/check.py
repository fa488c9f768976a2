"""`backup-monitor check`: a Nagios/Icinga plugin. The rendering is a pure function of the jobs'
stored states (`nagios_output`); reading them is one query (`read_states`), which writes
nothing, so a check run every minute costs one SELECT and never a scan.

Output, after the Nagios plugin guidelines (multi-line output with performance data):

    CRITICAL - 1 critical, 1 warning of 3 jobs
    CRITICAL: db-dump: newest backup is 3 days old; ...
    WARNING: photos: only 1 backup present; at least 3 expected
    | 'age_db-dump'=259200s;;;0 'size_db-dump'=1024B;;;0 ...

The first line is the summary (what a pager shows), one line per bad job follows, and the
performance data comes last, after a `|` (a job with no backup yet has `U`, undetermined).
The exit code is the worst status's: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (ranked as the
scan ranks them: critical > warning > unknown > ok; pending and paused count as ok).

Standard library only at import time (the command line starts fast); the database is imported
by `read_states` when it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

NAGIOS_CODES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
BAD = ("critical", "warning", "unknown")
# `--job nope` names the jobs there are, up to this many.
NAMES_SHOWN = 20


@dataclass(frozen=True, slots=True)
class JobState:
    """A job as its last judgement left it (the columns of `jobs` a check reads)."""

    name: str
    status: str
    reasons: Sequence[dict[str, str]]
    latest_artifact: dict[str, Any] | None
    checked_at: datetime | None = None


def judged_too_long_ago(
    states: Sequence[JobState], now: datetime, max_age: timedelta
) -> list[JobState]:
    """`--max-age`: a job not judged within `max_age` (or never) is UNKNOWN, as statuses
    nobody keeps current (the service stopped) must not read OK forever. Paused jobs are left
    as they are (nothing judges them)."""
    # lazy: imported when the command runs (start-up speed)
    from service.core.rules import worst_status
    from service.core.units import format_duration

    kept = []
    for state in states:
        if state.status != "paused" and (
            state.checked_at is None or now - state.checked_at > max_age
        ):
            when = (
                "never judged"
                if state.checked_at is None
                else f"last judged {format_duration((now - state.checked_at).total_seconds())} ago"
            )
            reason = {
                "code": "not_judged",
                "severity": "unknown",
                "message": f"{when} (is the service scanning?)",
            }
            # A stale warning or critical stays so (ranked above unknown): only "fine" is doubted.
            status = worst_status([state.status, "unknown"])
            state = replace(state, status=status, reasons=[*state.reasons, reason])
        kept.append(state)
    return kept


def _one_line(text: str) -> str:
    # lazy: imported when the command runs (start-up speed)
    from service.core.visible import visible

    return visible(" ".join(text.split()))


def perfdata(state: JobState, now: datetime) -> str:
    """`'age_<job>'=<s>s;;;0 'size_<job>'=<bytes>B;;;0`: the newest backup's age (whole
    seconds, never below 0) and size; `U` for both when the job has none (or an unreadable
    one). Job names hold no quote or `=` (the name pattern), so the labels need no escaping."""
    latest = state.latest_artifact
    age = size = "U"
    try:
        if latest is not None:
            mtime = datetime.fromisoformat(latest["mtime"])
            age = f"{max(0, int((now - mtime).total_seconds()))}s"
            size = f"{int(latest['size'])}B"
    except (KeyError, TypeError, ValueError):
        age = size = "U"
    return f"'age_{state.name}'={age};;;0 'size_{state.name}'={size};;;0"


def nagios_output(states: Sequence[JobState], now: datetime) -> tuple[int, str]:
    """The plugin's exit code and text for these jobs (in the order given)."""
    # lazy: imported when the command runs (start-up speed)
    from service.core.rules import worst_status

    worst = worst_status(state.status for state in states)
    counts = {status: sum(state.status == status for state in states) for status in BAD}
    told = [f"{counts[status]} {status}" for status in BAD if counts[status]]
    plural = "job" if len(states) == 1 else "jobs"
    if told:
        summary = f"{worst.upper()} - {', '.join(told)} of {len(states)} {plural}"
    else:
        summary = f"OK - {len(states)} {plural}, none in trouble"
    lines = [summary]
    for state in states:
        if state.status in BAD:
            why = "; ".join(_one_line(reason.get("message", "")) for reason in state.reasons)
            lines.append(f"{state.status.upper()}: {state.name}: {why or 'no reason given'}")
    if states:
        lines.append("| " + " ".join(perfdata(state, now) for state in states))
    return NAGIOS_CODES[worst], "\n".join(lines)


def unknown_job(name: str, known: Sequence[str]) -> str:
    """What `--job NAME` says of a name no job has: the names there are (the first few)."""
    # lazy: imported when the command runs (start-up speed)
    from service.core.visible import quote

    if not known:
        return f"no job named {quote(name)} (no jobs declared: see `backup-monitor jobs apply`)"
    shown = ", ".join(known[:NAMES_SHOWN])
    more = f" and {len(known) - NAMES_SHOWN} more" if len(known) > NAMES_SHOWN else ""
    return f"no job named {quote(name)} (jobs: {shown}{more})"


async def job_names(session: AsyncSession) -> list[str]:
    """Every job's name, sorted (one query, no write)."""
    # lazy: imported when the command runs (start-up speed)
    from sqlalchemy import select

    from service.db.models import Job

    return list(await session.scalars(select(Job.name).order_by(Job.name)))


async def read_states(
    session: AsyncSession, *, name: str | None = None, tag: str | None = None
) -> list[JobState]:
    """The jobs (that one, those with that tag, or all) as last judged, by name: one SELECT,
    nothing written."""
    # lazy: imported when the command runs (start-up speed)
    from sqlalchemy import select

    from service.db.engine import is_postgresql
    from service.db.models import Job
    from service.store.jobs import JobFilter, filtered

    columns = (Job.name, Job.status, Job.reasons, Job.latest_artifact, Job.checked_at)
    query = filtered(select(*columns), is_postgresql(session), JobFilter(tag=tag))
    if name is not None:
        query = query.where(Job.name == name)
    rows = (await session.execute(query.order_by(Job.name))).all()
    return [
        JobState(row.name, row.status, row.reasons or [], row.latest_artifact, row.checked_at)
        for row in rows
    ]
