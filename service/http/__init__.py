"""The HTTP surfaces over one aiohttp app: the JSON API (api/), the dashboard (web/), and what
both share: token and session access (auth), response headers (headers), malformed-request
refusal (wellformed), the request id and the access log (access); the health endpoints (health) and
Prometheus metrics (metrics).

May import the store, the database layer, the pure core, the runtime's components (to start a
scan, to read their health) and the keys; never the app factory, the server or the CLI.
"""
