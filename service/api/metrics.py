"""Prometheus metrics at /metrics, read from the database at scrape time: right after a restart,
and the same from every replica."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from service.api.errors import ApiError
from service.api.openapi import operation
from service.keys import sessionmaker_key, settings_key
from service.models import Artifact, Job, ScanRun
from service.scanner.rules import STATUSES

DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
JOB_LABELS = ("job", "tags")

routes = web.RouteTableDef()


def job_families(jobs: Iterable[Any]) -> list[Metric]:
    """Per-job metrics from job rows (name, tags, status, latest_artifact, artifact_count,
    next_check_at)."""
    status = GaugeMetricFamily(
        "backup_job_status", "1 for the job's current status, 0 for the others",
        labels=[*JOB_LABELS, "status"],
    )  # fmt: skip
    newest = GaugeMetricFamily(
        "backup_job_last_artifact_timestamp_seconds",
        "Modification time of the newest backup file", labels=JOB_LABELS,
    )  # fmt: skip
    size = GaugeMetricFamily(
        "backup_job_last_artifact_size_bytes", "Size of the newest backup file", labels=JOB_LABELS
    )
    count = GaugeMetricFamily(
        "backup_job_artifacts", "Backup files present in the job's source", labels=JOB_LABELS
    )
    deadline = GaugeMetricFamily(
        "backup_job_deadline_timestamp_seconds", "When a new backup is due", labels=JOB_LABELS
    )
    for job in jobs:
        labels = [job.name, ",".join(job.tags)]
        for name in STATUSES:
            status.add_metric([*labels, name], 1.0 if job.status == name else 0.0)
        count.add_metric(labels, job.artifact_count)
        if job.latest_artifact:
            mtime = datetime.fromisoformat(job.latest_artifact["mtime"])
            newest.add_metric(labels, mtime.timestamp())
            size.add_metric(labels, job.latest_artifact["size"])
        if job.next_check_at is not None:
            deadline.add_metric(labels, job.next_check_at.timestamp())
    return [status, newest, size, count, deadline]


def service_families(
    bucket_counts: Sequence[int], scans: int, duration_sum: float, errors: int,
    artifacts_seen: int, last_scan: datetime | None,
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
            "backup_artifacts_seen", "Backup files ever recorded", value=artifacts_seen
        ),
    ]  # fmt: skip
    if last_scan is not None:
        families.append(
            GaugeMetricFamily(
                "backup_last_scan_timestamp_seconds",
                "End of the last finished scan",
                value=last_scan.timestamp(),
            )
        )
    return families


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


async def collect_families(session: AsyncSession) -> list[Metric]:
    jobs = await session.execute(
        select(
            Job.name,
            Job.tags,
            Job.status,
            Job.latest_artifact,
            Job.artifact_count,
            Job.next_check_at,
        ).order_by(Job.name)
    )
    families = job_families(jobs)
    seconds: ColumnElement[Any]
    if session.get_bind().dialect.name == "postgresql":
        seconds = func.extract("epoch", ScanRun.finished_at - ScanRun.started_at)
    else:
        seconds = (func.julianday(ScanRun.finished_at) - func.julianday(ScanRun.started_at)) * 86400
    row = (
        await session.execute(
            select(
                *(
                    func.coalesce(func.sum(case((seconds <= le, 1), else_=0)), 0)
                    for le in DURATION_BUCKETS
                ),
                func.count(),
                func.coalesce(func.sum(seconds), 0),
                func.coalesce(func.sum(ScanRun.errors), 0),
                func.max(ScanRun.finished_at),
            ).where(ScanRun.finished_at.is_not(None))
        )
    ).one()
    buckets = [int(value) for value in row[: len(DURATION_BUCKETS)]]
    scans, duration_sum, errors, last_scan = row[len(DURATION_BUCKETS) :]
    seen = await session.scalar(select(func.count()).select_from(Artifact))
    return families + service_families(
        buckets, int(scans), float(duration_sum), int(errors), int(seen or 0), last_scan
    )


def _check_token(request: web.Request) -> None:
    token = request.app[settings_key].metrics_token
    if token is None:
        return
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise ApiError(401, "unauthorized", "send METRICS_TOKEN as 'Authorization: Bearer ...'")


@routes.get("/metrics")
@operation(
    summary="Prometheus metrics (OpenMetrics or classic text)", tag="metrics", access="public",
    media_type="text/plain",
    description="Asks for `Authorization: Bearer <METRICS_TOKEN>` when that setting is set; "
    "API tokens do not apply here.",
)  # fmt: skip
async def metrics(request: web.Request) -> web.Response:
    _check_token(request)
    async with request.app[sessionmaker_key]() as session:
        families = await collect_families(session)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    # OpenMetrics for scrapers that ask for it (Prometheus does), the classic text otherwise.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    # Encoding 2 000 jobs takes ~0.1 s of pure Python: not on the event loop.
    body: bytes = await asyncio.to_thread(encode, registry)
    return web.Response(body=body, headers={"Content-Type": content_type})
