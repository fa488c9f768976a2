"""Tokens, access levels, and the API describing itself (OpenAPI document and docs page)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from html.parser import HTMLParser

import pytest
from aiohttp import ClientSession, web
from sqlalchemy import select

from service.db.models import ApiToken
from service.http.api.openapi import documented_routes, operation_of
from service.runtime.keys import sessionmaker_key
from service.store.tokens import TOKEN_PREFIX, create_token, hash_token, revoke_token

BOOTSTRAP = "bootstrap-token-from-the-environment"
JOB = {"name": "db", "schedule": {"every": 3600}}


async def serve(aiohttp_client, make_app, **overrides):
    """The app from conftest's `make_app(**overrides)` (settings and create_app's options),
    and its test client."""
    app = make_app(**overrides)
    return app, await aiohttp_client(app)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


async def error_of(response, status):
    assert response.status == status, await response.text()
    return (await response.json())["error"]


async def test_no_token_configured_means_an_open_api_when_allowed(aiohttp_client, make_app):
    _, client = await serve(aiohttp_client, make_app)
    assert (await client.post("/api/v1/jobs", json=JOB)).status == 201
    assert (await client.get("/api/v1/jobs/db")).status == 200


async def test_no_token_configured_beyond_loopback_is_refused(aiohttp_client, make_app):
    _, client = await serve(aiohttp_client, make_app, open_access=False)
    error = await error_of(await client.get("/api/v1/jobs"), 401)
    assert "tokens create" in error["message"]
    assert (await client.get("/health/live")).status == 200


async def test_tokens_read_only_and_read_write(aiohttp_client, make_app):
    app, client = await serve(aiohttp_client, make_app)
    async with app[sessionmaker_key]() as session:
        writer = await create_token(session, "ci", read_only=False)
        reader = await create_token(session, "grafana", read_only=True)
    assert writer.startswith(TOKEN_PREFIX) and writer != reader

    # Now that tokens exist, the API is closed to anonymous callers, health stays open.
    response = await client.get("/api/v1/jobs")
    error = await error_of(response, 401)
    assert "Authorization: Bearer" in error["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    for open_path in ("/health/live", "/health/ready", "/api/openapi.json", "/api/docs"):
        assert (await client.get(open_path)).status == 200, open_path

    assert (await client.post("/api/v1/jobs", json=JOB, headers=bearer(writer))).status == 201
    assert (await client.get("/api/v1/jobs/db", headers=bearer(reader))).status == 200
    assert (await client.get("/api/v1/status", headers=bearer(reader))).status == 200
    for method, path in [("POST", "/api/v1/jobs"), ("PATCH", "/api/v1/jobs/db"),
                         ("DELETE", "/api/v1/jobs/db"), ("POST", "/api/v1/jobs/db/pause"),
                         ("POST", "/api/v1/jobs/db/scan"), ("POST", "/api/v1/scans")]:  # fmt: skip
        response = await client.request(method, path, json={}, headers=bearer(reader))
        error = await error_of(response, 403)
        assert error["code"] == "forbidden" and "read" in error["message"]
    assert (await client.get("/api/v1/jobs/db", headers=bearer(reader))).status == 200

    for header in (f"Bearer {writer}x", f"Basic {writer}", "Bearer", "Bearer ", writer,
                   "Bearer " + "x" * 5000, f"Bearer {hash_token(writer)}"):  # fmt: skip
        response = await client.get("/api/v1/jobs", headers={"Authorization": header})
        await error_of(response, 401)

    async with app[sessionmaker_key]() as session:
        await revoke_token(session, "ci")
    error = await error_of(await client.get("/api/v1/jobs", headers=bearer(writer)), 401)
    assert "revoked" in error["message"]
    assert (await client.get("/api/v1/jobs", headers=bearer(reader))).status == 200


async def test_only_a_hash_of_the_token_is_stored(aiohttp_client, make_app):
    app, _ = await serve(aiohttp_client, make_app)
    async with app[sessionmaker_key]() as session:
        token = await create_token(session, "ci", read_only=False)
        stored = (await session.scalars(select(ApiToken))).one()
    assert stored.token_hash == hash_token(token)
    assert token not in repr(stored.__dict__)


async def test_api_token_from_the_environment_is_read_write(aiohttp_client, make_app):
    _, client = await serve(aiohttp_client, make_app, api_token=BOOTSTRAP)
    await error_of(await client.get("/api/v1/jobs"), 401)  # configured: no longer open
    assert (await client.post("/api/v1/jobs", json=JOB, headers=bearer(BOOTSTRAP))).status == 201
    await error_of(await client.get("/api/v1/jobs", headers=bearer(BOOTSTRAP[:-1])), 401)


# --- the API describes itself -----------------------------------------------------------------


async def test_every_route_is_in_the_openapi_document(aiohttp_client, make_app):
    app, client = await serve(aiohttp_client, make_app)
    document = await (await client.get("/api/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    routes = list(documented_routes(app))
    assert len(routes) >= 15
    for method, path, handler in routes:
        assert path in document["paths"], path
        described = document["paths"][path][method.lower()]
        assert described["summary"]
        assert operation_of(handler) is not None
        # The document and the auth check read the same description.
        if operation_of(handler).access in ("public", "page"):
            assert described["security"] == []
        else:
            assert "401" in described["responses"]
    documented = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    assert documented == {(method, path) for method, path, _ in routes}


async def test_openapi_schemas_come_from_the_request_models(aiohttp_client, make_app):
    _, client = await serve(aiohttp_client, make_app)
    document = await (await client.get("/api/openapi.json")).json()
    create = document["paths"]["/api/v1/jobs"]["post"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert body["additionalProperties"] is False
    assert body["required"] == ["name", "schedule"]
    assert body["properties"]["name"]["type"] == "string"
    # Durations accept seconds or text such as "1h30m", and the document says so.
    grace = body["properties"]["grace"]["anyOf"]
    assert {part["type"] for part in grace} == {"integer", "string"}
    limit = next(
        p for p in document["paths"]["/api/v1/jobs"]["get"]["parameters"] if p["name"] == "limit"
    )
    assert limit["schema"]["minimum"] == 1 and limit["schema"]["maximum"] == 1000


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        for name, value in attrs:
            if name in ("src", "href") and value and re.match(r"^(https?:)?//", value):
                self.external.append(value)


async def test_docs_page_lists_every_path_and_loads_nothing_from_outside(aiohttp_client, make_app):
    _, client = await serve(aiohttp_client, make_app)
    response = await client.get("/api/docs")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    document = await (await client.get("/api/openapi.json")).json()
    for path in document["paths"]:
        assert path in page
    parser = _Assets()
    parser.feed(page)
    assert parser.external == [] and parser.scripts == 0
    assert "JobSpec" in page and "read-write token" in page
    # Descriptions are Markdown in the document: their `code` spans read as code on the page,
    # never as backticks, and what they hold is still escaped.
    assert "`" not in page
    assert "<code>status</code>" in page


# --- the dashboard's login, found in review ----------------------------------------------------


def csrf_in(page: str) -> str:
    """The CSRF token of the page's forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


