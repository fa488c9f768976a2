"""/api/v1/scans: the record of every scan, and a full scan on demand."""

from __future__ import annotations

import asyncio

from aiohttp import web

from service.db.models import MAX_INT_ID, ScanRun
from service.http.api.coalesce import coalescer_key
from service.http.api.errors import ApiError
from service.http.api.openapi import operation
from service.http.api.schemas import PageQuery, ScanOut, ScanPage, ScanStartQuery
from service.http.api.validation import query_of, respond
from service.runtime.coordinator import ScanAlreadyRunning
from service.runtime.keys import coordinator_key, sessionmaker_key
from service.store.jobs import scans_page

routes = web.RouteTableDef()


async def load_scan(request: web.Request, scan_id: int) -> ScanRun:
    async with request.app[sessionmaker_key]() as session:
        run = await session.get(ScanRun, scan_id) if scan_id <= MAX_INT_ID else None
    if run is None:
        raise ApiError(404, "not_found", f"no scan {scan_id}")
    return run


@routes.get("/api/v1/scans")
@operation(summary="Scans, newest first", tag="scans", query=PageQuery, response=ScanPage)
async def list_scans_handler(request: web.Request) -> web.Response:
    query = query_of(request, PageQuery)
    async with request.app[sessionmaker_key]() as session:
        rows, next_before = await scans_page(session, limit=query.limit, before=query.before)
    page = {"items": rows, "next_before": next_before}
    return respond(ScanPage.model_validate(page, from_attributes=True))


@routes.get(r"/api/v1/scans/{scan_id:\d{1,19}}")
@operation(summary="One scan", tag="scans", response=ScanOut)
async def get_scan_handler(request: web.Request) -> web.Response:
    run = await load_scan(request, int(request.match_info["scan_id"]))
    return respond(ScanOut.model_validate(run, from_attributes=True))


@routes.post("/api/v1/scans")
@operation(
    summary="Start a full scan now", tag="scans", query=ScanStartQuery, response=ScanOut,
    status=202, errors=(200, 409), access="write",
    description="Answers 202 at once with the running scan; with `wait=true`, 200 when it is "
    "done. While a full scan runs, 409 with its id in the details (`scan_id`).",
)  # fmt: skip
async def start_scan_handler(request: web.Request) -> web.Response:
    query = query_of(request, ScanStartQuery)
    try:
        scan_id, task = await request.app[coordinator_key].start_full_scan()
    except ScanAlreadyRunning as exc:
        running = f" (scan {exc.scan_id})" if exc.scan_id is not None else ""
        raise ApiError(
            409,
            "conflict",
            f"a full scan is already running{running}; wait for it or follow it at /api/v1/scans",
            [{"scan_id": exc.scan_id}],
        ) from None
    # The scan changes statuses after this request is answered: reads that start after it
    # ends must not join a computation from before.
    task.add_done_callback(lambda _: request.app[coalescer_key].invalidate())
    if query.wait:
        await asyncio.shield(task)  # a client that hangs up does not stop the scan
    run = await load_scan(request, scan_id)
    status = 200 if query.wait else 202
    response = respond(ScanOut.model_validate(run, from_attributes=True), status=status)
    response.headers["Location"] = f"/api/v1/scans/{scan_id}"
    return response
