"""/api/v1/jobs: manage jobs and read their artifacts and history. Thin handlers: validation is
in the schemas, the work in service.store.jobs and the scanner."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.jobspec import JobSpec, parse_job
from service.core.visible import quote
from service.db.models import Artifact, ArtifactVerification, Job
from service.http.api.coalesce import coalescer_key
from service.http.api.errors import ApiError
from service.http.api.openapi import operation
from service.http.api.schemas import (
    ArtifactOut,
    ArtifactPage,
    ArtifactsQuery,
    ArtifactVerificationOut,
    HistoryPage,
    JobList,
    JobOut,
    JobPatch,
    JobsQuery,
    NotificationPage,
    PageQuery,
    RestorePointsOut,
    RestorePointsQuery,
    RunList,
    RunsQuery,
)
from service.http.api.validation import encode, invalid, json_object, query_of, respond
from service.http.auth import public_origin, shows_ping_keys
from service.notify.silences import SilenceLookup
from service.runtime.keys import access_key, channels_key, sessionmaker_key, settings_key
from service.store import verifications
from service.store.jobs import (
    HELD_NOTICE_COLUMNS,
    Action,
    JobFilter,
    JobNameTaken,
    JudgedJob,
    act_on_job,
    artifacts_page,
    create_job,
    delete_job,
    find_job,
    held_notice,
    history_page,
    job_ref,
    list_jobs,
    notifications_page,
    patch_job,
    silences_now,
)
from service.store.pings import recent_runs
from service.store.restore_points import restore_points

routes = web.RouteTableDef()
T = TypeVar("T")

JOB = "/api/v1/jobs/{job}"


def known_channels(request: web.Request) -> frozenset[str]:
    """The channel names a job may give in `notify.channels`."""
    return frozenset(request.app[channels_key].channels)


_STORED = tuple(
    name for name in JobOut.model_fields if name not in ("ping_key", "ping_url", "notice")
)
_READ = (*_STORED, "ping_key")
# What job_fields reads of a job: the list reads these columns only (no ORM entities).
JOB_OUT_COLUMNS = tuple(
    Job.__table__.c[name] for name in dict.fromkeys((*_READ, *HELD_NOTICE_COLUMNS))
)


def job_fields(
    job: Job | Row[Any], ping_base: str | None, silences: SilenceLookup | None = None
) -> dict[str, Any]:
    """The job as the API answers it, as JobOut's input: a Job or a row of JOB_OUT_COLUMNS.
    `ping_base` (scheme://host) makes its full ping URL, and None hides the ping key (see
    ping_base_of); `silences` as they stand now (a notice held by one shows as held)."""
    fields = {name: getattr(job, name) for name in _READ}
    until = (
        silences.silenced_until(fields["name"], fields["tags"] or ())
        if silences is not None
        else None
    )
    judged = cast(JudgedJob, job)  # a row of JOB_OUT_COLUMNS has what held_notice reads
    held = held_notice(judged, until)
    fields["notice"] = None
    if held is not None:
        fields["notice"] = {
            "held": held.reason, "kind": held.kind, "bad_since": judged.bad_since,
            "until": held.until, "judgements": held.judgements,
        }  # fmt: skip
    if ping_base is None:
        fields["ping_key"] = fields["ping_url"] = None
    else:
        fields["ping_url"] = f"{ping_base}/ping/{fields['ping_key']}"
    return fields


def job_out(job: Job, ping_base: str | None, silences: SilenceLookup | None = None) -> JobOut:
    """One job as the API answers it (see job_fields)."""
    return JobOut.model_validate(job_fields(job, ping_base, silences))


async def answer_job(request: web.Request, job: Job, status: int = 200) -> web.Response:
    """The job as the API answers it, with the silences as they stand now."""
    async with request.app[sessionmaker_key]() as session:
        silences = await silences_now(session, datetime.now(UTC))
    return respond(job_out(job, ping_base_of(request), silences), status=status)


def ping_base_of(request: web.Request) -> str | None:
    """Where backup scripts reach this service (public_origin), or None when the caller may
    not see ping keys (a read-only token)."""
    return public_origin(request) if shows_ping_keys(request.get(access_key)) else None


def not_found(ref: str) -> ApiError:
    return ApiError(404, "not_found", f"no job {quote(ref)} (give its id or its name)")


def name_taken(exc: JobNameTaken) -> ApiError:
    return ApiError(409, "conflict", str(exc), [{"field": "name", "message": str(exc)}])


async def read_for_job(
    request: web.Request, read: Callable[[AsyncSession, int], Awaitable[T]]
) -> T:
    """`read(session, job_id)` for the `{job}` of the path, in one session (404 without it)."""
    ref = request.match_info["job"]
    async with request.app[sessionmaker_key]() as session:
        job_id = await session.scalar(select(Job.id).where(job_ref(ref)))
        if job_id is None:
            raise not_found(ref)
        return await read(session, job_id)


async def load_job(request: web.Request) -> Job:
    ref = request.match_info["job"]
    async with request.app[sessionmaker_key]() as session:
        job = await find_job(session, ref)
    if job is None:
        raise not_found(ref)
    return job


@routes.get("/api/v1/jobs")
@operation(
    summary="List jobs", tag="jobs", query=JobsQuery, response=JobList,
    description="Sorted by name; `total` counts every job that matches the filters.",
)  # fmt: skip
async def list_jobs_handler(request: web.Request) -> web.Response:
    query = query_of(request, JobsQuery)
    ping_base = ping_base_of(request)

    async def page() -> bytes:
        async with request.app[sessionmaker_key]() as session:
            rows, total = await list_jobs(
                session,
                JobFilter(query.status, query.tag, query.q),
                JOB_OUT_COLUMNS,
                limit=query.limit,
                offset=query.offset,
            )
            silences = await silences_now(session, datetime.now(UTC))
        items = [JobOut.model_validate(job_fields(row, ping_base, silences)) for row in rows]
        return encode(JobList(items=items, total=total))

    key = ("jobs", query, ping_base)  # a read-only caller never shares a page with keys
    return respond(await request.app[coalescer_key].run(key, page))


@routes.post("/api/v1/jobs")
@operation(
    summary="Declare a job", tag="jobs", body=JobSpec, response=JobOut, status=201,
    errors=(409,), access="write",
)  # fmt: skip
async def create_job_handler(request: web.Request) -> web.Response:
    data = await json_object(request)
    try:
        # SCAN_ROOTS resolves the path on the filesystem (a hung mount must not stop the loop).
        spec = await asyncio.to_thread(
            parse_job, data, request.app[settings_key].scan_roots, known_channels(request)
        )
    except ValidationError as exc:
        raise invalid(exc, "job") from None
    async with request.app[sessionmaker_key]() as session:
        try:
            job = await create_job(session, spec, datetime.now(UTC))
        except JobNameTaken as exc:
            raise name_taken(exc) from None
    response = await answer_job(request, job, status=201)
    response.headers["Location"] = f"/api/v1/jobs/{job.name}"
    return response


@routes.get(JOB)
@operation(summary="One job, with its declaration and state", tag="jobs", response=JobOut)
async def get_job_handler(request: web.Request) -> web.Response:
    return await answer_job(request, await load_job(request))


@routes.patch(JOB)
@operation(
    summary="Change a job", tag="jobs", body=JobPatch, response=JobOut, errors=(409,),
    access="write",
    description="Each field given replaces the stored one; `null` restores its default. "
    "The result is validated as a whole: nothing is written unless the job stays valid. "
    "A change is judged at once: the answer has the job's status under its new declaration.",
)  # fmt: skip
async def patch_job_handler(request: web.Request) -> web.Response:
    ref = request.match_info["job"]
    data = await json_object(request)
    try:
        JobPatch.model_validate(data)  # the fields' types; the whole job is checked below
    except ValidationError as exc:
        raise invalid(exc, "change") from None
    try:
        # Judged at once under the new declaration: the answer shows its new status.
        job = await patch_job(
            request.app[sessionmaker_key], ref, data, channels=known_channels(request),
            now=datetime.now(UTC), options=request.app[settings_key].scan_options,
        )  # fmt: skip
    except ValidationError as exc:
        raise invalid(exc, "job after this change") from None
    except JobNameTaken as exc:
        raise name_taken(exc) from None
    if job is None:
        raise not_found(ref)
    return await answer_job(request, job)


@routes.delete(JOB)
@operation(
    summary="Delete a job with its artifacts and history", tag="jobs", status=204,
    access="write",
)  # fmt: skip
async def delete_job_handler(request: web.Request) -> web.Response:
    ref = request.match_info["job"]
    async with request.app[sessionmaker_key]() as session:
        if not await delete_job(session, ref):
            raise not_found(ref)
    return web.Response(status=204)


async def act(request: web.Request, action: Action) -> web.Response:
    ref = request.match_info["job"]
    settings = request.app[settings_key]
    job = await act_on_job(
        request.app[sessionmaker_key], ref, action, datetime.now(UTC), settings.scan_options
    )
    if job is None:
        raise not_found(ref)
    return await answer_job(request, job)


@routes.post(JOB + "/pause")
@operation(summary="Pause a job (status `paused`)", tag="jobs", response=JobOut, access="write")
async def pause_handler(request: web.Request) -> web.Response:
    return await act(request, "pause")


@routes.post(JOB + "/resume")
@operation(
    summary="Resume a paused job and judge it now", tag="jobs", response=JobOut, access="write"
)
async def resume_handler(request: web.Request) -> web.Response:
    return await act(request, "resume")


@routes.post(JOB + "/scan")
@operation(
    summary="Scan this job now", tag="jobs", response=JobOut, access="write",
    description="Answers when the scan is done, with the job's fresh status.",
)  # fmt: skip
async def scan_job_handler(request: web.Request) -> web.Response:
    return await act(request, "scan")


@routes.get(JOB + "/artifacts")
@operation(
    summary="The job's artifacts, newest first", tag="jobs", query=ArtifactsQuery,
    response=ArtifactPage,
)  # fmt: skip
async def artifacts_handler(request: web.Request) -> web.Response:
    query = query_of(request, ArtifactsQuery)
    rows, next_before = await read_for_job(
        request,
        lambda session, job_id: artifacts_page(
            session, job_id, limit=query.limit, before=query.before,
            include_gone=query.include_gone,
        ),
    )  # fmt: skip
    async with request.app[sessionmaker_key]() as session:
        results = await verifications.results_of(session, [row.id for row in rows])
    now = datetime.now(UTC)
    items = [artifact_out(row, results.get(row.id), now) for row in rows]
    return respond(ArtifactPage(items=items, next_before=next_before))


def artifact_out(
    artifact: Artifact, verification: ArtifactVerification | None, now: datetime
) -> ArtifactOut:
    """An artifact as the API answers it, with its verification (None: not looked at)."""
    out = ArtifactOut.model_validate(artifact, from_attributes=True)
    if verification is None:
        return out
    lease = verification.lease_until
    view = ArtifactVerificationOut.model_validate(
        {
            "state": verifications.state_of(verification, artifact.size, artifact.mtime),
            "verified_at": verification.verified_at, "outcome": verification.outcome,
            "detail": verification.detail, "sidecar": verification.sidecar,
            "bytes_read": verification.bytes_read, "seconds": verification.seconds,
            "digest": verification.digest, "next_at": verification.due_at,
            "verifying": lease is not None and lease >= now,
        }
    )  # fmt: skip
    return out.model_copy(update={"verification": view})


@routes.get(JOB + "/history")
@operation(
    summary="The job's status changes and changes of its problems, newest first", tag="jobs",
    query=PageQuery, response=HistoryPage,
)  # fmt: skip
async def history_handler(request: web.Request) -> web.Response:
    query = query_of(request, PageQuery)
    rows, next_before = await read_for_job(
        request,
        lambda session, job_id: history_page(
            session, job_id, limit=query.limit, before=query.before
        ),
    )
    page = {"items": rows, "next_before": next_before}
    return respond(HistoryPage.model_validate(page, from_attributes=True))


@routes.get(JOB + "/runs")
@operation(
    summary="The job's runs from its pings, newest first", tag="jobs", query=RunsQuery,
    response=RunList,
)  # fmt: skip
async def runs_handler(request: web.Request) -> web.Response:
    query = query_of(request, RunsQuery)
    runs = await read_for_job(
        request, lambda session, job_id: recent_runs(session, job_id, query.limit)
    )
    return respond(RunList.model_validate({"items": runs}, from_attributes=True))


@routes.get(JOB + "/notifications")
@operation(
    summary="The job's notices and their delivery to each channel, newest first", tag="jobs",
    query=PageQuery, response=NotificationPage,
)  # fmt: skip
async def notifications_handler(request: web.Request) -> web.Response:
    query = query_of(request, PageQuery)
    items, next_before = await read_for_job(
        request,
        lambda session, job_id: notifications_page(
            session, job_id, limit=query.limit, before=query.before
        ),
    )
    page = {"items": items, "next_before": next_before}
    return respond(NotificationPage.model_validate(page, from_attributes=True))


# The range a restore-points request covers when it gives no `from`.
RESTORE_POINTS_SPAN = timedelta(days=31)


@routes.get(JOB + "/restore-points")
@operation(
    summary="The backups present in a date range, and the retention slots each one is kept for",
    tag="jobs", query=RestorePointsQuery, response=RestorePointsOut,
    description="The evidence an auditor asks for: every backup present in [from, to), newest "
    "first, with the slots of the job's retention policy (as they stand now) it is the kept "
    "backup of, and all those slots with their state.",
)  # fmt: skip
async def restore_points_handler(request: web.Request) -> web.Response:
    query = query_of(request, RestorePointsQuery)
    now = datetime.now(UTC)
    try:
        end = (query.to or now).astimezone(UTC)
        start = (query.from_ or end - RESTORE_POINTS_SPAN).astimezone(UTC)
    except (OverflowError, ValueError):
        field = "to" if query.to is not None else "from"
        message = "a date out of range (years 1 to 9999 in UTC)"
        raise ApiError(422, "validation_error", f"invalid query parameter: {field}",
                       [{"field": field, "message": message}]) from None  # fmt: skip
    job = await load_job(request)
    async with request.app[sessionmaker_key]() as session:
        points = await restore_points(
            session, job, start=start, end=end, now=now, limit=query.limit
        )
    spec = points.spec
    answer = {
        "job": points.job, "from": points.start, "to": points.end, "timezone": points.timezone,
        "retention": None if spec is None or spec.retention is None else spec.retention,
        "slots": [slot.as_dict() for slot in points.slots],
        "items": points.items, "truncated": points.truncated,
    }  # fmt: skip
    return respond(RestorePointsOut.model_validate(answer, from_attributes=True))
