"""/api/openapi.json and /api/docs: the API described by itself."""

from __future__ import annotations

import weakref
from typing import Any

from aiohttp import web

from service.http.api.openapi import build_document, operation, render_docs

routes = web.RouteTableDef()

# The router is frozen once the app runs: build its document once per app.
_documents: weakref.WeakKeyDictionary[web.Application, dict[str, Any]] = weakref.WeakKeyDictionary()


def document_of(app: web.Application) -> dict[str, Any]:
    document = _documents.get(app)
    if document is None:
        document = _documents[app] = build_document(app)
    return document


@routes.get("/api/openapi.json")
@operation(
    summary="This API as an OpenAPI 3.1 document", tag="meta", access="public",
    media_type="application/json",
)  # fmt: skip
async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(document_of(request.app))


@routes.get("/api/docs")
@operation(
    summary="This API as a page to read", tag="meta", access="public", media_type="text/html"
)
async def docs_handler(request: web.Request) -> web.Response:
    return web.Response(text=render_docs(document_of(request.app)), content_type="text/html")
