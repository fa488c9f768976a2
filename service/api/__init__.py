"""The JSON API and the health and metrics endpoints: thin aiohttp handlers (one module per
resource), `@operation` (the one source of the OpenAPI document and of each route's access),
the schemas, the JSON error envelope, token authentication.

May import storage (jobs, pings, tokens, silences, models, db), the pure core, the scan
coordinator (to start a scan) and keys; never the app, the server, the dashboard or the CLI.
"""
