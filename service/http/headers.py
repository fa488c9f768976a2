"""Headers every response carries: no MIME sniffing, no framing, no referrer to other sites,
and a `Server` that names the product without its versions (or those of Python and aiohttp).

The Content-Security-Policy is the dashboard's: everything from this origin only, nothing
framed, forms posting here only. The pages keep their small inline script and styles (one file,
no asset from elsewhere), hence 'unsafe-inline' for those two; the rest is closed. JSON answers
get the same header, where it costs nothing.
"""

from __future__ import annotations

from aiohttp import web

SERVER = "backup-monitor"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "same-origin",
}


def add_security_headers(response: web.StreamResponse) -> None:
    """The headers above (a handler's own choice of them kept), and our `Server`."""
    # aiohttp has set its `Server: Python/3.x aiohttp/3.x` by the time on_response_prepare runs.
    response.headers["Server"] = SERVER
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


async def on_response_prepare(_request: web.Request, response: web.StreamResponse) -> None:
    add_security_headers(response)
