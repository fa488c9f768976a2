"""/ping/{key}: the Healthchecks ping protocol, so that existing backup scripts work as they are.

`/ping/KEY` (success), `/ping/KEY/start`, `/ping/KEY/fail`, `/ping/KEY/log`, `/ping/KEY/N` (exit
status N: 0 success, 1-255 failure); GET, HEAD or POST; `?rid=` names the run; the first 10 KB
of the body is kept as the run's log. `OK` only once the ping is stored; 404 for a key no job has.

Slug URLs, as Healthchecks has them: `/ping/PING_KEY/NAME` (and `/start`, `/fail`, `/log`, `/N`
after it) ping the job named NAME, PING_KEY being the project's key (the setting; without it
there are no slug URLs). 404 for a name no job has, unless `?create=1`: then a heartbeat job of
that name is created (schedule every PING_CREATE_EVERY_SECONDS, grace PING_CREATE_GRACE_SECONDS),
pinged, and the answer is `201 Created`; a job that exists is pinged, `200 OK`. Healthchecks'
slugs are a-z, 0-9, `-` and `_`; a job name also starts with a letter and may hold `.`.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

from aiohttp import web
from sqlalchemy import select

from service.core.jobspec import parse_job
from service.db.models import Job
from service.http.api.errors import ApiError
from service.http.api.openapi import operation
from service.runtime.keys import ping_writer_key, sessionmaker_key, settings_key
from service.store.jobs import JobNameTaken, create_job
from service.store.pings import BODY_LIMIT, Kind, Received

routes = web.RouteTableDef()

MAX_KEY = 64
MAX_RID = 64
SIGNAL_WORDS = r"start|fail|log|\d{1,3}"
SIGNAL = r"/ping/{ping_key}/{signal:" + SIGNAL_WORDS + "}"
SLUG_PATTERN = r"[a-z][a-z0-9_.-]{0,99}"
SLUG = r"/ping/{ping_key}/{slug:" + SLUG_PATTERN + "}"
SLUG_SIGNAL = SLUG + r"/{signal:" + SIGNAL_WORDS + "}"


async def _body(request: web.Request) -> str:
    if not request.can_read_body:
        return ""
    data = await request.content.read(BODY_LIMIT * 4)  # UTF-8: up to 4 bytes a character
    text = data.decode("utf-8", errors="replace").replace("\0", "")
    return text[:BODY_LIMIT]


def _project_key(request: web.Request) -> bool:
    """Whether the URL's key is the project's PING_KEY (compared in constant time)."""
    project = request.app[settings_key].ping_key
    key = request.match_info["ping_key"]
    if project is None or len(key) > MAX_KEY:
        return False
    return hmac.compare_digest(key.encode(), project.get_secret_value().encode())


async def _ping(
    request: web.Request, kind: Kind, exit_status: int | None, key: str | None = None
) -> web.Response:
    key = request.match_info["ping_key"] if key is None else key
    if len(key) > MAX_KEY or "\0" in key:
        raise ApiError(404, "not_found", "no job has this ping key")
    rid = request.query.get("rid") or None
    if rid is not None and (len(rid) > MAX_RID or "\0" in rid):
        raise ApiError(422, "validation_error", f"rid: at most {MAX_RID} characters, no NUL")
    ping = Received(key, kind, exit_status, rid, await _body(request), datetime.now(UTC))
    if not await request.app[ping_writer_key].submit(ping):
        raise ApiError(404, "not_found", "no job has this ping key")
    return web.Response(text="OK")


async def _slug_ping(
    request: web.Request, slug: str, kind: Kind, exit_status: int | None
) -> web.Response:
    """A ping of the job named `slug` through the project's key; `?create=1` creates it."""
    if not _project_key(request):
        raise ApiError(404, "not_found", "no job has this ping key")
    settings = request.app[settings_key]
    async with request.app[sessionmaker_key]() as session:
        key = await session.scalar(select(Job.ping_key).where(Job.name == slug))
        created = False
        if key is None:
            if request.query.get("create") != "1":
                raise ApiError(
                    404, "not_found", "no job has this name (add ?create=1 to create it)"
                )
            spec = parse_job({
                "name": slug,
                "schedule": {"every": settings.ping_create_every_seconds},
                "grace": settings.ping_create_grace_seconds,
                "description": "created by its first ping (?create=1)",
            })  # fmt: skip
            try:
                key = (await create_job(session, spec, datetime.now(UTC))).ping_key
                created = True
            except JobNameTaken:  # created by a ping at the same moment: it is pinged
                key = await session.scalar(select(Job.ping_key).where(Job.name == slug))
                if key is None:  # and deleted since
                    raise ApiError(404, "not_found", "no job has this name") from None
    response = await _ping(request, kind, exit_status, key)
    if created:
        return web.Response(status=201, text="Created")
    return response


def _signal(word: str) -> tuple[Kind, int | None]:
    """What a signal word means: its kind and exit status (404 above 255)."""
    if word.isdigit():
        code = int(word)
        if code > 255:
            raise ApiError(404, "not_found", "an exit status is 0 to 255")
        return ("success" if code == 0 else "fail"), code
    if word == "fail":
        return "fail", None
    return ("start" if word == "start" else "log"), None


_PING = {
    "tag": "pings", "access": "public", "media_type": "text/plain", "errors": (404, 422),
    "description": "The ping key is the secret: no token. GET, HEAD and POST are the same; "
    "the body (first 10 KB) is kept as the run's log; `?rid=` pairs a start with its finish.",
}  # fmt: skip


@routes.post("/ping/{ping_key}")
@routes.get("/ping/{ping_key}")  # and HEAD
@operation(summary="Heartbeat: the backup succeeded", **_PING)
async def success(request: web.Request) -> web.Response:
    return await _ping(request, "success", 0)


@routes.post(SIGNAL)
@routes.get(SIGNAL)  # and HEAD
@operation(
    summary="Heartbeat: a run started, failed, logged, or ended with an exit status", **_PING
)
async def signal(request: web.Request) -> web.Response:
    word = request.match_info["signal"]
    if _project_key(request):
        # /ping/PING_KEY/start: the job named "start" (a name never all digits).
        if word.isdigit():
            raise ApiError(404, "not_found", "no job has this name")
        return await _slug_ping(request, word, "success", 0)
    kind, code = _signal(word)
    return await _ping(request, kind, code)


_SLUG_PING = {
    **_PING,
    "errors": (404, 422),
    "description": "PING_KEY (the project's ping key) and a job's name; `?create=1` creates a "
    "missing job (a heartbeat job with the default schedule) and answers 201. GET, HEAD and "
    "POST are the same; the body (first 10 KB) is kept as the run's log.",
}


@routes.post(SLUG)
@routes.get(SLUG)  # and HEAD
@operation(summary="Heartbeat by job name: the backup succeeded", **_SLUG_PING)
async def slug_success(request: web.Request) -> web.Response:
    return await _slug_ping(request, request.match_info["slug"], "success", 0)


@routes.post(SLUG_SIGNAL)
@routes.get(SLUG_SIGNAL)  # and HEAD
@operation(
    summary="Heartbeat by job name: started, failed, logged, or an exit status", **_SLUG_PING
)
async def slug_signal(request: web.Request) -> web.Response:
    kind, code = _signal(request.match_info["signal"])
    return await _slug_ping(request, request.match_info["slug"], kind, code)
