"""The scanner's data: a job as read (JobRow), what one listing showed (Observation), what a
judgement decides (JobState), and what a scan reports (JobResult, ScanReport).

Plain data and the conversions at its edges (a listed file's time, the stored form of the newest
artifact and of the reasons). No I/O. May import: the standard library, service.core.jobspec,
service.core.kinds, service.core.rules, service.scanner.sources.base and the pure
service.notify.events (NoticeState); never SQLAlchemy, aiohttp or the database models.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from service.core.jobspec import JobSpec
from service.core.kinds import Status
from service.core.rules import SIZE_DROP_WINDOW, ArtifactFact, Reason
from service.notify.events import NoticeState
from service.scanner.sources.base import FileEntry, Listing

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The newest files a judgement looks at: the size-drop window, the newest and one more for a
# newest file still being written (see rules.evaluate).
NEWEST_JUDGED = SIZE_DROP_WINDOW + 2


def entry_time(entry: FileEntry) -> datetime:
    """A listed file's modification time, aware UTC."""
    return listed_time(entry[2])


def listed_time(mtime_us: int) -> datetime:
    """A modification time in microseconds since the epoch, aware UTC. (timedelta's arguments
    by position: by keyword, 0.9 against 0.4 µs, and every judgement reads a dozen.)"""
    return EPOCH + timedelta(0, 0, mtime_us)


class ListedTimes:
    """The times of a listing's files, oldest first, read only where the retention slots
    bisect them (a listing may hold 200 000 files: they are never all converted): a whole
    listing's entries, or a summary's times (microseconds since the epoch)."""

    __slots__ = ("_entries", "_times")

    def __init__(
        self, entries: Sequence[FileEntry] = (), times: Sequence[int] | None = None
    ) -> None:
        self._entries, self._times = entries, times

    def __len__(self) -> int:
        return len(self._entries) if self._times is None else len(self._times)

    def __getitem__(self, index: int) -> datetime:
        if self._times is None:
            return entry_time(self._entries[index])
        return listed_time(self._times[index])


