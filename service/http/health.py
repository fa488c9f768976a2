"""Liveness, readiness and the service-wide status."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from sqlalchemy import select

from service.core.rules import worst_status
from service.db.engine import ping
from service.db.errors import describe_database_error, log_failure
from service.db.models import ScanRun
from service.http.api.coalesce import coalescer_key
from service.http.api.openapi import operation
from service.http.api.schemas import LiveOut, ReadyOut, StatusOut
from service.http.api.validation import encode, respond
from service.runtime.keys import (
    engine_key,
    scan_scheduler_key,
    scheduler_enabled_key,
    sessionmaker_key,
    watcher_key,
)
from service.store.jobs import status_counts
from service.store.scans import FAILING_AFTER, failures_in_a_row

logger = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 3.0

routes = web.RouteTableDef()


@routes.get("/health/live")
@operation(summary="Liveness: the process answers", tag="health", response=LiveOut, access="public")
async def live(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/health/ready")
@operation(
    summary="Readiness: database, scheduler and scanner", tag="health", response=ReadyOut,
    access="public",
    description="503 (same body) when a check fails; `scanner` fails once "
    f"{FAILING_AFTER} scans in a row failed. `watch` (where the scheduler runs) says how many "
    "local sources are watched and which are not, and why; it never makes the answer 503 (the "
    "periodic scan still covers them).",
)  # fmt: skip
async def ready(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        await ping(request.app[engine_key], READY_TIMEOUT_SECONDS)
        checks["database"] = "ok"
    except TimeoutError:
        checks["database"] = f"no answer within {READY_TIMEOUT_SECONDS:g} s"
    except Exception as exc:
        # The details (host names, driver text) go to the log, not to unauthenticated callers.
        error = describe_database_error(exc, request.app[engine_key].url)
        logger.warning("readiness: database unavailable", extra={"error": error})
        checks["database"] = "unavailable"
    if not request.app[scheduler_enabled_key]:
        checks["scheduler"] = "disabled"
    else:
        running = request.app[scan_scheduler_key].running
        checks["scheduler"] = "ok" if running else "not running"
    checks["scanner"] = await scanner_check(request) if checks["database"] == "ok" else "unknown"
    healthy = all(value in ("ok", "disabled") for value in checks.values())
    # Shown, never failed: a source not watched is still seen by the periodic scan.
    if (watcher := request.app.get(watcher_key)) is not None:
        checks["watch"] = watcher.check()
    return web.json_response(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )


async def scanner_check(request: web.Request) -> str:
    """ "ok", or that the last scans all failed: the statuses shown are then getting stale."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with request.app[sessionmaker_key]() as session:
                failures = await failures_in_a_row(session)
    except TimeoutError:  # the database just answered: slow now, not broken
        logger.warning("readiness: scan history not read within %g s", READY_TIMEOUT_SECONDS)
        return "unknown"
    except Exception as exc:  # the database went away meanwhile, or a bug
        log_failure(logger, "readiness: scan history unreadable", exc, request.app[engine_key].url)
        return "unknown"
    if failures < FAILING_AFTER:
        return "ok"
    return f"failing: the last {failures} scans failed (see GET /api/v1/scans)"


def scheduler_state(app: web.Application) -> dict[str, Any]:
    """This app's scheduler: {"running": bool, "next_run_at": ISO time or None}."""
    scheduler = app.get(scan_scheduler_key)
    return scheduler.state() if scheduler is not None else {"running": False, "next_run_at": None}


@routes.get("/api/v1/status")
@operation(
    summary="The service at a glance: worst status, counts, last scan",
    tag="status",
    response=StatusOut,
)
async def status(request: web.Request) -> web.Response:
    async def summary() -> bytes:
        async with request.app[sessionmaker_key]() as session:
            counts = await status_counts(session)
            last_scan = await session.scalar(
                select(ScanRun).order_by(ScanRun.started_at.desc(), ScanRun.id.desc()).limit(1)
            )
        answer = {
            "status": worst_status(s for s, n in counts.items() if n),
            "counts": counts,
            "jobs": sum(counts.values()),
            "last_scan": last_scan,
            "scheduler": scheduler_state(request.app),
        }
        return encode(StatusOut.model_validate(answer, from_attributes=True))

    return respond(await request.app[coalescer_key].run("status", summary))