@pytest.mark.parametrize(
    "target",
    ["//evil.example", "/\t/evil.example", "/\n/x", "https://evil.example/", "/\\evil.example",
     "javascript:alert(1)"],
)  # fmt: skip
def test_login_never_redirects_off_site(target):
    from service.http.web.views import safe_next

    assert safe_next(target) == "/"
    assert safe_next("/jobs/db?before=3") == "/jobs/db?before=3"


async def test_login_form_with_odd_csrf_and_blank_token(aiohttp_client, make_app):
    _, client = await serve(aiohttp_client, make_app)
    page = await client.get("/login")
    csrf = csrf_in(await page.text())
    response = await client.post("/logout", data={"csrf": "é" * 32}, allow_redirects=False)
    assert response.status == 403
    # Open access: a blank token logs nobody in and must not lock the dashboard.
    response = await client.post(
        "/login", data={"csrf": csrf, "token": "  ", "next": "/"}, allow_redirects=False
    )
    assert response.status == 303 and "bm_token" not in response.cookies
    assert (await client.get("/", allow_redirects=False)).status == 200
    assert (await client.get("/?tag=%00&status=bogus", allow_redirects=False)).status == 200


async def test_the_openapi_document_passes_an_openapi_validator(aiohttp_client, make_app):
    """A real OpenAPI 3.1 validator reads the served document (a `"default": null` beside
    `"type": "string"` once made it invalid); every error it finds is listed."""
    from openapi_spec_validator import OpenAPIV31SpecValidator

    _, client = await serve(aiohttp_client, make_app)
    document = await (await client.get("/api/openapi.json")).json()
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in OpenAPIV31SpecValidator(document).iter_errors()
    ]
    assert errors == []
    # The validator checks a default against its own schema only: no request field of the
    # document may show a default its schema refuses, JobPatch's included.
    patch = document["components"]["schemas"]["JobPatch"]["properties"]
    assert "default" not in patch["name"] and "default" not in patch["schedule"]


