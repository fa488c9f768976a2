"""Reading requests through pydantic models and answering through them."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from service.core.jobspec import error_details
from service.http.api.errors import ApiError

ModelT = TypeVar("ModelT", bound=BaseModel)


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON value")


def invalid(exc: ValidationError, what: str = "request") -> ApiError:
    details = error_details(exc)
    fields = ", ".join(dict.fromkeys(detail["field"] for detail in details))
    return ApiError(422, "validation_error", f"invalid {what}: {fields}", details)


def query_of(request: web.Request, model: type[ModelT]) -> ModelT:
    """The query string validated by `model` (422 naming each bad parameter)."""
    repeated = sorted({key for key in request.query if len(request.query.getall(key)) > 1})
    if repeated:
        details = [{"field": key, "message": "given more than once"} for key in repeated]
        raise ApiError(
            422, "validation_error", f"invalid query parameter: {', '.join(repeated)}", details
        )
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise invalid(exc, "query parameter") from None


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object: 415 when it is not JSON, 400 when it does not parse."""
    if request.content_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the body as application/json (got {request.content_type or 'nothing'})",
        )
    raw = await request.read()  # over client_max_size: aiohttp raises 413
    try:
        data = json.loads(raw, parse_constant=_not_json)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "bad_request", "the body is nested too deeply") from None
    try:  # "\udcff" is valid JSON but no valid text: no database could store it
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ApiError(
            400, "bad_request", "the body contains an unpaired surrogate escape (like \\udcff)"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(
            422,
            "validation_error",
            f"the body must be a JSON object, not {type(data).__name__}",
            [{"field": "(body)", "message": "expected an object"}],
        )
    return data


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


def respond(model: BaseModel | bytes, status: int = 200) -> web.Response:
    """A JSON answer from a response model (or its already encoded form)."""
    body = model if isinstance(model, bytes) else encode(model)
    return web.Response(body=body, status=status, content_type="application/json")
