"""/api/openapi.json and /api/docs: the API described by itself."""

from __future__ import annotations

from aiohttp import web

from service.api.openapi import build_document, operation, render_docs

routes = web.RouteTableDef()


@routes.get("/api/openapi.json")
@operation(
    summary="This API as an OpenAPI 3.1 document", tag="meta", access="public",
    media_type="application/json",
)  # fmt: skip
async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(build_document(request.app))


@routes.get("/api/docs")
@operation(
    summary="This API as a page to read", tag="meta", access="public", media_type="text/html"
)
async def docs_handler(request: web.Request) -> web.Response:
    return web.Response(text=render_docs(build_document(request.app)), content_type="text/html")
