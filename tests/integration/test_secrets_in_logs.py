"""Ping keys are secrets: no log line ever carries one (issue 10 item 17)."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text

from service.logs import configure_logging
from service.runtime.keys import engine_key


@pytest.fixture
def log_output() -> Iterator[Callable[[str], io.StringIO]]:
    """configure_logging() as `serve` does, writing into a StringIO; restored after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("aiohttp.access").level

    def configure(fmt: str) -> io.StringIO:
        configure_logging("INFO", fmt)
        # The access log is quiet by default; heard here, it must not tell a key either.
        logging.getLogger("aiohttp.access").setLevel(logging.INFO)
        buffer = io.StringIO()
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
        return buffer

    yield configure
    root.handlers[:], level, access = saved
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(access)


# Real failures inside /ping/KEY (not outages), which the service answers 500 and logs with
# their traceback: the database refuses the ping's row, or the lookup of its key fails (the
# statement's parameters, the key among them, would be in the error's text).
FAULTS = {
    ("insert", "postgresql"): "ALTER TABLE pings ADD CONSTRAINT no_boom CHECK (body <> 'boom')",
    ("insert", "sqlite"): "CREATE TRIGGER no_boom BEFORE INSERT ON pings WHEN NEW.body = 'boom' "
    "BEGIN SELECT RAISE(ABORT, 'boom refused'); END",
    ("lookup", "postgresql"): "ALTER TABLE jobs RENAME COLUMN ping_key TO old_key",
    ("lookup", "sqlite"): "ALTER TABLE jobs RENAME COLUMN ping_key TO old_key",
}


@pytest.mark.parametrize("fault", ["insert", "lookup"])
@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_an_error_on_a_ping_logs_no_ping_key(
    aiohttp_client, make_app, log_output, fmt, fault
):
    output = log_output(fmt)
    app = make_app()
    client = await aiohttp_client(app)
    created = await client.post("/api/v1/jobs", json={"name": "db", "schedule": {"every": 60}})
    key = (await created.json())["ping_key"]
    async with app[engine_key].begin() as connection:
        await connection.execute(text(FAULTS[fault, app[engine_key].dialect.name]))

    response = await client.post(f"/ping/{key}/fail?rid=r1", data="boom")
    # (SQLite's driver calls a missing column an OperationalError, but its code, SQLITE_ERROR,
    # is no outage: a 500 on both databases.)
    assert response.status == 500
    assert key not in await response.text()
    if fault == "insert":
        assert (await client.get(f"/ping/{key}")).status == 200  # the others still work

    logged = output.getvalue()
    assert "unhandled error" in logged
    assert "/ping/[key]/fail" in logged  # the path is there, its key is not
    assert key not in logged, logged


@pytest.mark.parametrize(
    ("line", "logged"),
    [
        ("/ping/Ab_-9x", "/ping/[key]"),
        ('"POST /ping/Ab_-9x/fail?rid=1 HTTP/1.1"', '"POST /ping/[key]/fail?rid=1 HTTP/1.1"'),
        ("https://backups.example.com/ping/Ab_-9x/3", "https://backups.example.com/ping/[key]/3"),
        ('{"path": "/ping/Ab_-9x"}', '{"path": "/ping/[key]"}'),
        ("/api/v1/jobs/ping-db/runs", "/api/v1/jobs/ping-db/runs"),
        ("/ping/", "/ping/"),
    ],
)  # fmt: skip
def test_redact_hides_the_key_of_every_ping_path(line, logged):
    from service.logs import redact

    assert redact(line) == logged
