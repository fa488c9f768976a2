"""The API's pydantic models: query strings and bodies are validated by them, responses are
serialized through them, and /api/openapi.json is generated from them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Discriminator, Field, field_validator
from pydantic import Tag as UnionTag
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema

from service.core import jobspec
from service.core.jobspec import (
    DEFAULT_SETTLE,
    JOB_NAME_PATTERN,
    Description,
    Duration,
    LocalSource,
    Notify,
    Report,
    Retention,
    Rules,
    Schedule,
    Tag,
    Tags,
    Verify,
)
from service.core.kinds import Severity, Status
from service.store.tokens import TOKEN_NAME_PATTERN

MAX_LIMIT = 1000
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description=f"page size, 1 to {MAX_LIMIT}")]
# Keyset cursors and offsets are row ids and counts: bounded so that no database overflows.
Cursor = Annotated[int, Field(ge=1, le=2**62)]


class _Query(BaseModel):
    """A query string: unknown parameters are errors (a typo must not silently match all)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class JobsQuery(_Query):
    status: Status | None = Field(default=None, description="only jobs in this status")
    tag: Tag | None = Field(default=None, description="only jobs carrying this tag")
    q: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^[^\x00]*$",
        description="case-insensitive text in the name or description",
    )
    limit: Limit = 100
    offset: int = Field(default=0, ge=0, le=10**9)


class PageQuery(_Query):
    limit: Limit = 100
    before: Cursor | None = Field(
        default=None, description="the `next_before` of the previous page (newest first)"
    )


class ArtifactsQuery(PageQuery):
    include_gone: bool = Field(default=False, description="also list vanished artifacts")


class RestorePointsQuery(_Query):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: AwareDatetime | None = Field(
        default=None, alias="from",
        description="the range's start, inclusive, with its offset (default: 31 days before `to`)",
    )  # fmt: skip
    to: AwareDatetime | None = Field(
        default=None, description="the range's end, exclusive, with its offset (default: now)"
    )
    limit: Limit = 1000


class ScanStartQuery(_Query):
    wait: bool = Field(default=False, description="answer when the scan is done (200)")


def _no_default(schema: JsonDict) -> None:
    schema.pop("default", None)


def _name_schema(schema: JsonDict) -> None:
    _no_default(schema)
    schema["pattern"] = JOB_NAME_PATTERN
    schema["maxLength"] = 100


