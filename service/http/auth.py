"""Bearer tokens for the API: read-only tokens may GET, read-write tokens may also change.

Which access a route needs is part of its OpenAPI description (`Operation.access`), so the
document and the check cannot disagree. With no token configured at all the API is open, but
only when the server was allowed to be (loopback, or `serve --insecure-no-auth`).
"""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web
from yarl import URL

from service.core.hosts import is_loopback
from service.core.visible import quote
from service.http.api.errors import ApiError, Handler
from service.http.api.openapi import operation_of
from service.runtime.keys import (
    access_key,
    caller_key,
    open_access_key,
    sessionmaker_key,
    settings_key,
)
from service.store.tokens import (
    OPEN_ACCESS_NAME,
    Access,
    Grant,
    any_token,
    bootstrap_grant,
    grant_of,
)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="backup-monitor"'}


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers=_CHALLENGE)


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def origin_refusal(origin: str | None, fetch_site: str | None, own: Collection[str]) -> str | None:
    """Why a change sent with this `Origin` / `Sec-Fetch-Site` is refused (None: it is not):
    it came from a page of another origin (another host, another port, another scheme).

    Without either header (an old browser, or no browser) nothing is refused here: the
    session-bound form token (dashboard) or the loopback check (open API) decides."""
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"came from another site's page (Sec-Fetch-Site: {quote(fetch_site, 40)})"
    if origin is None:
        return None
    try:
        normalized = str(URL(origin).origin()) if origin != "null" else "null"
    except ValueError:
        normalized = "null"
    if normalized not in own:
        return f"came from another site's page (Origin: {quote(origin, 100)})"
    return None


def own_origins(request: web.Request) -> set[str]:
    """This site's origins: the one the request was sent to (https when a proxy says so, see
    secure()) and PUBLIC_URL's."""
    origins = set()
    public = request.app[settings_key].public_url
    if public:
        origins.add(str(URL(public).origin()))
    try:
        url = request.url
        origins.add(str(url.with_scheme("https" if secure(request) else url.scheme).origin()))
    except ValueError:  # a Host header that makes no URL: only PUBLIC_URL is this site
        pass
    return origins


def secure(request: web.Request) -> bool:
    """Whether the client reached us over HTTPS: here, or at a proxy that says so."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def check_origin(request: web.Request) -> str | None:
    """Why this request comes from another site's page (None: it does not seem to)."""
    return origin_refusal(
        request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"), own_origins(request)
    )


def check_open_request(request: web.Request) -> None:
    """Without tokens the API trusts whoever can reach it, so it must be sure who that is.

    On a loopback listener, the Host must be a loopback name too (a web page that rebinds its
    own DNS name to 127.0.0.1 would otherwise read and change everything). And no change may
    come from another site's page (a form or `fetch` there reaches 127.0.0.1 too).
    """
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    listener = sockname[0] if isinstance(sockname, tuple) else ""
    if listener and is_loopback(listener) and not is_loopback(request.url.host or ""):
        raise ApiError(403, "forbidden", "this server answers loopback names only without a token")
    if request.method in _SAFE_METHODS:
        return
    if check_origin(request) is not None:
        raise ApiError(
            403, "forbidden", "changes from another site's page are refused (no token configured)"
        )


async def access_for(
    app: web.Application, presented: str | None, request: web.Request | None = None
) -> Access:
    """The access a token grants (see grant_for)."""
    return (await grant_for(app, presented, request)).access


async def grant_for(
    app: web.Application, presented: str | None, request: web.Request | None = None
) -> Grant:
    """The access a token grants and its name (None: no token was given); raises a 401
    ApiError when it grants none. Shared by the API (bearer header) and the dashboard (login
    cookie); `request`, when given, is checked as an open-access request must be
    (check_open_request)."""
    configured = app[settings_key].api_token
    bootstrap = configured.get_secret_value() if configured is not None else None
    if presented is not None:
        grant = bootstrap_grant(presented, bootstrap)  # no session: it is read on every request
        if grant is not None:
            return grant
    async with app[sessionmaker_key]() as session:
        if presented is None:
            if bootstrap is None and not await any_token(session):
                if app[open_access_key]:
                    if request is not None:
                        check_open_request(request)
                    return Grant("read-write", OPEN_ACCESS_NAME)
                raise _unauthorized(
                    "no API token exists yet and this server listens beyond loopback: create "
                    "one with `backup-monitor tokens create NAME` (or set API_TOKEN)"
                )
            raise _unauthorized("send the header `Authorization: Bearer <token>`")
        grant = await grant_of(session, presented)
    if grant is None:
        raise _unauthorized("the token is not valid (unknown or revoked)")
    return grant


async def authenticate(request: web.Request) -> Grant:
    """What the request's bearer token grants; raises a 401 ApiError when it grants none."""
    header = request.headers.get("Authorization")
    if header is None:
        return await grant_for(request.app, None, request)
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise _unauthorized("the Authorization header must be `Bearer <token>`")
    return await grant_for(request.app, presented)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    match = request.match_info
    if match.http_exception is not None:  # 404 and 405 need no token
        return await handler(request)
    described = operation_of(match.handler)
    needed = described.access if described is not None else "write"  # undescribed: fail closed
    if needed in ("public", "page"):  # pages check their login cookie themselves
        return await handler(request)
    grant = await authenticate(request)
    if needed == "write" and grant.access != "read-write":
        raise ApiError(
            403, "forbidden", "this token may only read; use a read-write token to change things"
        )
    request[access_key] = grant.access  # what the answer may show (ping keys: read-write only)
    request[caller_key] = grant.name  # who made what this request creates
    return await handler(request)


def public_origin(request: web.Request) -> str:
    """Where people and scripts reach this service: PUBLIC_URL when set (a request's Host
    header is whatever its client sent), else this request's own origin."""
    return request.app[settings_key].public_url or str(request.url.origin())


def shows_ping_keys(access: Access | None) -> bool:
    """Whether ping keys may be shown: a ping is a write (a success ping could hide a failing
    job), so a read-only token (a Grafana's, a dashboard viewer's) never sees them."""
    return access == "read-write"
