"""The dashboard: server-rendered pages over the same data as the API (views: handlers; queries:
its SQL; charts, words: pure formatting for the templates).

May import what the API may, and the API's own modules (schemas, errors, auth, openapi,
wellformed); never the app, the server or the CLI. Nothing in the API imports the dashboard.
"""