async def test_the_openapi_document_tells_what_the_server_refuses(aiohttp_client, make_app):
    _, client = await serve(aiohttp_client, make_app)
    document = await (await client.get("/api/openapi.json")).json()
    # `/metrics` answers 401 without METRICS_TOKEN, when it is set.
    assert "401" in document["paths"]["/metrics"]["get"]["responses"]
    # `cron: ""` (or 6 fields) is refused: the schema says so, not only the 422.
    schedule = document["components"]["schemas"]["Schedule"]
    cron = next(part for part in schedule["oneOf"] if part["required"] == ["cron"])
    pattern = re.compile(cron["properties"]["cron"]["pattern"])
    assert cron["properties"]["cron"]["minLength"] == 1
    assert pattern.search("0 2 * * *") and pattern.search(" 30 1 * * 1-5 ")
    for refused in ("", " ", "0 2 * * * *", "0 2 * *", "@daily"):
        assert not pattern.search(refused), refused


@pytest.mark.parametrize("cron", ["0 2 * * * *", "0 0 2 * * *", "", "0 2 * *"])
async def test_a_cron_expression_has_five_fields(aiohttp_client, make_app, cron):
    """The README says 5 fields; cronsim would take a 6th (seconds) and read `0 2 * * * *` as
    02 past every hour: refused with a 422 that says why, from the API and the YAML file."""
    from service.core.jobspec import parse_job

    _, client = await serve(aiohttp_client, make_app)
    job = {"name": "db", "schedule": {"cron": cron}}
    error = await error_of(await client.post("/api/v1/jobs", json=job), 422)
    [detail] = error["details"]
    assert detail["field"] == "schedule"
    assert "5 fields" in detail["message"] and detail["message"].startswith("bad cron expression")
    with pytest.raises(ValueError, match="5 fields"):
        parse_job(job)
    job["schedule"]["cron"] = "0 2 * * 1-5"
    assert (await client.post("/api/v1/jobs", json=job)).status == 201


# --- ping keys are for read-write eyes only ---------------------------------------------------


async def test_a_read_only_token_never_sees_a_ping_key(aiohttp_client, make_app):
    """A ping is a write (a success ping hides a failing job): every answer a read-only token
    gets (API, dashboard, metrics) is free of the key; a read-write token gets the ping URL."""
    app, client = await serve(aiohttp_client, make_app, metrics_token=None)
    async with app[sessionmaker_key]() as session:
        writer = await create_token(session, "ci", read_only=False)
        reader = await create_token(session, "grafana", read_only=True)
    created = await client.post("/api/v1/jobs", json=JOB, headers=bearer(writer))
    key = (await created.json())["ping_key"]
    assert key and (await created.json())["ping_url"].endswith(f"/ping/{key}")
    assert (await client.post(f"/ping/{key}/fail", data="exit 1")).status == 200

    # The list, read by both at the same instant (identical reads share one database read).
    as_reader, as_writer = await asyncio.gather(
        client.get("/api/v1/jobs", headers=bearer(reader)),
        client.get("/api/v1/jobs", headers=bearer(writer)),
    )
    [hidden] = (await as_reader.json())["items"]
    [shown] = (await as_writer.json())["items"]
    assert hidden["ping_key"] is None and hidden["ping_url"] is None
    assert shown["ping_key"] == key
    one = await (await client.get("/api/v1/jobs/db", headers=bearer(reader))).json()
    assert one["ping_key"] is None and one["ping_url"] is None
    assert (await (await client.get("/api/v1/jobs/db", headers=bearer(writer))).json())[
        "ping_key"
    ] == key

    read_only_paths = [
        "/api/v1/jobs", "/api/v1/jobs/db", "/api/v1/jobs/db/runs", "/api/v1/jobs/db/history",
        "/api/v1/jobs/db/notifications", "/api/v1/jobs/db/artifacts?include_gone=true",
        "/api/v1/status", "/api/v1/scans", "/metrics",
    ]  # fmt: skip
    for path in read_only_paths:
        response = await client.get(path, headers=bearer(reader))
        assert response.status == 200, path
        assert key not in await response.text(), path

    # The dashboard, logged in with each token (a job never pinged shows where to ping).
    quiet = {**JOB, "name": "quiet"}
    created = await client.post("/api/v1/jobs", json=quiet, headers=bearer(writer))
    quiet_key = (await created.json())["ping_key"]
    for page in ("/", "/jobs/db", "/jobs/quiet"):
        response = await client.get(page, headers={"Cookie": f"bm_token={reader}"})
        text = await response.text()
        assert response.status == 200 and key not in text and quiet_key not in text, page
    page = await client.get("/jobs/quiet", headers={"Cookie": f"bm_token={writer}"})
    assert f"/ping/{quiet_key}</code>" in await page.text()

    # The document says so.
    document = await (await client.get("/api/openapi.json")).json()
    job_schema = document["components"]["schemas"]["JobOut"]["properties"]
    for field in ("ping_key", "ping_url"):
        assert {"type": "null"} in job_schema[field]["anyOf"]
        assert "read-only" in job_schema[field]["description"]


