"""Tokens managed over HTTP: /api/v1/tokens (create, list, revoke) and the dashboard's /tokens
page, on PostgreSQL and SQLite. Read-write tokens only; a token is shown once; a revocation
applies to the very next request, the revoking token's own included."""

from __future__ import annotations

import re

from sqlalchemy import select

from service.db.models import ApiToken
from service.runtime.keys import sessionmaker_key
from service.store.tokens import TOKEN_PREFIX, create_token, hash_token

from tests.integration.test_api_auth import bearer, csrf_in, error_of


async def started(aiohttp_client, make_app, **settings):
    """The app with a read-write and a read-only token made by the CLI's store."""
    app = make_app(**settings)
    client = await aiohttp_client(app)
    async with app[sessionmaker_key]() as session:
        writer = await create_token(session, "admin", read_only=False)
        reader = await create_token(session, "grafana", read_only=True)
    return app, client, writer, reader


async def test_create_list_and_revoke_over_the_api(aiohttp_client, make_app):
    app, client, writer, reader = await started(aiohttp_client, make_app)

    response = await client.post(
        "/api/v1/tokens", json={"name": "ci", "access": "read-write"}, headers=bearer(writer)
    )
    assert response.status == 201, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    created = await response.json()
    token = created["token"]
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    assert created["name"] == "ci" and created["access"] == "read-write"
    assert response.headers["Location"] == f"/api/v1/tokens/{created['id']}"
    # The new token works at once, with the access it was given.
    made = await client.post("/api/v1/jobs", json={"name": "db", "schedule": {"every": 60}},
                             headers=bearer(token))  # fmt: skip
    assert made.status == 201

    # Read-only is the default access.
    response = await client.post("/api/v1/tokens", json={"name": "viewer"}, headers=bearer(writer))
    viewer = await response.json()
    assert response.status == 201 and viewer["access"] == "read-only"
    await error_of(await client.delete("/api/v1/jobs/db", headers=bearer(viewer["token"])), 403)

    # The list: names, access, creation; never a token nor its hash.
    response = await client.get("/api/v1/tokens", headers=bearer(writer))
    assert response.status == 200
    listed = await response.json()
    assert [item["name"] for item in listed["items"]] == ["admin", "ci", "grafana", "viewer"]
    assert {item["access"] for item in listed["items"] if item["name"] == "grafana"} == {
        "read-only"
    }
    assert all(set(item) == {"id", "name", "access", "created_at"} for item in listed["items"])
    text = await response.text()
    async with app[sessionmaker_key]() as session:
        hashes = list(await session.scalars(select(ApiToken.token_hash)))
    assert len(hashes) == 4
    for secret in [writer, reader, token, viewer["token"], *hashes]:
        assert secret not in text
    assert "bm_" not in text

    # A name is unique; a bad one is a 422 naming the field.
    error = await error_of(
        await client.post("/api/v1/tokens", json={"name": "ci"}, headers=bearer(writer)), 409
    )
    assert "already exists" in error["message"]
    for body in ({"name": "no spaces"}, {"name": ""}, {"name": "x", "access": "admin"},
                 {"name": "x", "extra": 1}, {}):  # fmt: skip
        response = await client.post("/api/v1/tokens", json=body, headers=bearer(writer))
        error = await error_of(response, 422)
        assert error["details"], body

    # Revoked: refused at the very next request.
    ci_id = created["id"]
    response = await client.delete(f"/api/v1/tokens/{ci_id}", headers=bearer(writer))
    assert response.status == 204
    error = await error_of(await client.get("/api/v1/jobs", headers=bearer(token)), 401)
    assert "revoked" in error["message"]
    await error_of(await client.delete(f"/api/v1/tokens/{ci_id}", headers=bearer(writer)), 404)
    for missing_id in ("999999", "9" * 19, "2147483648"):
        response = await client.delete(f"/api/v1/tokens/{missing_id}", headers=bearer(writer))
        await error_of(response, 404)


async def test_a_read_only_token_cannot_manage_tokens(aiohttp_client, make_app):
    app, client, writer, reader = await started(aiohttp_client, make_app)
    async with app[sessionmaker_key]() as session:
        admin_id = await session.scalar(select(ApiToken.id).where(ApiToken.name == "admin"))
    for method, path, body in [
        ("GET", "/api/v1/tokens", None),
        ("POST", "/api/v1/tokens", {"name": "sneaky", "access": "read-write"}),
        ("DELETE", f"/api/v1/tokens/{admin_id}", None),
    ]:
        response = await client.request(method, path, json=body, headers=bearer(reader))
        error = await error_of(response, 403)
        assert error["code"] == "forbidden", (method, path)
        # Without a token at all: 401.
        await error_of(await client.request(method, path, json=body), 401)
    async with app[sessionmaker_key]() as session:
        names = set(await session.scalars(select(ApiToken.name)))
    assert names == {"admin", "grafana"}  # nothing made, nothing revoked
    assert (await client.get("/api/v1/jobs", headers=bearer(writer))).status == 200


async def test_a_token_may_revoke_itself_and_is_refused_at_once(aiohttp_client, make_app):
    _, client, writer, _ = await started(aiohttp_client, make_app)
    listed = await (await client.get("/api/v1/tokens", headers=bearer(writer))).json()
    [own] = [item for item in listed["items"] if item["name"] == "admin"]
    response = await client.delete(f"/api/v1/tokens/{own['id']}", headers=bearer(writer))
    assert response.status == 204
    error = await error_of(await client.get("/api/v1/tokens", headers=bearer(writer)), 401)
    assert "revoked" in error["message"]


