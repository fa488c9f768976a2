"""`/status/{tag}`: a public status page per tag, for the tags the operator opted in
(PUBLIC_STATUS_TAGS). No token, no cookie: the names and statuses of the tag's jobs, and
nothing else of them (no path, size, reason, message, schedule or history). A tag not opted in
is a 404, whether or not any job carries it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from service.core.badges import worst_of
from service.http.api.openapi import operation
from service.http.web.queries import STATUS_ORDER
from service.http.web.views import templates
from service.runtime.keys import sessionmaker_key, settings_key
from service.store.jobs import JobFilter, job_statuses

routes = web.RouteTableDef()

REFRESH_SECONDS = 60
# Short, so a proxy in front may absorb a crowd while the page stays fresh.
STATUS_CACHE = "public, max-age=30"


@routes.get(r"/status/{tag:[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}}")
@operation(
    summary="A tag's public status page (opt-in: PUBLIC_STATUS_TAGS)", tag="dashboard",
    access="public", media_type="text/html", errors=(404,),
    description="Names and statuses of the tag's jobs, nothing more; no token. Reloads "
    "itself every minute. 404 for a tag the operator did not make public.",
)  # fmt: skip
async def status_page(request: web.Request) -> web.Response:
    tag = request.match_info["tag"]
    if tag not in request.app[settings_key].public_status_tags:
        raise web.HTTPNotFound(text="no such status page")
    async with request.app[sessionmaker_key]() as session:
        rows = await job_statuses(session, JobFilter(tag=tag))
    # Only names and statuses reach the template: nothing else of a job can leak into the page.
    rank = len(STATUS_ORDER)
    jobs = [{"name": name, "status": status} for name, status, _ in
            sorted(rows, key=lambda row: (STATUS_ORDER.get(row[1], rank), row[0]))]  # fmt: skip
    overall = worst_of(job["status"] for job in jobs)
    page = templates.get_template("status.html")
    text = await asyncio.to_thread(
        page.render, tag=tag, jobs=jobs, overall=overall, icon=overall or "none",
        now=datetime.now(UTC), refresh_seconds=REFRESH_SECONDS,
    )  # fmt: skip
    return web.Response(
        text=text, content_type="text/html", headers={"Cache-Control": STATUS_CACHE}
    )
