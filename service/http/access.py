"""The request id and the access log.

Every request gets an id: the client's `X-Request-Id` when it is well-formed (a proxy or a load
balancer in front made one: the same id then names the request in both logs), else a new
random one. The response carries it back in `X-Request-Id`. With ACCESS_LOG=true each request
is also one line on the logger `service.access`: method, path (ping keys redacted), status,
duration and the request id.
"""

from __future__ import annotations

import logging
import os
import re
import time

from aiohttp import web

from service.http.api.errors import Handler
from service.logs import redact
from service.runtime.keys import request_id_key, settings_key

logger = logging.getLogger("service.access")

REQUEST_ID_HEADER = "X-Request-Id"
# What a proxy's id looks like (a UUID, a hex or base64 string, `abc-123:4`); anything else
# (too long, spaces, control characters) could forge log lines or headers: replaced.
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


def request_id_from(header: str | None) -> str:
    """The client's id when well-formed, else a new one (32 hex digits)."""
    if header is not None and _WELL_FORMED.fullmatch(header):
        return header
    return os.urandom(16).hex()  # as random as uuid4().hex, at a fifth of its cost


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Names the request (request_id_key) and, with ACCESS_LOG, logs it once answered."""
    request[request_id_key] = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    if not request.app[settings_key].access_log:
        return await handler(request)
    started = time.perf_counter()
    status = 500  # what the client gets when the handler fails past every other middleware
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        logger.info(
            "request",
            extra={
                "method": request.method,
                "path": redact(request.raw_path),
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "request_id": request[request_id_key],
                "remote": request.remote,
            },
        )


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the request's id in the answer (streamed answers too)."""
    request_id = request.get(request_id_key)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
