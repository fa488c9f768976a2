"""Prometheus metrics at /metrics, read from the database at scrape time: right after a restart,
and the same from every replica.

The per-job families (6 families, about 12 samples a job: 24 000 lines for 2 000 jobs) are
written by a lean encoder of our own that escapes each job's labels once; prometheus-client's
encoders escape every sample name character by character, which took ~0.2 s for 2 000 jobs.
The output is byte for byte what prometheus-client writes for the same families (compared in
tests/unit/test_metrics_encoder.py); the service-wide families, the `# EOF` line and the choice
of format stay with prometheus-client.

Every per-job series carries one label, `backup_job` (never `job`: Prometheus' own target label),
so replicas' series differ only by their target labels and `max by (backup_job)` merges them;
tags are series of their own (`backup_job_tag`), so changing a job's tags starts no new series
of its status (an alert's `for:` timer is not reset).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector, exposition
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.rules import STATUSES, VERIFY_OUTCOMES
from service.db.models import (
    Artifact,
    ArtifactVerification,
    Job,
    NotificationDelivery,
    RepositoryCheck,
)
from service.http.api.errors import ApiError
from service.http.api.openapi import operation
from service.runtime.keys import sessionmaker_key, settings_key, verifier_key
from service.runtime.verifier import VerifierStats
from service.store.scans import (
    ARTIFACTS_NEW,
    DURATION_BUCKETS,
    DURATION_SUM,
    ERRORS,
    FAILED_SCANS,
    LAST_FINISHED,
    SCANS,
    bucket_name,
    failures_in_a_row,
    read_counters,
)
from service.store.tokens import same_secret

JOB_LABELS = ("backup_job",)

# The per-job gauge families, (name, help), in the order they are exposed.
STATUS_FAMILY = ("backup_job_status", "1 for the job's current status, 0 for the others")
TAG_FAMILY = ("backup_job_tag", "1 for each of the job's tags")
NEWEST_FAMILY = (
    "backup_job_last_artifact_timestamp_seconds", "Modification time of the newest backup file"
)  # fmt: skip
SIZE_FAMILY = ("backup_job_last_artifact_size_bytes", "Size of the newest backup file")
COUNT_FAMILY = ("backup_job_artifacts", "Backup files present in the job's source")
DEADLINE_FAMILY = (
    "backup_job_deadline_timestamp_seconds",
    "The next moment the job's verdict can change (a backup due, a new file settled, a run's "
    "time limit, a verification due, a future-dated file's date); a late job keeps its passed "
    "deadline",
)
JOB_FAMILIES = (
    STATUS_FAMILY,
    TAG_FAMILY,
    NEWEST_FAMILY,
    SIZE_FAMILY,
    COUNT_FAMILY,
    DEADLINE_FAMILY,
)

routes = web.RouteTableDef()

Encoder = Callable[[Collector], bytes]


def _go_float(value: float) -> str:
    """A sample value as prometheus-client writes it (both formats)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def job_families(jobs: Iterable[Any]) -> list[Metric]:
    """Per-job metrics from the rows of `read_jobs`, as prometheus-client families: the
    reference for `render_job_families`, and what serves the formats that one does not write."""
    status = GaugeMetricFamily(*STATUS_FAMILY, labels=[*JOB_LABELS, "status"])
    tag = GaugeMetricFamily(*TAG_FAMILY, labels=[*JOB_LABELS, "tag"])
    newest = GaugeMetricFamily(*NEWEST_FAMILY, labels=JOB_LABELS)
    size = GaugeMetricFamily(*SIZE_FAMILY, labels=JOB_LABELS)
    count = GaugeMetricFamily(*COUNT_FAMILY, labels=JOB_LABELS)
    deadline = GaugeMetricFamily(*DEADLINE_FAMILY, labels=JOB_LABELS)
    for job in jobs:
        labels = [job.name]
        for name in STATUSES:
            status.add_metric([*labels, name], 1.0 if job.status == name else 0.0)
        for tag_name in distinct(job.tags):
            tag.add_metric([*labels, tag_name], 1.0)
        count.add_metric(labels, job.artifact_count)
        if job.last_mtime is not None:
            newest.add_metric(labels, datetime.fromisoformat(job.last_mtime).timestamp())
            size.add_metric(labels, float(job.last_size))
        if job.next_check_at is not None:
            deadline.add_metric(labels, job.next_check_at.timestamp())
    return [status, tag, newest, size, count, deadline]


