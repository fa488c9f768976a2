"""The dashboard: server-rendered pages over the same data as the API (views: handlers; queries:
its SQL; charts, words: pure formatting for the templates).

May import what the API may, the shared HTTP modules (service.http.auth, wellformed) and the
API's schemas, errors and `@operation` (one source of each route's access); never the app, the
server or the CLI. Nothing in the API imports the dashboard.
"""