async def test_the_ping_url_is_on_public_url_not_on_the_host_header(aiohttp_client, make_app):
    _, client = await serve(
        aiohttp_client, make_app, api_token=BOOTSTRAP, public_url="https://backups.example.com/"
    )
    forged = {**bearer(BOOTSTRAP), "Host": "evil.example"}
    created = await (await client.post("/api/v1/jobs", json=JOB, headers=forged)).json()
    assert created["ping_url"] == f"https://backups.example.com/ping/{created['ping_key']}"
    listed = await (await client.get("/api/v1/jobs", headers=forged)).json()
    assert listed["items"][0]["ping_url"] == created["ping_url"]
    cookie = {"Host": "evil.example", "Cookie": f"bm_token={BOOTSTRAP}"}
    page = await client.get("/jobs/db", headers=cookie)
    assert f"/ping/{created['ping_key']}" in await page.text()
    assert "evil.example" not in await page.text()


# --- forms: bound to the session, from this site only -----------------------------------------


async def log_in_as(client, token):
    page = await client.get("/login")
    response = await client.post(
        "/login", data={"csrf": csrf_in(await page.text()), "token": token, "next": "/"},
        allow_redirects=False,
    )  # fmt: skip
    assert response.status == 303 and "bm_token" in response.cookies


async def paused(client, token):
    return (await (await client.get("/api/v1/jobs/db", headers=bearer(token))).json())["paused"]