def to_microseconds(moment: datetime) -> int:
    """A stored time as a listing gives it (microseconds since the epoch)."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def artifact_summary(
    fact: ArtifactFact | None, *, being_written: bool = False
) -> dict[str, Any] | None:
    """The newest artifact as a job stores it (jobs.latest_artifact): {"path", "size", "mtime"},
    with "being_written": true only when it is."""
    if fact is None:
        return None
    summary = {"path": fact.path, "size": fact.size, "mtime": fact.mtime.isoformat()}
    # Only when so: a settled file's summary stays as it always was.
    return {**summary, "being_written": True} if being_written else summary


def last_listed(summary: dict[str, Any] | None) -> ArtifactFact | None:
    """The newest artifact as the job's previous judgement stored it (None: none, or a
    summary this version cannot read)."""
    try:
        if summary is None:
            return None
        mtime = datetime.fromisoformat(summary["mtime"])
        return ArtifactFact(summary["path"], int(summary["size"]), mtime.astimezone(UTC))
    except (KeyError, TypeError, ValueError):
        return None


class StoredState(NoticeState, Protocol):
    """What a judgement's aftermath (history row, notice, reminder, run of bad judgements)
    depends on, as stored: the job as the scan read it (JobRow), or as the writer claimed it."""

    @property
    def status_changed_at(self) -> datetime | None: ...
    @property
    def renotify_at(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class JobRow:
    """What the scanner reads of a job: a plain snapshot, safe to use after a rollback."""

    id: int
    name: str
    # The declaration (with the name) as JSON text, as read: the key of its validated JobSpec
    # (pipeline.job_spec), decoded only when something needs the data itself (`declaration`).
    declaration_json: str
    created_at: datetime
    status: str
    reasons: list[dict[str, str]]
    next_check_at: datetime | None
    checked_at: datetime | None
    status_changed_at: datetime | None
    latest_artifact: dict[str, Any] | None
    artifact_count: int
    listing_digest: str | None
    renotify_at: datetime | None = None
    # What people were last told, and the run of bad judgements: with renotify_at, what a
    # judgement's notice depends on (the writer weighs it again on the row it claims).
    notified_status: str | None = None
    notified_reasons: list[dict[str, str]] | None = None
    bad_since: datetime | None = None
    bad_count: int = 0

    @property
    def declaration(self) -> dict[str, Any]:
        """The declaration as data (decoded at each call)."""
        declared: dict[str, Any] = json.loads(self.declaration_json)
        return declared


@dataclass(frozen=True, slots=True)
class JobState:
    """What a judgement decides for a job: the columns of its state, as the scanner writes them.

    Reasons are rules.Reason; their JSON form (stored_reasons) is made at the storage boundary
    only. `latest_artifact` is already the stored form (artifact_summary)."""

    status: Status
    reasons: tuple[Reason, ...]
    # The next moment the verdict can change (a deadline, an open run's max_duration, a file
    # settling); None: only a change of the files or a ping can change it.
    next_check_at: datetime | None
    latest_artifact: dict[str, Any] | None
    artifact_count: int
    # The digest of the listing judged (None: none, or one that must be synced again).
    listing_digest: str | None

    def stored_reasons(self) -> list[dict[str, str]]:
        """The reasons as stored (jobs.reasons, job_checks, notices): [{code, severity,
        message}]."""
        return [reason.as_dict() for reason in self.reasons]

    def same_as(self, job: JobRow) -> bool:
        """Whether the job as read already holds this state (then only its checked_at moves)."""
        return (
            job.status == self.status
            and job.reasons == self.stored_reasons()
            and job.next_check_at == self.next_check_at
            and job.latest_artifact == self.latest_artifact
            and job.artifact_count == self.artifact_count
            and job.listing_digest == self.listing_digest
        )


@dataclass(slots=True)
class Observation:
    """What one listing of a job's source showed (or why it could not be listed).

    `spec` is None when the stored declaration does not validate (then `source_error` says
    why); `listing` is None when nothing was listed (no source, or a source error)."""

    job: JobRow
    spec: JobSpec | None
    listing: Listing | None = None
    source_error: str | None = None
    digest: str | None = None

    @property
    def ordered(self) -> list[FileEntry]:
        """The files listed, oldest to newest by (mtime, path) (the walker sorts them); of a
        summarized listing, only the newest NEWEST_JUDGED (all of them when fewer)."""
        return self.listing.entries if self.listing is not None else []

    @property
    def count(self) -> int:
        """How many files were listed."""
        return self.listing.count if self.listing is not None else 0

    @property
    def backup_times(self) -> ListedTimes:
        """The times of every file listed, oldest first."""
        listing = self.listing
        if listing is None:
            return ListedTimes()
        return ListedTimes(listing.entries, listing.times)


@dataclass(slots=True)
class JobResult:
    """The outcome of one job's scan, as the CLI and the API report it."""

    name: str
    status: str
    reasons: list[dict[str, str]]
    latest_artifact: dict[str, Any] | None
    artifact_count: int
    new: int = 0
    changed: int = 0
    gone: int = 0
    error: str | None = None
    # Not written: another scan held the job or had judged it from a later look.
    skipped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "reasons": self.reasons,
            "latest_artifact": self.latest_artifact,  # {"path", "size", "mtime"} or None
            "artifact_count": self.artifact_count,
        }

    def keep_stored(self, job: JobRow) -> None:
        """Report the job as it stands in the database: this scan wrote nothing for it."""
        self.latest_artifact, self.artifact_count = job.latest_artifact, job.artifact_count
        self.new = self.changed = self.gone = 0


@dataclass(slots=True)
class ScanReport:
    scan_id: int
    status: str
    jobs: list[JobResult] = field(default_factory=list)
    error: str | None = None  # why the scan failed as a whole
