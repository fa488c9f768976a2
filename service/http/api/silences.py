"""/api/v1/silences: maintenance windows that hold notices (never judgements). Thin handlers:
the body is validated by service.core.silencespec, the rows live in service.store.silences."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from pydantic import ValidationError

from service.core.silencespec import SilenceCreate, WindowProblem, one_off_window
from service.db.models import Silence
from service.http.api.errors import ApiError
from service.http.api.openapi import operation
from service.http.api.schemas import RecurrenceOut, SilenceList, SilenceOut, SilencesQuery
from service.http.api.validation import invalid, json_object, query_of, respond
from service.runtime.keys import caller_key, sessionmaker_key
from service.store.silences import (
    create_silence,
    end_silence,
    get_silence,
    silences_page,
    view_of,
)
from service.store.tokens import OPEN_ACCESS_NAME

routes = web.RouteTableDef()

SILENCE = r"/api/v1/silences/{silence_id:\d{1,19}}"


def silence_out(row: Silence, now: datetime) -> SilenceOut:
    view = view_of(row, now)
    recurring = None
    if row.cron is not None and row.timezone is not None and row.duration is not None:
        recurring = RecurrenceOut(cron=row.cron, timezone=row.timezone, duration=row.duration)
    return SilenceOut(
        id=row.id, name=row.name, origin="file" if row.origin == "file" else "api",
        comment=row.comment, created_by=row.created_by, created_at=row.created_at,
        jobs=list(row.jobs), tags=list(row.tags), starts_at=row.starts_at, ends_at=row.ends_at,
        recurring=recurring, ended_at=row.ended_at, state=view.state,
        active_until=view.active_until, next_start=view.next_start,
    )  # fmt: skip


def invalid_silence(exc: ValidationError) -> ApiError:
    """The 422 for a body that is no silence; a rule on the whole body names `(silence)`."""
    error = invalid(exc, "silence")
    details = [
        {**detail, "field": "(silence)"} if detail["field"] == "(job)" else detail
        for detail in error.details
    ]
    fields = ", ".join(dict.fromkeys(detail["field"] for detail in details))
    return ApiError(422, "validation_error", f"invalid silence: {fields}", details)


def not_found(silence_id: int) -> ApiError:
    return ApiError(404, "not_found", f"no silence {silence_id} (see GET /api/v1/silences)")


@routes.get("/api/v1/silences")
@operation(
    summary="List silences", tag="silences", query=SilencesQuery, response=SilenceList,
    description="Active and upcoming silences first (soonest start first), then the expired "
    "and ended ones as history (latest end first).",
)  # fmt: skip
async def list_silences_handler(request: web.Request) -> web.Response:
    query = query_of(request, SilencesQuery)
    now = datetime.now(UTC)
    async with request.app[sessionmaker_key]() as session:
        rows, total = await silences_page(session, now, limit=query.limit, offset=query.offset)
    return respond(SilenceList(items=[silence_out(row, now) for row in rows], total=total))


@routes.post("/api/v1/silences")
@operation(
    summary="Silence jobs for a while", tag="silences", body=SilenceCreate, response=SilenceOut,
    status=201, access="write",
    description="Holds the notices of the jobs named in `jobs` and of every job with one of "
    "`tags` from `starts_at` (default now) until `ends_at` (or for `duration`). The jobs are "
    "still judged and recorded; a job still bad when the window ends is announced then, once. "
    "`created_by` is the token's name. Names of jobs not declared yet are accepted.",
)  # fmt: skip
async def create_silence_handler(request: web.Request) -> web.Response:
    data = await json_object(request)
    try:
        body = SilenceCreate.model_validate(data)
    except ValidationError as exc:
        raise invalid_silence(exc) from None
    now = datetime.now(UTC)
    try:
        starts_at, ends_at = one_off_window(body, now)
    except WindowProblem as exc:
        details = [{"field": exc.field, "message": str(exc)}]
        raise ApiError(422, "validation_error", f"invalid silence: {exc.field}", details) from None
    async with request.app[sessionmaker_key]() as session:
        row = await create_silence(
            session, jobs=body.jobs, tags=body.tags, starts_at=starts_at, ends_at=ends_at,
            comment=body.comment, created_by=request.get(caller_key, OPEN_ACCESS_NAME), now=now,
        )  # fmt: skip
    response = respond(silence_out(row, now), status=201)
    response.headers["Location"] = f"/api/v1/silences/{row.id}"
    return response


@routes.get(SILENCE)
@operation(summary="One silence", tag="silences", response=SilenceOut)
async def get_silence_handler(request: web.Request) -> web.Response:
    silence_id = int(request.match_info["silence_id"])
    async with request.app[sessionmaker_key]() as session:
        row = await get_silence(session, silence_id)
    if row is None:
        raise not_found(silence_id)
    return respond(silence_out(row, datetime.now(UTC)))


@routes.delete(SILENCE)
@operation(
    summary="End a silence now", tag="silences", response=SilenceOut, access="write",
    description="The silence is kept as history with `ended_at`; one already over is left as "
    "it is. A silence of the jobs file comes back at the next apply unless removed there.",
)  # fmt: skip
async def end_silence_handler(request: web.Request) -> web.Response:
    silence_id = int(request.match_info["silence_id"])
    now = datetime.now(UTC)
    async with request.app[sessionmaker_key]() as session:
        row = await end_silence(session, silence_id, now)
    if row is None:
        raise not_found(silence_id)
    return respond(silence_out(row, now))
