"""The JSON API: thin aiohttp handlers (one module per resource), `@operation` (the one source of
the OpenAPI document and of each route's access), the schemas, the JSON error envelope, the
coalescing of identical concurrent reads.

May import the store, the database layer, the pure core, the scan coordinator (to start a scan),
the keys and the shared HTTP modules (service.http.auth, headers, wellformed); never the app,
the server, the dashboard or the CLI.
"""
