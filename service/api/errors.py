"""One JSON error envelope for every failure: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from service.errors import database_unavailable, describe_database_error
from service.keys import engine_key
from service.logs import redact

logger = logging.getLogger(__name__)

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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        response.headers.update(exc.headers)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
        response = error_response(exc.status, _CODES.get(exc.status, "error"), message)
        if "Allow" in exc.headers:  # a 405 says which methods the resource has
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:
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
