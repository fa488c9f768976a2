"""The OpenAPI 3.1 document, built from the router and the pydantic models each handler names.

Every handler carries an `Operation` (set by the `@operation` decorator): its query and body
models, which the handler uses to validate the request, and its response model, which it uses
to serialize the answer. The document is generated from the routes actually registered, so a
route cannot exist without being documented (a test checks it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import jinja2
import markupsafe
from aiohttp import web
from markupsafe import Markup
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from service.core.badges import KEY_PATTERN
from service.core.jobspec import JOB_NAME_PATTERN, TAG_PATTERN
from service.http.api.schemas import ErrorOut

HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])

REF_TEMPLATE = "#/components/schemas/{model}"
TITLE = "backup-monitor API"
_ATTRIBUTE = "__api_operation__"
_PATH_PARAMETER = re.compile(r"\{(\w+)(?::[^}]*)?\}")
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "job": {
        "description": "the job's id or its name",
        "schema": {"type": "string", "minLength": 1, "maxLength": 100},
    },
    "action": {
        "description": "what to do to the job",
        "schema": {"type": "string", "enum": ["pause", "resume", "scan"]},
    },
    "ping_key": {
        "description": "the job's ping key (its `ping_url` ends with it)",
        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
    },
    "slug": {
        "description": "a job's name, after the project's ping key (PING_KEY)",
        "schema": {"type": "string", "pattern": JOB_NAME_PATTERN},
    },
    "signal": {
        "description": "`start`, `fail`, `log`, or an exit status (0 success, 1-255 failure)",
        "schema": {"type": "string", "pattern": "^(start|fail|log|[0-9]{1,3})$"},
    },
    "silence_id": {
        "description": "the silence's id",
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**62},
    },
    "token_id": {
        "description": "the token's id (see GET /api/v1/tokens)",
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**62},
    },
    "key": {
        "description": "the badge's opaque key (see GET /api/v1/badges)",
        "schema": {"type": "string", "pattern": f"^{KEY_PATTERN}$"},
    },
    "name": {
        "description": "the job's name, or the tag, the badge is for",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"},
    },
    "tag": {
        "description": "a tag the operator made public (PUBLIC_STATUS_TAGS)",
        "schema": {"type": "string", "pattern": TAG_PATTERN},
    },
    "scan_id": {
        "description": "the scan's id",
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**62},
    },
}
_ERROR_TEXT = {
    303: "See other: the page to go to (the login form when a token is needed)",
    400: "Malformed request (the body is not JSON)",
    401: "No valid token",
    403: "The token may only read",
    404: "No such resource",
    409: "Conflict with the current state",
    413: "Body larger than 1 MiB",
    415: "The body must be application/json",
    422: "Validation failed; details name each field",
    503: "The database is unavailable",
}


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    tag: str
    response: type[BaseModel] | None = None
    status: int = 200
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    # Non-JSON answers (metrics, the docs page) name their media type instead of a model.
    media_type: str = "application/json"
    # public: no token; read / write: a bearer token that may read / change; page: a dashboard
    # page, behind the login cookie (see service.http.web).
    access: Literal["public", "read", "write", "page"] = "read"
    description: str = ""


def operation(**fields: Any) -> Callable[[HandlerT], HandlerT]:
    """Attach the OpenAPI description (and the models used for validation) to a handler."""
    described = Operation(**fields)

    def mark(handler: HandlerT) -> HandlerT:
        setattr(handler, _ATTRIBUTE, described)
        return handler

    return mark


def operation_of(handler: Any) -> Operation | None:
    found: Operation | None = getattr(handler, _ATTRIBUTE, None)
    return found


def documented_routes(app: web.Application) -> Iterable[tuple[str, str, Any]]:
    """(method, path template, handler) for every route but the automatic HEADs."""
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        if path is None:
            continue
        yield route.method, _PATH_PARAMETER.sub(r"{\1}", path), route.handler


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route registered on `app`."""
    described: list[tuple[str, str, Operation]] = []
    for method, path, handler in documented_routes(app):
        found = operation_of(handler)
        if found is None:
            raise RuntimeError(f"route {method} {path} has no @operation description")
        described.append((method, path, found))

    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorOut, "serialization")]
    for _, _, op in described:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        if op.response is not None:
            wanted.append((op.response, "serialization"))
    refs, top = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF_TEMPLATE)

    paths: dict[str, dict[str, Any]] = {}
    for method, path, op in described:
        paths.setdefault(path, {})[method.lower()] = _operation_object(method, path, op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": "1",
            "description": "Watch backup files: inventory, history, cron-aware status. "
            "Send `Authorization: Bearer <token>` (see `backup-monitor tokens create`).",
        },
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _operation_object(
    method: str, path: str, op: Operation, refs: dict[Any, Any]
) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, **PATH_PARAMETERS[name]}
        for name in _PATH_PARAMETER.findall(path)
    ]
    if op.query is not None:
        parameters += _query_parameters(op.query)
    success: dict[str, Any] = {"description": op.summary}
    if op.response is not None:
        success["content"] = {"application/json": {"schema": refs[(op.response, "serialization")]}}
    elif op.status != 204 and op.status < 300:  # a redirect's body is not documented
        kind = "object" if op.media_type == "application/json" else "string"
        success["content"] = {op.media_type: {"schema": {"type": kind}}}
    errors = set(op.errors) | {503}
    if op.access in ("read", "write"):
        errors.add(401)
    if op.access == "write":
        errors.add(403)
    if parameters:
        errors.add(422)
    if any(p["in"] == "path" for p in parameters):
        errors.add(404)
    if op.body is not None:
        errors |= {400, 413, 415, 422}
    error_schema = {"application/json": {"schema": refs[(ErrorOut, "serialization")]}}
    responses: dict[str, Any] = {str(op.status): success}
    for code in sorted(errors):
        if code < 300:  # another success (`?wait=true` answers 200 instead of 202)
            responses[str(code)] = success
        elif code < 400:
            responses[str(code)] = {"description": _ERROR_TEXT[code]}
        else:
            responses[str(code)] = {"description": _ERROR_TEXT[code], "content": error_schema}
    result: dict[str, Any] = {
        "operationId": f"{method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_')}",
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
    }
    if op.description:
        result["description"] = op.description
    if parameters:
        result["parameters"] = parameters
    if op.body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    if op.access in ("public", "page"):
        result["security"] = []
    return result


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation", ref_template=REF_TEMPLATE)
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        prop.pop("title", None)
        description = prop.pop("description", None)
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def schema_type(schema: dict[str, Any]) -> Markup:
    """A short human description of a JSON schema, linking to named schemas."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return Markup('<a href="#schema-{0}">{0}</a>').format(name)
    if "anyOf" in schema:
        return Markup(" or ").join(schema_type(part) for part in schema["anyOf"])
    if "const" in schema:
        return Markup("<code>{}</code>").format(json.dumps(schema["const"]))
    if "enum" in schema:
        return Markup("one of ") + Markup(", ").join(
            Markup("<code>{}</code>").format(value) for value in schema["enum"]
        )
    kind = schema.get("type", "any")
    if kind == "array":
        return Markup("array of ") + schema_type(schema.get("items", {}))
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return Markup("object of ") + schema_type(schema["additionalProperties"])
    text = schema.get("format", kind)
    bounds = [f"{key} {schema[key]}" for key in ("minimum", "maximum") if key in schema]
    if bounds:
        text += f" ({', '.join(bounds)})"
    return Markup("{}").format(text)


_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.ChainableUndefined,
    extensions=["jinja2.ext.do"],
)
_templates.filters["schema_type"] = schema_type
_CODE = re.compile(r"`([^`]+)`")


def inline_markdown(text: object) -> markupsafe.Markup:
    """A description as the OpenAPI document writes it (CommonMark), for the page: escaped,
    with its `code` spans as <code> (the only Markdown the descriptions use)."""
    parts = _CODE.split("" if text is None else str(text))  # text, code, text, code, ...
    return markupsafe.Markup("").join(
        markupsafe.Markup("<code>{}</code>").format(part) if index % 2 else markupsafe.escape(part)
        for index, part in enumerate(parts)
    )


_templates.filters["md"] = inline_markdown


def render_docs(document: dict[str, Any]) -> str:
    """A self-contained HTML page describing the document (no script, no external asset)."""
    return _templates.get_template("api_docs.html").render(doc=document)