def distinct(tags: Iterable[str]) -> list[str]:
    """A job's tags once each, in order: two equal samples would make the exposition invalid."""
    return list(dict.fromkeys(tags))


def escape_label_value(value: str) -> str:
    """A label value as both text formats write it: backslash, newline and double quote
    backslash-escaped, everything else (non-ASCII included) as is."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family_header(name: str, documentation: str, *, openmetrics: bool) -> str:
    if openmetrics:  # OpenMetrics escapes the help text like a label value
        text = escape_label_value(documentation)
    else:
        text = documentation.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {text}\n# TYPE {name} gauge\n"


def render_job_families(jobs: Iterable[Any], *, openmetrics: bool) -> str:
    """The text of `job_families(jobs)` in OpenMetrics or the classic text format, exactly as
    prometheus-client writes it (names and label names need no escaping: they are ours and
    legacy-valid; labels in sorted order, backup_job < status, backup_job < tag), without the
    final `# EOF`."""
    one, zero = _go_float(1.0), _go_float(0.0)
    statuses = [(name, f',status="{escape_label_value(name)}"') for name in STATUSES]
    status_lines: list[str] = []
    tag_lines: list[str] = []
    newest: list[str] = []
    size: list[str] = []
    count: list[str] = []
    deadline: list[str] = []
    for job in jobs:
        name = f'backup_job="{escape_label_value(job.name)}"'
        labels = f"{{{name}}} "
        current = job.status
        for status, status_label in statuses:
            value = one if status == current else zero
            status_lines.append(f"backup_job_status{{{name}{status_label}}} {value}\n")
        for tag in distinct(job.tags):
            tag_lines.append(f'backup_job_tag{{{name},tag="{escape_label_value(tag)}"}} {one}\n')
        count.append(f"backup_job_artifacts{labels}{_go_float(job.artifact_count)}\n")
        if job.last_mtime is not None:
            mtime = _go_float(datetime.fromisoformat(job.last_mtime).timestamp())
            newest.append(f"backup_job_last_artifact_timestamp_seconds{labels}{mtime}\n")
            last_size = _go_float(float(job.last_size))
            size.append(f"backup_job_last_artifact_size_bytes{labels}{last_size}\n")
        if job.next_check_at is not None:
            deadline.append(
                f"backup_job_deadline_timestamp_seconds{labels}"
                f"{_go_float(job.next_check_at.timestamp())}\n"
            )
    out: list[str] = []
    for (family, documentation), lines in zip(
        JOB_FAMILIES, (status_lines, tag_lines, newest, size, count, deadline), strict=True
    ):
        out.append(_family_header(family, documentation, openmetrics=openmetrics))
        out.extend(lines)
    return "".join(out)


def lean_format(encode: Encoder) -> bool | None:
    """Whether `render_job_families` writes what `encode` (from choose_encoder) would: True for
    OpenMetrics 1.0, False for the classic text format, None for any other variant (name
    escaping `dots` or `values`, another OpenMetrics version, an encoder this code does not
    know), left entirely to prometheus-client."""
    if encode is exposition.generate_latest:  # text/plain; version=0.0.4
        return False
    if not isinstance(encode, partial) or encode.args:
        return None
    options = dict(encode.keywords)
    # Our metric and label names are legacy-valid: both of these leave them unchanged.
    if options.pop("escaping", openmetrics_exposition.UNDERSCORES) not in (
        openmetrics_exposition.UNDERSCORES,
        openmetrics_exposition.ALLOWUTF8,
    ):
        return None
    if encode.func is openmetrics_exposition.generate_latest:
        return True if options.pop("version", "1.0.0") == "1.0.0" and not options else None
    if encode.func is exposition.generate_latest and not options:
        return False
    return None


def service_families(
    bucket_counts: Sequence[int], scans: int, duration_sum: float, errors: int,
    artifacts_seen: int, last_scan: datetime | None, *, failed: int = 0,
    failures_in_a_row: int = 0,
) -> list[Metric]:  # fmt: skip
    """Service-wide metrics from the scan history's aggregates."""
    duration = HistogramMetricFamily(
        "backup_scan_duration_seconds", "Duration of finished scans",
        buckets=[
            *((str(le), n) for le, n in zip(DURATION_BUCKETS, bucket_counts, strict=True)),
            ("+Inf", scans),
        ],
        sum_value=duration_sum,
    )  # fmt: skip
    families: list[Metric] = [
        duration,
        CounterMetricFamily("backup_scans", "Scans recorded", value=scans),
        CounterMetricFamily("backup_scan_errors", "Job errors across scans", value=errors),
        CounterMetricFamily(
            "backup_scans_failed", "Scans that failed or were abandoned as a whole", value=failed
        ),
        GaugeMetricFamily(
            "backup_scanner_consecutive_failures",
            "Scans failed or abandoned since the last that did not (a database outage aside)",
            value=failures_in_a_row,
        ),
        CounterMetricFamily(
            "backup_artifacts_seen",
            "Backup files ever recorded (first seen by a finished scan)",
            value=artifacts_seen,
        ),
    ]  # fmt: skip
    if last_scan is not None:
        families.append(
            GaugeMetricFamily(
                "backup_last_scan_timestamp_seconds",
                "End of the last scan that finished (a failed one does not count)",
                value=last_scan.timestamp(),
            )
        )
    return families


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _registry(families: list[Metric], *, process: bool = False) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    if process:
        # The standard process_* and python_* series of this replica, as prometheus-client's
        # default registry has them; made per scrape, so nothing lives in module state.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