class JobPatch(BaseModel):
    """Fields to change; a field left out keeps its value, `null` resets it to its default.

    Each given field replaces the stored one entirely (send the whole `rules` object)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Every job has a name and a schedule: they can be changed, not reset (null is refused), so
    # the document shows no default (`"default": null` beside `"type": "string"` is invalid).
    # The pattern is checked with the whole job (by JobSpec, with a message that explains it).
    name: str | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_name_schema)
    # The same bounds as JobSpec's, so that the document states them for PATCH too.
    description: Description | None = None
    tags: Tags | None = None
    source: LocalSource | None = None
    schedule: Schedule | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_no_default)
    grace: Duration | None = None
    rules: Rules | None = None
    notify: Notify | None = None
    paused: bool | None = None
    retention: Retention | None = None
    report: Report | None = None
    verify: Verify | None = None

    @field_validator("name", "schedule")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("cannot be null: change it instead")
        return value


# --- responses ------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ReasonOut(_Out):
    code: str
    severity: Severity
    message: str


class ArtifactSummary(_Out):
    path: str
    size: int
    mtime: datetime
    being_written: bool = Field(
        default=False,
        description="modified within the source's `settle` time or since the previous listing: "
        "size rules judge the newest settled file instead",
    )


# The declaration as answered: plain data, checked when it was written, not on every read
# (validating a cron expression for each of 100 jobs would cost a request milliseconds).
class LocalSourceOut(_Out):
    type: Literal["local"]
    path: str
    pattern: str
    recursive: bool
    # Defaults for declarations stored before these fields existed.
    exclude: list[str] | None = Field(
        default=None, description="globs on the file name left out; null: the default list"
    )
    settle: int = Field(default=DEFAULT_SETTLE, description="seconds")


# Remote sources are answered as declared (secrets are references: `${VARIABLE}` or a file).
SourceOut = Annotated[
    Annotated[LocalSourceOut, UnionTag("local")]
    | Annotated[jobspec.S3Source, UnionTag("s3")]
    | Annotated[jobspec.SftpSource, UnionTag("sftp")]
    | Annotated[jobspec.ResticSource, UnionTag("restic")]
    | Annotated[jobspec.BorgSource, UnionTag("borg")],
    Discriminator(jobspec.source_type),
]


class ScheduleOut(_Out):
    every: int | None
    cron: str | None
    timezone: str | None


class RulesOut(_Out):
    min_size: int | None = None
    max_size: int | None = None
    min_count: int | None = None
    max_size_drop: float | None = None
    max_duration: int | None = None
    min_duration: int | None = None


class NotifyOut(_Out):
    model_config = ConfigDict(frozen=True, serialize_by_alias=True)

    channels: list[str] | None = Field(
        default=None, description="channel names; null means the default channels"
    )
    renotify_every: int | None = Field(default=None, description="seconds")
    # Defaults for declarations stored before these fields existed.
    after: int = Field(default=1, description="consecutive bad judgements before a problem is told")
    for_: int = Field(
        default=0,
        alias="for",
        description="seconds a job must stay bad, without a break, before a problem is told",
    )


class RetentionOut(_Out):
    daily: int = Field(description="calendar days, in the schedule's time zone")
    weekly: int = Field(description="ISO weeks (Monday to Sunday)")
    monthly: int
    yearly: int
    strict: bool = Field(description="a gap is critical instead of a warning")


class ReportOut(_Out):
    channel: str
    every: int = Field(description="seconds between two digests")


class HeldNoticeOut(_Out):
    held: Literal["silence", "for", "after"] = Field(
        description="the first condition not met yet: a silence in force, notify.for (the job "
        "has not been bad long enough), notify.after (not enough bad judgements in a row)"
    )
    kind: Literal["problem", "changed", "recovery", "reminder"] = Field(
        description="the notice held"
    )
    bad_since: datetime | None = Field(
        description="when the job's current run of bad judgements began"
    )
    until: datetime | None = Field(
        description="when the conditions on time are met (end of notify.for or of the silence): "
        "the notice goes out then if the job is still bad and `judgements` is 0; null: only "
        "more bad judgements are awaited"
    )
    judgements: int = Field(description="bad judgements in a row still needed by notify.after")


class RepositoryVerifyOut(_Out):
    every: int = Field(description="seconds")
    read_data_subset: float | None = Field(default=None, description="percent (restic)")


class VerifyOut(_Out):
    archive: bool
    checksum: Literal["sidecar", "none"]
    every: int = Field(description="seconds")
    unverified_after: int = Field(description="seconds")
    repository: RepositoryVerifyOut | None = None


class JobOut(_Out):
    id: int
    name: str
    description: str
    tags: list[str]
    source: SourceOut | None
    schedule: ScheduleOut
    grace: int
    rules: RulesOut
    notify: NotifyOut
    paused: bool
    retention: RetentionOut | None = Field(
        default=None, description="the retention policy checked (retention_gap); null: none"
    )
    report: ReportOut | None = Field(
        default=None, description="the digest of restore points sent to a channel; null: none"
    )
    verify: VerifyOut | None = Field(default=None, description="null: nothing verified")
    status: Status
    reasons: list[ReasonOut]
    latest_artifact: ArtifactSummary | None
    artifact_count: int
    checked_at: datetime | None
    status_changed_at: datetime | None
    next_check_at: datetime | None
    notice: HeldNoticeOut | None = Field(
        default=None,
        description="a notice owed but held back, as the last judgement left it (notify.after, "
        "notify.for, a silence); null when nothing is held",
    )
    created_at: datetime
    updated_at: datetime
    # A ping is a write: a read-only token could send success pings and hide a failing job.
    ping_key: str | None = Field(
        description="the secret of the job's ping URL; null for a read-only token"
    )
    ping_url: str | None = Field(
        description="where the backup script pings (Healthchecks protocol), on PUBLIC_URL when "
        "set; null for a read-only token"
    )


class JobList(_Out):
    items: list[JobOut]
    total: int


class ArtifactOut(_Out):
    id: int
    path: str = Field(description="a file's path below the source, an object's key below the "
                      "prefix, a snapshot's id, an archive's name")  # fmt: skip
    size: int
    mtime: datetime
    first_seen: datetime
    last_seen: datetime
    gone_since: datetime | None
    details: dict[str, Any] | None = Field(
        default=None,
        description="what a remote source tells of it: an object's etag; a snapshot's host, "
        "tags, paths; an archive's sizes",
    )
    verification: ArtifactVerificationOut | None = Field(
        default=None,
        description="its verification (jobs with verify.archive or verify.checksum); null: not "
        "verified by this job, or not looked at yet",
    )


VerificationState = Literal[
    "ok", "corrupt", "checksum_mismatch", "sidecar_error", "too_large", "unreadable", "not_yet"
]


class ArtifactVerificationOut(_Out):
    state: VerificationState = Field(
        description="the outcome of the last verification of the version present; not_yet: "
        "never verified, or rewritten since"
    )
    verified_at: datetime | None = Field(description="when it was last verified")
    outcome: VerificationState | None = Field(
        description="what the last verification found (of the version then present)"
    )
    detail: str = Field(description="which check failed and where; what was checked")
    sidecar: str | None = Field(description="the checksum file compared; null: none was")
    bytes_read: int
    seconds: float
    digest: str | None = Field(description="the digest computed (hex), when a sidecar was read")
    next_at: datetime = Field(description="when it is due to be verified again")
    verifying: bool = Field(description="a verifier holds it now")


class ArtifactPage(_Out):
    items: list[ArtifactOut]
    next_before: int | None = Field(description="pass as `before` for the next page")


class SlotOut(_Out):
    kind: Literal["daily", "weekly", "monthly", "yearly"]
    label: str = Field(description="2026-11-30, 2026-W48 (ISO week), 2026-11, 2026")
    start: datetime = Field(description="the period's first instant in the schedule's zone")
    end: datetime = Field(description="the period's end, exclusive")
    state: Literal["kept", "missing", "not_expected"] = Field(
        description="`kept`: a backup present in it; `missing`: none, though one was due "
        "(retention_gap); `not_expected`: none was due (the job is younger, or its schedule "
        "had no backup due in it: see `why`)"
    )
    newest: datetime | None = Field(description="the newest backup in it: the one kept for it")
    current: bool = Field(description="the period now is in (listed once it holds a backup)")
    why: str = Field(description="for `not_expected`: why no backup was due in it")


class RestorePointOut(_Out):
    path: str
    size: int = Field(description="bytes")
    mtime: datetime
    first_seen: datetime = Field(description="when this service first saw it")
    slots: list[str] = Field(
        description="the labels of the retention slots it is the kept backup of (the newest "
        "backup of each)"
    )
    verification: VerificationState | None = Field(
        description="what the last verification of this version found (see the artifacts' "
        "`verification.state`); null: the job verifies no files (`verify.archive`, "
        "`verify.checksum`)"
    )
    verified_at: datetime | None = Field(
        description="when this version was verified; null: not yet, or not verified"
    )


class RestorePointsOut(_Out):
    model_config = ConfigDict(frozen=True, serialize_by_alias=True)

    job: str
    from_: datetime = Field(alias="from")
    to: datetime
    timezone: str = Field(description="the zone the slots are periods of (the schedule's)")
    retention: RetentionOut | None
    slots: list[SlotOut] = Field(
        description="the retention slots now, newest first within each kind (empty without a "
        "retention policy)"
    )
    items: list[RestorePointOut] = Field(
        description="the backups present in the range, newest first"
    )
    truncated: bool = Field(description="more than `limit` backups in the range: narrow it")


class HistoryEntry(_Out):
    id: int
    checked_at: datetime
    status: Status
    previous_status: Status | None
    reasons: list[ReasonOut]
    latest_artifact: ArtifactSummary | None


class HistoryPage(_Out):
    items: list[HistoryEntry]
    next_before: int | None


class RunOut(_Out):
    outcome: Literal["running", "abandoned", "success", "fail", "log"] = Field(
        description="`abandoned`: a later start with the same run id came before its finish"
    )
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None = Field(description="seconds, when both ends are known")
    exit_status: int | None
    rid: str | None
    log: str = Field(description="the body of the finishing ping (first 10 KB)")


class RunList(_Out):
    items: list[RunOut]


class RunsQuery(_Query):
    limit: Limit = 100


class ScanError(_Out):
    job: str
    message: str


class ScanOut(_Out):
    id: int
    trigger: str
    status: Literal["running", "finished", "interrupted", "failed", "abandoned"]
    started_at: datetime
    finished_at: datetime | None
    jobs_scanned: int
    artifacts_new: int
    artifacts_changed: int
    artifacts_gone: int
    errors: int
    error_details: list[ScanError]
    error: str | None = Field(
        description="why the scan failed or was abandoned as a whole; null otherwise"
    )


class ScanPage(_Out):
    items: list[ScanOut]
    next_before: int | None


class SchedulerState(_Out):
    running: bool
    next_run_at: datetime | None


class StatusOut(_Out):
    status: Literal["ok", "warning", "critical", "unknown"]
    counts: dict[Status, int]
    jobs: int
    last_scan: ScanOut | None
    scheduler: SchedulerState


class LiveOut(_Out):
    status: Literal["ok"]


class ReadyOut(_Out):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


class ErrorBody(_Out):
    code: str
    message: str
    details: list[Any]


class ErrorOut(_Out):
    error: ErrorBody


class DeliveryOut(_Out):
    channel: str
    state: Literal["pending", "delivered", "failed", "cancelled"] = Field(
        description="failed: refused for good, or out of retries; cancelled: its job was "
        "deleted before it was sent"
    )
    attempts: int
    next_attempt_at: datetime = Field(description="when a pending delivery is tried next")
    delivered_at: datetime | None
    last_error: str | None


class ReasonChangesOut(_Out):
    new: list[str] = Field(
        description="codes of the job's problems at its status (its worst severity) that it "
        "has now and had not when last told"
    )
    gone: list[str] = Field(
        description="codes of the problems told before that the job no longer has"
    )


class NotificationOut(_Out):
    id: int
    event_id: str = Field(description="what receivers see (X-Event-Id, Message-ID)")
    kind: Literal["problem", "changed", "recovery", "reminder", "digest"] = Field(
        description="`digest`: the restore points the job's `report` sends"
    )
    created_at: datetime
    status: Status
    previous_status: Status | None
    reasons: list[ReasonOut]
    changes: ReasonChangesOut | None = Field(
        default=None,
        description='a "changed" notice (the status told, another set of problems at it): '
        "what changed",
    )
    routed: bool = Field(description="whether its deliveries exist yet (within seconds)")
    deliveries: list[DeliveryOut]


class NotificationPage(_Out):
    items: list[NotificationOut]
    next_before: int | None


# --- silences -------------------------------------------------------------------------------


class SilencesQuery(_Query):
    limit: Limit = 100
    offset: int = Field(default=0, ge=0, le=10**9)


class RecurrenceOut(_Out):
    cron: str
    timezone: str
    duration: int = Field(description="seconds each window lasts")


class SilenceOut(_Out):
    id: int
    name: str | None = Field(description="the name a jobs file declared it under; null if made "
                             "through the API")  # fmt: skip
    origin: Literal["api", "file"]
    comment: str
    created_by: str = Field(description="the name of the token that made it, or `jobs file`")
    created_at: datetime
    jobs: list[str]
    tags: list[str]
    starts_at: datetime | None = Field(description="one-off silences")
    ends_at: datetime | None = Field(description="one-off silences")
    recurring: RecurrenceOut | None = Field(description="recurring silences (jobs file)")
    ended_at: datetime | None = Field(description="when it was ended early (kept as history)")
    state: Literal["active", "upcoming", "expired"]
    active_until: datetime | None = Field(description="the end of the window covering now")
    next_start: datetime | None = Field(description="the start of the next window")


class SilenceList(_Out):
    items: list[SilenceOut] = Field(
        description="not over yet first (active and upcoming, soonest first), then history"
    )
    total: int


# --- tokens ---------------------------------------------------------------------------------


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=TOKEN_NAME_PATTERN,
        max_length=100,
        description="unique; letters, digits, `_`, `.`, `@`, `-`",
    )
    access: Literal["read-only", "read-write"] = Field(
        default="read-only", description="`read-only` may GET; `read-write` may also change"
    )


class TokenOut(_Out):
    id: int
    name: str
    access: Literal["read-only", "read-write"]
    created_at: datetime


class TokenCreated(TokenOut):
    token: str = Field(description="the token itself: shown this once, never again")


class TokenList(_Out):
    items: list[TokenOut] = Field(description="by name; never a token nor its hash")


# --- badges ---------------------------------------------------------------------------------


class ShieldsOut(_Out):
    """shields.io's endpoint format."""

    schemaVersion: int
    label: str
    message: Status
    color: str


class BadgeOut(_Out):
    name: str = Field(description="the job's name, or the tag")
    status: Status = Field(description="the job's status; a tag's: the worst of its jobs'")
    svg_url: str = Field(description="the badge as an image (SVG)")
    json_url: str = Field(description="the badge in shields.io's endpoint format (JSON)")
    shields_url: str = Field(description="the badge drawn by shields.io from `json_url`")


class BadgeList(_Out):
    jobs: list[BadgeOut]
    tags: list[BadgeOut]
