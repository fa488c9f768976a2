"""ORM models: jobs (declaration + current state), artifacts, scan runs, status history."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigId, JSONType, UTCDateTime

NOT_GONE = text("gone_since IS NULL")
# jobs.id and scan_runs.id are INTEGER: a larger number names no row (and PostgreSQL refuses it).
MAX_INT_ID = 2**31 - 1


def new_ping_key() -> str:
    return secrets.token_urlsafe(18)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # The secret in the job's ping URL (/ping/<key>): random, made when the job is.
    ping_key: Mapped[str] = mapped_column(String(64), unique=True, default=new_ping_key)
    # The declaration, as validated by service.jobspec.JobSpec (integers for durations, sizes).
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    source: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    schedule: Mapped[dict[str, Any]] = mapped_column(JSONType)
    grace: Mapped[int] = mapped_column(Integer)
    rules: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
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
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[datetime] = mapped_column(UTCDateTime)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    gone_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ScanRun(Base):
    __tablename__ = "scan_runs"

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


class JobCheck(Base):
    """A status change of a job, with the reasons and the newest artifact at that moment."""

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
