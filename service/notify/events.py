"""What is worth telling people, as pure functions: which status changes make a notice, when
a critical notice is repeated, and the outbox row of a notice."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from service.notify.notice import Notice

PROBLEMS = ("warning", "critical", "unknown")


def notice_kind(notified: str | None, status: str) -> str | None:
    """What a new `status` tells people who were last told `notified` (None: nothing yet):
    "problem" when the job enters a bad status, or another bad one; "recovery" when it is ok
    again after one; None otherwise (a new job found ok, a pause, a status already told, so
    that critical → paused → critical repeats nothing and critical → paused → ok recovers)."""
    if status in PROBLEMS and status != notified:
        return "problem"
    if status == "ok" and notified in PROBLEMS:
        return "recovery"
    return None


def renotify_at(
    status: str,
    previous: str | None,
    scheduled: datetime | None,
    every: int | None,
    now: datetime,
) -> datetime | None:
    """When to repeat a critical notice: `every` seconds after the job became critical, then
    as the reminders go out; None when the job is not critical or asks for no reminders."""
    if status != "critical" or not every:
        return None
    if previous != "critical" or scheduled is None:
        return now + timedelta(seconds=every)
    return scheduled


def located(
    artifact: Mapping[str, Any] | None, source: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The newest artifact with its full path (a job stores it relative to its source), so a
    notice read at 3 a.m. says where to look."""
    if artifact is None:
        return None
    if source is None or not source.get("path"):
        return dict(artifact)
    return {**artifact, "path": os.path.join(source["path"], artifact["path"])}


def event_row(
    *,
    job_id: int,
    job_name: str,
    kind: str,
    status: str,
    previous_status: str | None,
    reasons: list[dict[str, str]],
    latest_artifact: dict[str, Any] | None,
    channels: Sequence[str] | None,
    now: datetime,
) -> dict[str, Any]:
    """The notification_events row for a notice (insert it in the status change's transaction)."""
    notice = Notice(
        event_id=str(uuid.uuid4()),
        kind=kind,
        job=job_name,
        status=status,
        previous_status=previous_status,
        reasons=reasons,
        latest_artifact=latest_artifact,
        occurred_at=now,
    )
    return {
        "event_id": notice.event_id,
        "job_id": job_id,
        "job_name": job_name,
        "kind": kind,
        "created_at": now,
        "payload": notice.as_json(),
        "channels": None if channels is None else list(channels),
        "routed_at": None,
    }
