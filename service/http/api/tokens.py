"""/api/v1/tokens: create, list and revoke API tokens (read-write tokens only). Thin handlers:
the tokens live in service.store.tokens, like the CLI's.

A token is answered once, by the POST that makes it; only its hash is stored, so no route can
show it again. Revoking a token (the caller's own included) applies to the next request.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from service.db.models import MAX_INT_ID
from service.http.api.errors import ApiError
from service.http.api.openapi import operation
from service.http.api.schemas import TokenCreate, TokenCreated, TokenList, TokenOut
from service.http.api.validation import invalid, json_object, respond
from service.runtime.keys import sessionmaker_key
from service.store.tokens import TokenError, TokenInfo, issue_token, list_tokens, revoke_token_id

routes = web.RouteTableDef()

TOKEN = r"/api/v1/tokens/{token_id:\d{1,19}}"  # noqa: S105 (a route)
_NO_STORE = {"Cache-Control": "no-store"}


def token_out(info: TokenInfo) -> TokenOut:
    return TokenOut(id=info.id, name=info.name, access=info.access, created_at=info.created_at)


@routes.get("/api/v1/tokens")
@operation(
    summary="List API tokens", tag="tokens", response=TokenList, access="write",
    description="Names, access and creation time, by name; never a token nor its hash. "
    "Read-write tokens only (a read-only token may not manage tokens). `API_TOKEN`, from the "
    "environment, is not listed.",
)  # fmt: skip
async def list_tokens_handler(request: web.Request) -> web.Response:
    async with request.app[sessionmaker_key]() as session:
        tokens = await list_tokens(session)
    return respond(TokenList(items=[token_out(info) for info in tokens]))


@routes.post("/api/v1/tokens")
@operation(
    summary="Create an API token", tag="tokens", body=TokenCreate, response=TokenCreated,
    status=201, access="write", errors=(409,),
    description="Answers the token in `token`, this once: only its SHA-256 is stored, so it "
    "cannot be shown again (revoke it and make another if it is lost). 409 if the name is "
    "taken.",
)  # fmt: skip
async def create_token_handler(request: web.Request) -> web.Response:
    data = await json_object(request)
    try:
        body = TokenCreate.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, "token") from None
    async with request.app[sessionmaker_key]() as session:
        try:
            info, token = await issue_token(
                session, body.name, read_only=body.access == "read-only"
            )
        except TokenError as exc:
            details = [{"field": "name", "message": str(exc)}]
            raise ApiError(409, "conflict", str(exc), details) from None
    created = TokenCreated(**token_out(info).model_dump(), token=token)
    response = respond(created, status=201)
    response.headers.update(_NO_STORE)
    response.headers["Location"] = f"/api/v1/tokens/{info.id}"
    return response


@routes.delete(TOKEN)
@operation(
    summary="Revoke an API token", tag="tokens", status=204, access="write",
    description="At once, on every replica: the next request with it is refused (401). A "
    "token may revoke itself.",
)  # fmt: skip
async def revoke_token_handler(request: web.Request) -> web.Response:
    token_id = int(request.match_info["token_id"])
    revoked = None
    if token_id <= MAX_INT_ID:
        async with request.app[sessionmaker_key]() as session:
            revoked = await revoke_token_id(session, token_id)
    if revoked is None:
        raise ApiError(404, "not_found", f"no token {token_id} (see GET /api/v1/tokens)")
    return web.Response(status=204)