async def test_the_bootstrap_token_manages_tokens_and_is_not_listed(aiohttp_client, make_app):
    bootstrap = "bootstrap-token-from-the-environment"
    client = await aiohttp_client(make_app(api_token=bootstrap))
    response = await client.post(
        "/api/v1/tokens", json={"name": "ci", "access": "read-write"}, headers=bearer(bootstrap)
    )
    assert response.status == 201
    listed = await (await client.get("/api/v1/tokens", headers=bearer(bootstrap))).json()
    assert [item["name"] for item in listed["items"]] == ["ci"]


# --- the dashboard's page ---------------------------------------------------------------------


async def log_in(client, token):
    csrf = csrf_in(await (await client.get("/login")).text())
    response = await client.post(
        "/login", data={"csrf": csrf, "token": token, "next": "/tokens"}, allow_redirects=False
    )
    assert response.status == 303


async def test_the_tokens_page_creates_shows_once_lists_and_revokes(aiohttp_client, make_app):
    app, client, writer, _ = await started(aiohttp_client, make_app)
    await log_in(client, writer)
    page = await client.get("/tokens")
    assert page.status == 200
    text = await page.text()
    assert "grafana" in text and "(this session)" in text

    response = await client.post(
        "/tokens", data={"csrf": csrf_in(text), "name": "backup-script", "access": "read-write"}
    )
    assert response.status == 200
    shown = await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    token = re.search(r'id="new-token-value">(bm_[^<]+)<', shown).group(1)
    async with app[sessionmaker_key]() as session:
        row = await session.scalar(select(ApiToken).where(ApiToken.name == "backup-script"))
    assert row.token_hash == hash_token(token) and row.read_only is False
    # Shown once: the next look at the page has the name, never the token.
    again = await (await client.get("/tokens")).text()
    assert "backup-script" in again and token not in again and row.token_hash not in again

    # A taken name or a bad one: the page again, with what was wrong.
    response = await client.post(
        "/tokens", data={"csrf": csrf_in(again), "name": "grafana", "access": "read-only"}
    )
    assert response.status == 409 and "already exists" in await response.text()
    response = await client.post(
        "/tokens", data={"csrf": csrf_in(again), "name": "bad name", "access": "read-only"}
    )
    assert response.status == 422

    # Revoke: gone from the list, and the token is refused at once.
    response = await client.post(
        f"/tokens/{row.id}/revoke", data={"csrf": csrf_in(again)}, allow_redirects=False
    )
    assert response.status == 303 and response.headers["Location"] == "/tokens"
    assert (await client.get("/api/v1/jobs", headers=bearer(token))).status == 401
    after = await (await client.get("/tokens")).text()
    assert 'data-token="backup-script"' not in after

    # Revoking the session's own token logs it out at once.
    async with app[sessionmaker_key]() as session:
        own_id = await session.scalar(select(ApiToken.id).where(ApiToken.name == "admin"))
    response = await client.post(
        f"/tokens/{own_id}/revoke", data={"csrf": csrf_in(after)}, allow_redirects=False
    )
    assert response.status == 303
    response = await client.get("/tokens", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/login")


async def test_the_tokens_page_is_for_read_write_sessions_and_checks_forms(
    aiohttp_client, make_app
):
    app, client, writer, reader = await started(aiohttp_client, make_app)
    # Nobody logged in: the login form.
    response = await client.get("/tokens", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/login?next=/tokens"

    await log_in(client, reader)
    assert (await client.get("/tokens")).status == 403
    home = await (await client.get("/")).text()
    assert 'href="/tokens"' not in home  # no link to what a read-only session may not use
    response = await client.post("/tokens", data={"csrf": csrf_in(home), "name": "x"})
    assert response.status == 403

    await log_in(client, writer)
    home = await (await client.get("/")).text()
    assert 'href="/tokens"' in home
    csrf = csrf_in(home)
    # A form without the session's CSRF token, or from another site's page: 403, nothing made.
    assert (await client.post("/tokens", data={"csrf": "forged", "name": "x1"})).status == 403
    response = await client.post(
        "/tokens", data={"csrf": csrf, "name": "x2"}, headers={"Origin": "https://evil.example"}
    )
    assert response.status == 403
    response = await client.post(
        "/tokens", data={"csrf": csrf, "name": "x3"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert response.status == 403
    async with app[sessionmaker_key]() as session:
        admin_id = await session.scalar(select(ApiToken.id).where(ApiToken.name == "admin"))
        names = set(await session.scalars(select(ApiToken.name)))
    assert names == {"admin", "grafana"}
    response = await client.post(
        f"/tokens/{admin_id}/revoke", data={"csrf": "forged"}, allow_redirects=False
    )
    assert response.status == 403
    assert (await client.get("/api/v1/jobs", headers=bearer(writer))).status == 200


async def test_the_first_token_made_on_the_page_closes_open_access(aiohttp_client, make_app):
    client = await aiohttp_client(make_app())
    page = await client.get("/tokens")  # open access (loopback, no token): read-write
    assert page.status == 200
    response = await client.post(
        "/tokens", data={"csrf": csrf_in(await page.text()), "name": "first",
                         "access": "read-write"},
    )  # fmt: skip
    text = await response.text()
    assert response.status == 200 and "This is the first token" in text
    assert (await client.get("/api/v1/jobs")).status == 401
