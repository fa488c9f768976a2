"""One JSON error envelope for every failure: {"error": {"code", "message", "details"}}.

A dashboard page asked for by a browser gets the same error as a plain HTML page instead.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from service.db.errors import database_unavailable, describe_database_error
from service.http.api.openapi import operation_of
from service.logs import LogThrottle, redact
from service.runtime.keys import engine_key

logger = logging.getLogger(__name__)
# The one budget of log lines for malformed requests, shared by the app and its server.
bad_requests_key = web.AppKey("bad_requests", LogThrottle)

RETRY_AFTER_SECONDS = 5

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media_type", 422: "validation_error", 503: "unavailable",
}  # fmt: skip


class ApiError(Exception):
    """An error a client caused (or must be told about); becomes the JSON envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, details: list[Any] | None = None
) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return web.json_response(body, status=status)


def error_page(status: int, message: str) -> web.Response:
    """The error as a plain page, for a person looking at the dashboard."""
    title = f"{status} {HTTPStatus(status).phrase}"
    text = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"</head><body><h1>{title}</h1><p>{html.escape(message)}</p>"
        '<p><a href="/">Back to the dashboard</a></p></body></html>\n'
    )
    return web.Response(text=text, status=status, content_type="text/html")


def wants_page(request: web.Request) -> bool:
    """A browser on a dashboard page (an HTML route, HTML accepted): errors as a page too."""
    match = request.match_info
    described = operation_of(match.handler) if match.http_exception is None else None
    return (
        described is not None
        and described.media_type == "text/html"
        and "text/html" in request.headers.get("Accept", "")
    )


def error_for(
    request: web.Request, status: int, code: str, message: str, details: list[Any] | None = None
) -> web.Response:
    if wants_page(request):
        return error_page(status, message)
    return error_response(status, code, message, details)


def _first_line(text: str, limit: int = 120) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line.rstrip(":")[:limit]


def client_fault(exc: BaseException) -> str | None:
    """What was wrong with a request that aiohttp could not read (its head or its body: a
    bad chunk, a body that does not decompress...), or None when `exc` is not such a fault."""
    cause = exc.__cause__ if isinstance(exc, web.RequestPayloadError) else None
    if isinstance(cause, HttpProcessingError):
        exc = cause
    if isinstance(exc, HttpProcessingError):
        return f"the request could not be read: {_first_line(exc.message) or 'malformed'}"
    if isinstance(exc, web.RequestPayloadError):
        return f"the request body could not be read: {_first_line(str(exc)) or 'malformed'}"
    return None


def log_bad_request(throttle: LogThrottle, reason: str, **context: Any) -> None:
    """One line for a request the client got wrong (never a traceback), within the budget."""
    left_out = throttle.allow()
    if left_out is None:
        return
    extra = {**context, "reason": reason}
    if left_out:
        extra["not_logged_before"] = left_out
    logger.info("bad request", extra=extra)


def route_of(request: web.Request) -> str:
    """The route's template (`/ping/{ping_key}`), which carries no secret, else the path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_for(request, exc.status, exc.code, exc.message, exc.details)
        response.headers.update(exc.headers)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
        response = error_for(request, exc.status, _CODES.get(exc.status, "error"), message)
        if "Allow" in exc.headers:  # a 405 says which methods the resource has
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:
        fault = client_fault(exc)
        if fault is not None:
            log_bad_request(request.app[bad_requests_key], fault, route=route_of(request))
            return error_for(request, 400, "bad_request", fault)
        if isinstance(exc, ConnectionResetError) and request.transport is None:
            # The client hung up while sending its body: nobody is left to answer.
            logger.debug("client went away", extra={"route": route_of(request)})
            return error_response(400, "bad_request", "the request ended early")
        if database_unavailable(exc):
            engine = request.app.get(engine_key)
            error = describe_database_error(exc, engine.url if engine is not None else None)
            logger.warning(
                "database unavailable", extra={"path": redact(request.path), "error": redact(error)}
            )
            response = error_response(
                503, "database_unavailable", "the database is unavailable; try again shortly"
            )
            # Not the client's fault and likely brief (a restart): a ping script's retry
            # (`curl --retry`) honours this.
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response
        logger.exception(
            "unhandled error", extra={"method": request.method, "path": redact(request.path)}
        )
        return error_response(
            500, "internal_error", "internal server error; the details are in the service log"
        )
