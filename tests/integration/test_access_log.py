"""The request id every answer carries, and the optional access log (service/http/access.py)."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from aiohttp import web

from service.http.access import request_id_from

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
async def app(make_app: Any) -> web.Application:
    app: web.Application = make_app(access_log=True)
    return app


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "service.access"]


@pytest.mark.parametrize(
    "given",
    ["7f8c1e2a-5b6d-4c3e-9f10-112233445566", "abc123", "lb:1/2+3=", "x" * 128],
)
def test_a_well_formed_id_is_kept(given: str) -> None:
    assert request_id_from(given) == given


@pytest.mark.parametrize(
    "given", [None, "", "x" * 129, "two words", "a\r\nX-Forged: 1", "é-accent", "a;b", "<id>"]
)
def test_anything_else_is_replaced_by_a_new_id(given: str | None) -> None:
    made = request_id_from(given)
    assert GENERATED.fullmatch(made)
    assert made != request_id_from(given)  # a new one each time


async def test_the_answer_echoes_a_well_formed_request_id(client: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    response = await client.get("/health/live", headers={"X-Request-Id": "edge-42.a"})
    assert response.status == 200
    assert response.headers["X-Request-Id"] == "edge-42.a"
    (record,) = access_records(caplog)
    assert record.getMessage() == "request"
    assert (record.method, record.path, record.status) == ("GET", "/health/live", 200)
    assert record.request_id == "edge-42.a"
    assert record.remote == "127.0.0.1"
    assert isinstance(record.duration_ms, float) and record.duration_ms >= 0


async def test_a_malformed_request_id_is_replaced(client: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    response = await client.get("/health/live", headers={"X-Request-Id": "no spaces allowed"})
    made = response.headers["X-Request-Id"]
    assert GENERATED.fullmatch(made)
    (record,) = access_records(caplog)
    assert record.request_id == made


async def test_errors_are_logged_with_their_status_and_carry_the_id(
    client: Any, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    missing = await client.get("/api/v1/jobs/no-such-job")
    assert missing.status == 404
    assert GENERATED.fullmatch(missing.headers["X-Request-Id"])
    assert (await missing.json())["error"]["code"] == "not_found"
    unknown = await client.get("/nowhere")
    assert unknown.status == 404
    statuses = [(record.path, record.status) for record in access_records(caplog)]
    assert statuses == [("/api/v1/jobs/no-such-job", 404), ("/nowhere", 404)]
    ids = {record.request_id for record in access_records(caplog)}
    assert ids == {missing.headers["X-Request-Id"], unknown.headers["X-Request-Id"]}


async def test_ping_keys_are_redacted_in_the_access_log(client: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    await client.get("/ping/0123456789abcdef-secret/db-nightly")
    (record,) = access_records(caplog)
    assert record.path == "/ping/[key]/db-nightly"
    assert "secret" not in str(vars(record))


async def test_without_the_setting_no_access_line_but_still_an_id(
    aiohttp_client: Any, make_app: Any, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    client = await aiohttp_client(make_app())
    response = await client.get("/health/live", headers={"X-Request-Id": "kept-1"})
    assert response.headers["X-Request-Id"] == "kept-1"
    assert access_records(caplog) == []


async def test_badge_keys_are_redacted_in_the_access_log(client: Any, caplog: Any) -> None:
    """A badge's key lets whoever has it read the job's status: not in the log either."""
    caplog.set_level(logging.INFO, logger="service.access")
    await client.get("/badge/0123456789abcdef-secret/db-nightly.svg")
    (record,) = access_records(caplog)
    assert record.path == "/badge/[key]/db-nightly.svg"
    assert "secret" not in str(vars(record))
