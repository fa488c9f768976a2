"""/ping/{key}: the Healthchecks ping protocol, so that existing backup scripts work as they are.

`/ping/KEY` (success), `/ping/KEY/start`, `/ping/KEY/fail`, `/ping/KEY/log`, `/ping/KEY/N` (exit
status N: 0 success, 1-255 failure); GET, HEAD or POST; `?rid=` names the run; the first 10 KB
of the body is kept as the run's log. `OK` only once the ping is stored; 404 for a key no job has.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from service.http.api.errors import ApiError
from service.http.api.openapi import operation
from service.runtime.keys import ping_writer_key
from service.store.pings import BODY_LIMIT, Kind, Received

routes = web.RouteTableDef()

MAX_KEY = 64
MAX_RID = 64
SIGNAL = r"/ping/{ping_key}/{signal:start|fail|log|\d{1,3}}"


async def _body(request: web.Request) -> str:
    if not request.can_read_body:
        return ""
    data = await request.content.read(BODY_LIMIT * 4)  # UTF-8: up to 4 bytes a character
    text = data.decode("utf-8", errors="replace").replace("\0", "")
    return text[:BODY_LIMIT]


async def _ping(request: web.Request, kind: Kind, exit_status: int | None) -> web.Response:
    key = request.match_info["ping_key"]
    if len(key) > MAX_KEY or "\0" in key:
        raise ApiError(404, "not_found", "no job has this ping key")
    rid = request.query.get("rid") or None
    if rid is not None and (len(rid) > MAX_RID or "\0" in rid):
        raise ApiError(422, "validation_error", f"rid: at most {MAX_RID} characters, no NUL")
    ping = Received(key, kind, exit_status, rid, await _body(request), datetime.now(UTC))
    if not await request.app[ping_writer_key].submit(ping):
        raise ApiError(404, "not_found", "no job has this ping key")
    return web.Response(text="OK")


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
    if word.isdigit():
        code = int(word)
        if code > 255:
            raise ApiError(404, "not_found", "an exit status is 0 to 255")
        return await _ping(request, "success" if code == 0 else "fail", code)
    if word == "fail":
        return await _ping(request, "fail", None)
    return await _ping(request, "start" if word == "start" else "log", None)
