"""What a request must be before any handler reads it, and reading a form without surprises.

aiohttp parses a request lazily: a bad `Host` only raises when something asks for
`request.url`, a bad form only when the handler reads it, and each with whatever exception the
parser had at hand (ValueError, LookupError, RuntimeError...). These checks turn all of them into
a 400 that says what was wrong, logged as one line, before a handler can trip over them.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy
from yarl import URL

from service.http.api.errors import ApiError, Handler, bad_requests_key, log_bad_request, route_of

# A DNS name or IPv4 address (what browsers and HTTP clients send: IDNs arrive as punycode),
# or an IPv6 literal in brackets; then an optional port. Stricter than RFC 3986's reg-name on
# purpose: the Host ends up in links (ping URLs) and in the same-origin check.
_HOST = re.compile(
    r"(?P<name>[A-Za-z0-9._-]{1,253}|\[(?P<ip6>[0-9A-Fa-f:.]{2,45})\])(?::(?P<port>[0-9]{0,5}))?"
)


# Remembered: a server sees the same few Host values on every request (and the check builds a
# URL each time); bounded, so a client sending ever new ones cannot grow it.
@functools.lru_cache(maxsize=256)
def host_problem(host: str) -> str | None:
    """Why `host` (a Host header) is not `name[:port]`, or None when it is."""
    match = _HOST.fullmatch(host)
    if match is None:
        return "the Host header must be a host name or address, with an optional port"
    if match["ip6"] is not None:
        try:
            ipaddress.IPv6Address(match["ip6"])
        except ValueError:
            return "the Host header has an invalid IPv6 address"
    if match["port"] and int(match["port"]) > 65535:
        return "the port in the Host header is out of range (1-65535)"
    try:  # what request.url, its host and its origin will do with it
        url = URL.build(scheme="http", authority=host)
        str(url.origin()), url.host
    except ValueError:  # an invalid IDNA (punycode) name, for one
        return "the Host header is not a valid host name"
    return None


def _listener(request: web.Request) -> str:
    """The address this request came in on, as a Host header would say it."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        return "localhost"
    address, port = sockname[0], sockname[1]
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@web.middleware
async def well_formed_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a malformed Host, before anything reads `request.url` (a 500 otherwise)."""
    host = request.headers.get("Host")
    if host is None:
        # HTTP/1.0 allows no Host; aiohttp would then ask the resolver for this machine's
        # name (socket.getfqdn(), blocking the event loop): the listener's address is the truth.
        return await handler(request.clone(host=_listener(request)))
    problem = host_problem(host)
    if problem is not None:
        log_bad_request(request.app[bad_requests_key], problem, route=route_of(request))
        raise ApiError(400, "bad_request", problem)
    return await handler(request)


async def read_form(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The posted form; a 400 ApiError (and one log line) when it cannot be read.

    aiohttp raises ValueError for most malformed bodies, but LookupError for an unknown
    charset, RuntimeError for an unknown Content-Transfer-Encoding and its own HTTP errors for
    a bad part header: all of them are the client's doing here.
    """
    try:
        return await request.post()
    except (ValueError, LookupError, RuntimeError, HttpProcessingError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = f"the form could not be read: {(lines[-1] if lines else type(exc).__name__)[:120]}"
        log_bad_request(request.app[bad_requests_key], reason, route=route_of(request))
        raise ApiError(400, "bad_request", reason) from None