def build_info() -> Metric:
    """`backup_monitor_build_info{version} 1`: the installed package's version."""
    try:
        installed = version("backup-monitor")
    except PackageNotFoundError:  # run from a source tree that was never installed
        installed = "unknown"
    family = GaugeMetricFamily(
        "backup_monitor_build_info", "The running backup-monitor's version", labels=["version"]
    )
    family.add_metric([installed], 1.0)
    return family


def render_metrics(
    jobs: Sequence[Any], service: list[Metric], encode: Encoder, *, process: bool = True
) -> bytes:
    """The whole exposition: the job families, then the service-wide ones and (with `process`)
    this process's own (process_*, python_*), as `encode` (from choose_encoder) writes them."""
    fmt = lean_format(encode)
    if fmt is None:
        return encode(_registry([*job_families(jobs), *service], process=process))
    # prometheus-client writes nothing before the first family, and OpenMetrics' `# EOF` after
    # the last: the job families' text goes first, as is.
    rest = encode(_registry(service, process=process))
    return render_job_families(jobs, openmetrics=fmt).encode() + rest


async def read_jobs(session: AsyncSession) -> Sequence[Any]:
    """What the job families need, one row a job, by name (no ORM objects): name, tags, status,
    last_mtime and last_size (the newest artifact's ISO time and size, taken out of the
    `latest_artifact` JSON by the database: a third off the query's time for 2 000 jobs; None
    without an artifact), artifact_count, next_check_at."""
    result = await session.execute(
        select(
            Job.name,
            Job.tags,
            Job.status,
            Job.latest_artifact["mtime"].as_string().label("last_mtime"),
            # Text on PostgreSQL, a number on SQLite: float() takes both, exactly.
            Job.latest_artifact["size"].as_string().label("last_size"),
            Job.artifact_count,
            Job.next_check_at,
        ).order_by(Job.name)
    )
    return result.all()


async def read_service_families(session: AsyncSession) -> list[Metric]:
    """The service-wide families: the scans' totals from scan_counters (a few rows, however
    long the history), the failure streak, and the notification deliveries by state."""
    counters = await read_counters(session)
    last = counters.get(LAST_FINISHED)
    scanner = service_families(
        [int(counters.get(bucket_name(le), 0)) for le in DURATION_BUCKETS],
        int(counters.get(SCANS, 0)), counters.get(DURATION_SUM, 0.0),
        int(counters.get(ERRORS, 0)), int(counters.get(ARTIFACTS_NEW, 0)),
        None if last is None else datetime.fromtimestamp(last, UTC),
        failed=int(counters.get(FAILED_SCANS, 0)),
        failures_in_a_row=await failures_in_a_row(session),
    )  # fmt: skip
    return [build_info(), *scanner, *await read_notification_families(session)]


DELIVERY_STATES = ("pending", "delivered", "failed", "cancelled")


def notification_families(counts: Mapping[str, int]) -> list[Metric]:
    """Deliveries of notices the database holds now, by state: a gauge (retention deletes
    old ones, so it goes down), named so that nobody takes it for a counter."""
    family = GaugeMetricFamily(
        "backup_notification_deliveries_stored",
        "Notification deliveries the database holds now (RETENTION_DAYS), by state (failed: "
        "refused for good or out of retries; cancelled: its job was deleted before it was sent)",
        labels=["state"],
    )
    for state in DELIVERY_STATES:
        family.add_metric([state], counts.get(state, 0))
    return [family]


