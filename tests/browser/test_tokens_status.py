"""The Tokens page and a public status page in a real headless Chromium, at desktop (1366 px)
and phone (390 px) width; screenshots in tests/artifacts/ for a person to look at."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import expect

from service.cli.demo import build_sandbox, prepare
from service.runtime.app import create_app
from service.runtime.keys import sessionmaker_key
from service.scanner.scanner import BackupScanner
from service.settings import load_settings
from service.store.tokens import create_token

from tests.browser.test_dashboard import ARTIFACTS, log_in, page, shot

__all__ = ["page"]  # the fixture, shared with test_dashboard
WIDTHS = ((1366, 900, "desktop"), (390, 844, "phone"))


@pytest.fixture
async def site(pg_url: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """The demo's jobs, scanned, behind tokens, with the `db` tag's status page public."""
    now = datetime.now(UTC)
    root = tmp_path / "demo"
    build_sandbox(root, now)
    settings = load_settings(
        database_url=pg_url, scanner_interval_minutes=60, public_status_tags="db"
    )
    await prepare(settings, root, now)
    app = create_app(settings, scheduler=False, open_access=False)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with app[sessionmaker_key]() as session:
        await BackupScanner(session, trigger="api").scan_all_jobs()
    async with app[sessionmaker_key]() as session:
        writer = await create_token(session, "browser-rw", read_only=False)
        await create_token(session, "grafana", read_only=True)
    try:
        yield {"base": str(server.make_url("")).rstrip("/"), "writer": writer, "root": root}
    finally:
        await server.close()


async def scrolls_sideways(page) -> bool:
    width = await page.evaluate("document.documentElement.scrollWidth")
    viewport = await page.evaluate("window.innerWidth")
    return bool(width > viewport)


async def test_tokens_page_create_once_and_revoke(site, page):
    base = site["base"]
    await log_in(page, base, site["writer"])
    await page.click("header a.nav:text('Tokens')")
    await expect(page).to_have_url(base + "/tokens")
    rows = page.locator("#tokens tbody tr")
    await expect(rows).to_have_count(2)
    await expect(page.locator('tr[data-token="browser-rw"]')).to_contain_text("(this session)")

    await page.fill("input[name=name]", "nightly-backup-script")
    await page.select_option("select[name=access]", "read-write")
    await page.click("#create button[type=submit]")
    token = await page.locator("#new-token-value").inner_text()
    assert token.startswith("bm_") and len(token) > 40
    await expect(page.locator("#new-token")).to_contain_text("will not be shown again")
    await expect(rows).to_have_count(3)
    for width, height, suffix in WIDTHS:
        await page.set_viewport_size({"width": width, "height": height})
        assert not await scrolls_sideways(page), f"the tokens page scrolls sideways ({suffix})"
        await shot(page, f"tokens-{suffix}")
    # The token works; after a reload it is never shown again.
    answer = await page.request.get(
        base + "/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status == 200
    await page.goto(base + "/tokens")
    await expect(page.locator("#new-token")).to_have_count(0)
    assert token not in await page.content()

    # The job page shows the job's badge (an image served without a token).
    await page.goto(base + "/jobs/db-nightly")
    badge = page.locator("#badge img")
    await expect(badge).to_be_visible()
    assert await badge.evaluate("img => img.complete && img.naturalWidth > 50")
    await expect(page.locator("#badge")).to_contain_text("/db-nightly.json")
    await page.locator("#badge").scroll_into_view_if_needed()
    await page.screenshot(path=str(ARTIFACTS / "job-badge.png"))

    await page.goto(base + "/tokens")
    await page.get_by_role("button", name="Revoke nightly-backup-script").click()
    await expect(page).to_have_url(base + "/tokens")
    await expect(rows).to_have_count(2)
    answer = await page.request.get(
        base + "/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status == 401


async def test_public_status_page_at_both_widths(site, page):
    base = site["base"]
    # No login: the page is public (the dashboard itself is not).
    await page.goto(base + "/status/db")
    items = page.locator("#public-jobs li")
    assert await items.count() >= 3
    names = await items.evaluate_all("items => items.map(i => i.dataset.job)")
    assert "db-nightly" in names and "vm-images" not in names
    statuses = await items.evaluate_all("items => items.map(i => i.dataset.status)")
    order = ["critical", "warning", "unknown", "pending", "ok", "paused"]
    assert statuses == sorted(statuses, key=order.index)
    # The tag's status is the worst of its jobs', a word beside the colour.
    await expect(page.locator("h1 .badge")).to_contain_text(statuses[0])
    text = await page.locator("body").inner_text()
    assert str(site["root"]) not in text and ".sql" not in text
    for width, height, suffix in WIDTHS:
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(base + "/status/db")
        assert not await scrolls_sideways(page), f"the status page scrolls sideways ({suffix})"
        await shot(page, f"status-{suffix}")
    answer = await page.request.get(base + "/status/files")
    assert answer.status == 404
    await page.goto(base + "/")
    await expect(page).to_have_url(base + "/login?next=/")
