"""Status badges (`/badge/{key}/{name}.svg` and `.json`) and their URLs (`/api/v1/badges`).

A badge needs no token: its key is the secret (see service.core.badges for how it is made and
why). It shows a name and a status, nothing else. A wrong key, an unknown job and an unknown
tag all get the same 404, so a badge URL tells nothing of what exists but what it shows.
"""

from __future__ import annotations

import json
from urllib.parse import quote as quote_url

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.badges import (
    KEY_PATTERN,
    BadgeKind,
    badge_key,
    badge_svg,
    key_matches,
    shields_json,
    worst_of,
)
from service.core.kinds import Status, status_of
from service.db.models import Job
from service.http.api.errors import ApiError
from service.http.api.openapi import operation
from service.http.api.schemas import BadgeList, BadgeOut, ShieldsOut
from service.http.api.validation import respond
from service.http.auth import public_origin
from service.runtime.keys import sessionmaker_key
from service.store.jobs import JobFilter, job_statuses
from service.store.secrets import BADGES, shared_secret

routes = web.RouteTableDef()

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}"
BADGE = f"/badge/{{key:{KEY_PATTERN}}}/{{name:{_NAME}}}"
# Short: a README shows a change within a minute (shields.io and GitHub's camo cache too).
BADGE_CACHE = "public, max-age=60"


def badge_paths(secret: bytes, kind: BadgeKind, name: str) -> dict[str, str]:
    """The paths of the badge of a job or a tag: `svg` and `json`."""
    base = f"/badge/{badge_key(secret, kind, name)}/{quote_url(name, safe='')}"
    return {"svg": base + ".svg", "json": base + ".json"}


def badge_out(secret: bytes, origin: str, kind: BadgeKind, name: str, status: Status) -> BadgeOut:
    paths = badge_paths(secret, kind, name)
    json_url = origin + paths["json"]
    return BadgeOut(
        name=name, status=status, svg_url=origin + paths["svg"], json_url=json_url,
        shields_url="https://img.shields.io/endpoint?url=" + quote_url(json_url, safe=""),
    )  # fmt: skip


async def badge_secret(session: AsyncSession) -> bytes:
    return await shared_secret(session, BADGES)


async def badge_status(session: AsyncSession, key: str, name: str) -> Status:
    """What the badge of `key` for `name` shows: the job's status, or the worst of the tag's
    jobs'. One 404 for a wrong key, an unknown job and a tag no job has."""
    secret = await badge_secret(session)
    statuses: list[str] = []
    if key_matches(secret, "job", name, key):
        statuses = list(await session.scalars(select(Job.status).where(Job.name == name)))
    elif key_matches(secret, "tag", name, key):
        statuses = [status for _, status, _ in await job_statuses(session, JobFilter(tag=name))]
    status = worst_of(statuses)
    if status is None:
        raise ApiError(404, "not_found", "no such badge")
    return status


async def _badge(request: web.Request) -> tuple[str, Status]:
    name = request.match_info["name"]
    async with request.app[sessionmaker_key]() as session:
        return name, await badge_status(session, request.match_info["key"], name)


@routes.get(BADGE + ".svg")
@operation(
    summary="A job's or a tag's status badge (SVG)", tag="badges", access="public",
    media_type="image/svg+xml", errors=(404,),
    description="No token: the key is the secret (see `GET /api/v1/badges`). Shows the name "
    "and the status only; a tag's badge shows the worst status of its jobs. Cached 60 s.",
)  # fmt: skip
async def badge_svg_handler(request: web.Request) -> web.Response:
    name, status = await _badge(request)
    return web.Response(
        text=badge_svg(name, status), content_type="image/svg+xml",
        headers={"Cache-Control": BADGE_CACHE},
    )  # fmt: skip


@routes.get(BADGE + ".json")
@operation(
    summary="A job's or a tag's status badge (shields.io endpoint JSON)", tag="badges",
    access="public", response=ShieldsOut, errors=(404,),
    description="shields.io's endpoint format: `https://img.shields.io/endpoint?url=` this "
    "URL. No token; the name and the status only. Cached 60 s.",
)  # fmt: skip
async def badge_json_handler(request: web.Request) -> web.Response:
    name, status = await _badge(request)
    return web.Response(
        text=json.dumps(shields_json(name, status)), content_type="application/json",
        headers={"Cache-Control": BADGE_CACHE, "Access-Control-Allow-Origin": "*"},
    )  # fmt: skip


@routes.get("/api/v1/badges")
@operation(
    summary="The badge URLs of every job and tag", tag="badges", response=BadgeList,
    description="For each job and each tag: its status and the URLs of its badge (SVG, "
    "shields.io's JSON, and shields.io's own drawing of it). The URLs need no token: give them "
    "only where the name and status may be seen.",
)  # fmt: skip
async def list_badges_handler(request: web.Request) -> web.Response:
    origin = public_origin(request)
    async with request.app[sessionmaker_key]() as session:
        secret = await badge_secret(session)
        rows = await job_statuses(session, JobFilter())
    by_tag: dict[str, list[str]] = {}
    for _, status, job_tags in rows:
        for tag in job_tags:
            by_tag.setdefault(tag, []).append(status)
    jobs = [badge_out(secret, origin, "job", name, status_of(status)) for name, status, _ in rows]
    tags = [
        badge_out(secret, origin, "tag", tag, worst_of(statuses) or "paused")
        for tag, statuses in sorted(by_tag.items())
    ]
    return respond(BadgeList(jobs=jobs, tags=tags))