async def test_a_sibling_site_cannot_post_the_dashboards_forms(
    aiohttp_client, aiohttp_server, make_app
):
    """A site on another port of the same host shares the cookies: it plants its own `bm_csrf`
    and posts a form with the same value (double submit would let it pause a job)."""
    _, client = await serve(aiohttp_client, make_app, api_token=BOOTSTRAP)
    assert (await client.post("/api/v1/jobs", json=JOB, headers=bearer(BOOTSTRAP))).status == 201
    await log_in_as(client, BOOTSTRAP)
    here = f"http://127.0.0.1:{client.port}"

    planted = "a" * 32

    async def plant(request):
        response = web.Response(text="<form method=post action=...>")
        response.set_cookie("bm_csrf", planted, path="/")
        return response

    sibling_app = web.Application()
    sibling_app.router.add_get("/", plant)
    sibling = await aiohttp_server(sibling_app)
    assert sibling.port != client.port
    await client.session.get(f"http://127.0.0.1:{sibling.port}/")  # the victim visits it
    sent = client.session.cookie_jar.filter_cookies(client.make_url("/"))
    assert sent["bm_csrf"].value == planted  # the browser now sends the planted cookie here
    there = f"http://127.0.0.1:{sibling.port}"

    # What the attacker can get: a token the service made for the planted id (no login).
    async with ClientSession(cookies={"bm_csrf": planted}) as attacker:
        page = await attacker.get(client.make_url("/login"))
        for_planted = csrf_in(await page.text())

    valid = csrf_in(await (await client.get("/jobs/db")).text())
    attacks = [
        ({"Origin": there}, planted),  # double submit from the sibling
        ({}, planted),  # the same without Origin
        ({}, for_planted),  # a token the service made, for another session
        ({"Origin": there}, valid),  # the victim's own token (had it leaked), other origin
        ({"Origin": "null"}, valid),
        ({"Sec-Fetch-Site": "same-site"}, valid),
        ({"Origin": here.replace("http:", "https:")}, valid),
    ]
    for headers, csrf in attacks:
        response = await client.post(
            "/jobs/db/pause", data={"csrf": csrf}, headers=headers, allow_redirects=False
        )
        error = await error_of(response, 403)
        assert "another site" in error["message"] or "expired" in error["message"], headers
        assert await paused(client, BOOTSTRAP) is False, (headers, csrf)

    # The site's own form: same origin, or no Origin at all (an old browser), token decides.
    for headers, action, now_paused in [
        ({"Origin": here, "Sec-Fetch-Site": "same-origin"}, "pause", True),
        ({}, "resume", False),
    ]:
        response = await client.post(
            f"/jobs/db/{action}", data={"csrf": valid}, headers=headers, allow_redirects=False
        )
        assert response.status == 303, await response.text()
        assert await paused(client, BOOTSTRAP) is now_paused
    # Logging out ends the session its forms were bound to: after a new login with the same
    # token, a form of the old login is refused; the new login's forms work.
    assert (await client.post("/logout", data={"csrf": valid}, allow_redirects=False)).status == 303
    await log_in_as(client, BOOTSTRAP)
    response = await client.post("/jobs/db/pause", data={"csrf": valid}, allow_redirects=False)
    await error_of(response, 403)
    assert await paused(client, BOOTSTRAP) is False
    fresh = csrf_in(await (await client.get("/jobs/db")).text())
    response = await client.post("/jobs/db/pause", data={"csrf": fresh}, allow_redirects=False)
    assert response.status == 303, await response.text()
    assert await paused(client, BOOTSTRAP) is True


async def test_a_planted_id_gets_no_form_token_computed_from_public_settings(
    aiohttp_client, database_url, make_app
):
    """Tokens from `tokens create` only (no API_TOKEN, no METRICS_TOKEN): the form secret was
    made of DATABASE_URL alone (public: the default, or Compose's), so whoever planted a
    `bm_csrf` id could compute its form token offline and post the login form (login CSRF)
    from a browser that sends no Origin. The secret now includes what only the servers know."""
    app, client = await serve(aiohttp_client, make_app)
    async with app[sessionmaker_key]() as session:
        attackers = await create_token(session, "attacker", read_only=False)
    planted = "b" * 32
    client.session.cookie_jar.update_cookies({"bm_csrf": planted})
    public = hashlib.sha256(f"backup-monitor forms\0{database_url}".encode()).digest()
    computed = hmac.new(public, f"form\0browser:{planted}".encode(), hashlib.sha256).hexdigest()
    response = await client.post(
        "/login", data={"csrf": computed, "token": attackers, "next": "/"}, allow_redirects=False
    )
    await error_of(response, 403)
    assert "bm_token" not in response.cookies


async def test_forms_from_public_url_are_this_sites(aiohttp_client, make_app):
    public = "https://backups.example.com"
    _, client = await serve(aiohttp_client, make_app, api_token=BOOTSTRAP, public_url=public)
    assert (await client.post("/api/v1/jobs", json=JOB, headers=bearer(BOOTSTRAP))).status == 201
    await log_in_as(client, BOOTSTRAP)
    valid = csrf_in(await (await client.get("/jobs/db")).text())
    for origin, status in [(public + ":8443", 403), ("https://evil.example.com", 403),
                           (public, 303)]:  # fmt: skip
        response = await client.post(
            "/jobs/db/pause", data={"csrf": valid}, headers={"Origin": origin},
            allow_redirects=False,
        )  # fmt: skip
        assert response.status == status, (origin, await response.text())
    assert await paused(client, BOOTSTRAP) is True
