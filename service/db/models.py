"""ORM models: jobs (declaration + current state), artifacts, scan runs, status history,
notifications, silences."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.db.engine import Base, BigId, JSONType, UTCDateTime

NOT_GONE = text("gone_since IS NULL")
GONE = text("gone_since IS NOT NULL")
PENDING = text("state = 'pending'")
# jobs.id and scan_runs.id are INTEGER: a larger number names no row (and PostgreSQL refuses it).
MAX_INT_ID = 2**31 - 1


def new_ping_key() -> str:
    return secrets.token_urlsafe(18)


# Indexes a migration makes only where it can (0015: pg_trgm's GIN indexes for the jobs' `q`
# search, on PostgreSQL with the extension): not in the models, and left out of the comparison
# of models and database (see include_object).
OPTIONAL_INDEXES = frozenset({"ix_jobs_name_trgm", "ix_jobs_description_trgm"})


def include_object(
    item: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic's filter of what models and database are compared on: not OPTIONAL_INDEXES."""
    return not (type_ == "index" and name in OPTIONAL_INDEXES)


class Job(Base):
    __tablename__ = "jobs"
    # The job list by status then name (`?status=`), and the dashboard's worst-first order of
    # every job sorted from this index alone (migration 0015).
    __table_args__ = (Index("ix_jobs_status_name", "status", "name", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # The secret in the job's ping URL (/ping/<key>): random, made when the job is.
    ping_key: Mapped[str] = mapped_column(String(64), unique=True, default=new_ping_key)
    # The declaration, as validated by service.core.jobspec.JobSpec (integers for durations, sizes).
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    source: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    schedule: Mapped[dict[str, Any]] = mapped_column(JSONType)
    grace: Mapped[int] = mapped_column(Integer)
    rules: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    notify: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    # The retention policy checked (null: none) and the restore-points digest (null: none).
    retention: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # When the next digest is due (null: no report declared); claimed by a conditional UPDATE,
    # so that replicas enqueue each digest once.
    report_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    # State, written by the scanner after each evaluation.
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reasons: Mapped[list[dict[str, str]]] = mapped_column(JSONType, default=list)
    latest_artifact: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    artifact_count: Mapped[int] = mapped_column(Integer, default=0)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The freshness deadline of the last evaluation: "what is due" is one indexed query.
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    # Digest of the last complete listing committed for this job (its source declaration
    # included, so a changed source changes it): an unchanged listing needs no artifact reads
    # or writes.
    listing_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # When the next notice is due, and the deadline tick judges the job: a reminder while the
    # job is critical with notify.renotify_every set, or a notice held until a moment (the end
    # of notify.for; see service.notify.events.notice_due).
    renotify_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    # The status of the last notice about this job (None before any): what people were last
    # told, so that a pause in between neither repeats an alert nor swallows a recovery.
    notified_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # The reasons of that last notice (None: not known, a job told before 0006): a problem
    # that appears across a pause is told, the same problems are not told again.
    notified_reasons: Mapped[list[dict[str, str]] | None] = mapped_column(JSONType, nullable=True)
    # The current run of bad judgements (warning, critical, unknown): when it began (None: the
    # last judgement was not bad) and how many, counted up to notify.after (see bad_streak).
    bad_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    bad_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # PostgreSQL fleets (service/store/fleet.py): the replica listing this job now, until when
    # (a lease: a replica that died loses it then), and when a periodic scan last listed it (a
    # job listed in the current cycle is not listed again by another replica).
    listing_holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    listing_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    listed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The verification declared (service.core.jobspec.Verify); None: nothing verified.
    verify: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (
        # A present artifact is unique by path; a file deleted and re-created later is a
        # new artifact, and the vanished one keeps its history.
        Index(
            "uq_artifacts_job_id_path_present",
            "job_id",
            "path",
            unique=True,
            postgresql_where=NOT_GONE,
            sqlite_where=NOT_GONE,
        ),
        Index("ix_artifacts_job_id_mtime", "job_id", "mtime", "id"),
        # Retention finds the artifacts gone for longer than RETENTION_DAYS without a scan.
        Index(
            "ix_artifacts_gone_since",
            "gone_since",
            postgresql_where=GONE,
            sqlite_where=GONE,
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[datetime] = mapped_column(UTCDateTime)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    gone_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # What a remote source knows of it beyond path, size and time (ETag, host, tags, sizes).
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class ArtifactVerification(Base):
    """The last verification of one artifact (archive read whole, sidecar checksum), when the
    next one is due, and the lease of the verifier reading it now (several replicas verify each
    artifact once: a claim is a conditional UPDATE checked by its rowcount)."""

    __tablename__ = "artifact_verifications"
    __table_args__ = (
        Index("ix_artifact_verifications_job_id", "job_id"),
        Index("ix_artifact_verifications_due_at", "due_at"),
    )

    artifact_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    # The version of the file verified (a file rewritten in place is verified again).
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    mtime: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # service.core.rules.VERIFY_OUTCOMES (None: not verified yet); detail says where it failed.
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    # The sidecar compared (FILE.sha256, SHA256SUMS, ...); None: none found, or not asked.
    sidecar: Mapped[str | None] = mapped_column(Text, nullable=True)
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    digest: Mapped[str | None] = mapped_column(String(200), nullable=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Not before then: it changed while it was read (set by the release, cleared by a result).
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RepositoryCheck(Base):
    """The last `restic check` / `borg check --repository-only` of a job's repository."""

    __tablename__ = "repository_checks"
    __table_args__ = (Index("ix_repository_checks_due_at", "due_at"),)

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    # Not ok because the tool found damage (else it could not run: a lock, a password, time).
    damaged: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[str] = mapped_column(Text, default="")
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ScanRun(Base):
    __tablename__ = "scan_runs"
    __table_args__ = (
        Index(
            "ix_scan_runs_running",
            "started_at",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    jobs_scanned: Mapped[int] = mapped_column(Integer, default=0)
    artifacts_new: Mapped[int] = mapped_column(Integer, default=0)
    artifacts_changed: Mapped[int] = mapped_column(Integer, default=0)
    artifacts_gone: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    # [{"job": name, "message": text}] for jobs whose scan failed or whose source errored.
    error_details: Mapped[list[dict[str, str]]] = mapped_column(JSONType, default=list)
    # Why the scan as a whole failed or was abandoned (one line); None otherwise.
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Moved on by the running scan every HEARTBEAT_SECONDS: a running scan whose heartbeat is
    # older than its lease belongs to a process that died (see service/store/scans.py).
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The replica that ran it (its REPLICA_NAME); None on SQLite and before 0014.
    replica: Mapped[str | None] = mapped_column(String(128), nullable=True)


class Replica(Base):
    """A live member of a PostgreSQL fleet: its membership is leased until `lease_until` and
    renewed by its heartbeat (service/store/fleet.py)."""

    __tablename__ = "replicas"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime)


class ScanCounter(Base):
    """A running total over every scan that ever finished (count, errors, duration histogram,
    ...), moved on in the transaction that closes a scan: /metrics reads these few rows, never
    the whole of scan_runs, and retention deletes old scans without moving a counter back."""

    __tablename__ = "scan_counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class JobCheck(Base):
    """A status change of a job (or a change of its problems at the same status), with the
    reasons and the newest artifact at that moment."""

    __tablename__ = "job_checks"
    __table_args__ = (Index("ix_job_checks_job_id_checked_at", "job_id", "checked_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    previous_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reasons: Mapped[list[dict[str, str]]] = mapped_column(JSONType, default=list)
    latest_artifact: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class ApiToken(Base):
    """An API token: only its SHA-256 is stored; the token itself is shown once, at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ServerSecret(Base):
    """A secret every replica shares and keeps across restarts (random, made on first use):
    `badges` is the HMAC secret of the badge keys (see service.core.badges)."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Ping(Base):
    """One ping from a backup script (Healthchecks' protocol), as received: runs are derived
    from these (a start and the next finish of the same run id make a run with a duration)."""

    __tablename__ = "pings"
    __table_args__ = (Index("ix_pings_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))  # start, success, fail, log
    exit_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    body: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class NotificationEvent(Base):
    """The outbox: a status change to tell people about, written in the same transaction as
    the change itself. The dispatcher routes it to channels (one delivery each)."""

    __tablename__ = "notification_events"
    __table_args__ = (
        Index(
            "ix_notification_events_unrouted",
            "id",
            postgresql_where=text("routed_at IS NULL"),
            sqlite_where=text("routed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # The id receivers see (webhook body, X-Event-Id, e-mail Message-ID): stable across retries.
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True
    )
    job_name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))  # problem, recovery, reminder
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The notice as sent (service.notify.notice.Notice.as_json()).
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # The job's notify.channels when it happened: None means the default channels.
    channels: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    routed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class NotificationDelivery(Base):
    """One event to one channel: pending until delivered, or failed once retries run out, or
    cancelled when its job is deleted first (it survives the job: events keep job_name)."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        Index("uq_notification_deliveries_event_channel", "event_id", "channel", unique=True),
        Index("ix_notification_deliveries_state_due", "state", "next_attempt_at"),
        # "Is an earlier delivery of this job to this channel still waiting?"
        Index(
            "ix_notification_deliveries_pending",
            "channel",
            "job_name",
            "event_id",
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        ),
        # "Which are the oldest pending deliveries of this channel?" (a claim reads them)
        Index(
            "ix_notification_deliveries_pending_by_event",
            "channel",
            "event_id",
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("notification_events.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(100))
    # Deliveries of one job to one channel go out in event order.
    job_name: Mapped[str] = mapped_column(String(100))
    # delivered, failed, or cancelled (its job was deleted before it was sent)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A dispatcher holds the delivery until then; after a crash another one takes it over.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class NotificationAttempt(Base):
    """One try at a delivery, successful or not."""

    __tablename__ = "notification_attempts"
    __table_args__ = (Index("ix_notification_attempts_delivery_id", "delivery_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("notification_deliveries.id", ondelete="CASCADE")
    )
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Both None while it runs, and forever when the dispatcher died during it.
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")


LIVE_NAMED = text("ended_at IS NULL AND name IS NOT NULL")


class Silence(Base):
    """A maintenance window (see service.notify.silences): one-off (`starts_at`, `ends_at`) or
    recurring (`cron` in `timezone`, each fire opening `duration` seconds). Never deleted: one
    ended early (DELETE, or pruned from the jobs file) keeps its row with `ended_at`."""

    __tablename__ = "silences"
    __table_args__ = (
        # Silences declared in the jobs file are applied by name; an ended one frees its name.
        Index(
            "uq_silences_name_live",
            "name",
            unique=True,
            postgresql_where=LIVE_NAMED,
            sqlite_where=LIVE_NAMED,
        ),
        Index("ix_silences_ends_at", "ends_at"),
        CheckConstraint(
            "(cron IS NULL AND timezone IS NULL AND duration IS NULL"
            " AND starts_at IS NOT NULL AND ends_at IS NOT NULL)"
            " OR (cron IS NOT NULL AND timezone IS NOT NULL AND duration IS NOT NULL"
            " AND starts_at IS NULL AND ends_at IS NULL)",
            name="one_off_or_recurring",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # None for silences made through the API; the declared name for the jobs file's.
    name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    origin: Mapped[str] = mapped_column(String(8))  # api, file
    comment: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    jobs: Mapped[list[str]] = mapped_column(JSONType, default=list)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cron: Mapped[str | None] = mapped_column(String(500), nullable=True)
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    duration: Mapped[int | None] = mapped_column(Integer, nullable=True)  # seconds
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