async def read_notification_families(session: AsyncSession) -> list[Metric]:
    rows = await session.execute(
        select(NotificationDelivery.state, func.count()).group_by(NotificationDelivery.state)
    )
    return notification_families({state: int(count) for state, count in rows.all()})


async def read_verification_families(
    session: AsyncSession, stats: VerifierStats | None
) -> list[Metric]:
    """Verification: when each verifying job's artifacts were last verified, its repository's
    last check, the present artifacts by verification outcome (from the database: the same on
    every replica), and what this process's verifier read (a counter, since it started)."""
    v, a = ArtifactVerification, Artifact
    last = GaugeMetricFamily(
        "backup_verification_last_timestamp_seconds",
        "When an artifact of the job was last verified",
        labels=JOB_LABELS,
    )
    rows = await session.execute(
        select(Job.name, func.max(v.verified_at))
        .join(v, v.job_id == Job.id)
        .group_by(Job.id, Job.name)
    )
    for name, verified_at in rows.all():
        if verified_at is not None:
            last.add_metric([name], verified_at.timestamp())
    repository = GaugeMetricFamily(
        "backup_repository_check_ok",
        "1 when the last check of the job's repository passed, 0 when it failed",
        labels=JOB_LABELS,
    )
    checks = await session.execute(
        select(Job.name, RepositoryCheck.ok)
        .join(RepositoryCheck, RepositoryCheck.job_id == Job.id)
        .where(RepositoryCheck.ok.is_not(None))
    )
    for name, ok in checks.all():
        repository.add_metric([name], 1.0 if ok else 0.0)
    outcomes = GaugeMetricFamily(
        "backup_verification_artifacts",
        "Present artifacts by the outcome of their last verification (none: not verified yet)",
        labels=["outcome"],
    )
    counted = await session.execute(
        select(v.outcome, func.count())
        .join(a, a.id == v.artifact_id)
        .where(a.gone_since.is_(None))
        .group_by(v.outcome)
    )
    counts = {outcome or "none": int(count) for outcome, count in counted.all()}
    for outcome in (*VERIFY_OUTCOMES, "none"):
        outcomes.add_metric([outcome], counts.get(outcome, 0))
    families: list[Metric] = [last, repository, outcomes]
    if stats is not None:
        families += [
            CounterMetricFamily(
                "backup_verification_read_bytes",
                "Bytes read by this process's verifications since it started",
                value=stats.bytes_read,
            ),
            CounterMetricFamily(
                "backup_verifications",
                "Artifacts verified by this process since it started",
                value=stats.verified,
            ),
        ]
    return families


def encoder_for(accept: str) -> tuple[Encoder, str]:
    """prometheus-client's format for this Accept header; the classic text one when the header
    is malformed (its parser raises on some, e.g. `openmetrics-text; version=x`: a 500)."""
    try:
        return choose_encoder(accept)
    except (TypeError, ValueError, IndexError):
        return choose_encoder("")


def _check_token(request: web.Request) -> None:
    token = request.app[settings_key].metrics_token
    if token is None:
        return
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not same_secret(given, token.get_secret_value()):
        raise ApiError(401, "unauthorized", "send METRICS_TOKEN as 'Authorization: Bearer ...'")


@routes.get("/metrics")
@operation(
    summary="Prometheus metrics (OpenMetrics or classic text)", tag="metrics", access="public",
    media_type="text/plain", errors=(401,),
    description="Asks for `Authorization: Bearer <METRICS_TOKEN>` when that setting is set; "
    "API tokens do not apply here.",
)  # fmt: skip
async def metrics(request: web.Request) -> web.Response:
    _check_token(request)
    async with request.app[sessionmaker_key]() as session:
        jobs = await read_jobs(session)
        service = await read_service_families(session)
        verifier = request.app.get(verifier_key)
        service += await read_verification_families(
            session, verifier.stats if verifier is not None else None
        )
    # OpenMetrics for scrapers that ask for it (Prometheus does), the classic text otherwise.
    encode, content_type = encoder_for(request.headers.get("Accept", ""))
    # ~15 ms of pure Python for 2 000 jobs: not on the event loop.
    body = await asyncio.to_thread(render_metrics, jobs, service, encode)
    return web.Response(body=body, headers={"Content-Type": content_type})
