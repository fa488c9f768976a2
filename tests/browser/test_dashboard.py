"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright).

The demo sandbox gives a job in every status; the database is PostgreSQL. Screenshots of both
pages (desktop and phone width) land in tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select, update

from service.cli.demo import build_sandbox, prepare
from service.config.jobsfile import apply_jobs, parse_declarations
from service.core.jobspec import parse_job
from service.db.models import ArtifactVerification, Job
from service.runtime.app import create_app
from service.runtime.keys import sessionmaker_key
from service.runtime.verifier import Verifier, VerifyOptions
from service.scanner.scanner import BackupScanner
from service.settings import load_settings
from service.store.jobs import new_job, status_counts
from service.store.tokens import create_token

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

if not CHROMIUM.exists():
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing and CI=true: `make test` installs it", pytrace=False)
    pytest.skip(
        f"{CHROMIUM} is missing (Debian's chromium package; `make test` installs it when it can)",
        allow_module_level=True,
    )

from playwright.async_api import Page, async_playwright, expect  # noqa: E402


@pytest.fixture
async def site(pg_url: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """The demo's jobs, scanned, behind tokens; a real server on a real port."""
    now = datetime.now(UTC)
    root = tmp_path / "demo"
    build_sandbox(root, now)
    settings = load_settings(database_url=pg_url, scanner_interval_minutes=60)
    await prepare(settings, root, now)
    app = create_app(settings, scheduler=False, open_access=False)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    sessionmaker = app[sessionmaker_key]
    async with sessionmaker() as session:
        await BackupScanner(session, trigger="api").scan_all_jobs()
    async with sessionmaker() as session:
        writer = await create_token(session, "browser-rw", read_only=False)
        reader = await create_token(session, "browser-ro", read_only=True)
        counts = await status_counts(session)
    try:
        yield {
            "base": str(server.make_url("")).rstrip("/"),
            "writer": writer,
            "reader": reader,
            "counts": counts,
            "sessionmaker": sessionmaker,
        }
    finally:
        await server.close()


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            yield await context.new_page()
        finally:
            await browser.close()


async def log_in(page: Page, base: str, token: str) -> None:
    await page.goto(base + "/")
    await expect(page).to_have_url(base + "/login?next=/")
    await page.fill("input[name=token]", token)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(base + "/")


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def test_dashboard_counts_filters_job_page_and_login(site, page):
    base, counts = site["base"], site["counts"]
    assert all(counts[name] for name in counts), f"the demo covers every status: {counts}"

    await page.goto(base + "/login")
    await page.fill("input[name=token]", "bm_not-a-token")
    await page.click("button[type=submit]")
    await expect(page.get_by_role("alert")).to_contain_text("not valid")

    await log_in(page, base, site["reader"])
    for name, count in counts.items():
        await expect(page.locator(f'.counts a[data-status="{name}"] strong')).to_have_text(
            str(count)
        )
    rows = page.locator("#jobs tbody tr")
    await expect(rows).to_have_count(sum(counts.values()))
    # Worst first, and the status is a word and a symbol, not only a colour.
    statuses = await rows.evaluate_all("rows => rows.map(r => r.dataset.status)")
    order = ["critical", "warning", "unknown", "pending", "ok", "paused"]
    assert statuses == sorted(statuses, key=order.index)
    first_badge = await rows.first.locator(".badge").inner_text()
    assert first_badge == "✖ critical"
    await shot(page, "dashboard")

    await page.click('.counts a[data-status="warning"]')
    await expect(rows).to_have_count(counts["warning"])
    assert set(await rows.evaluate_all("rows => rows.map(r => r.dataset.status)")) == {"warning"}
    await page.fill("input[name=q]", "shrink")
    await page.select_option("select[name=status]", "")
    await page.click("form.filters button")
    await expect(rows).to_have_count(1)

    await page.click("#jobs a:text('crm-shrinking')")
    await expect(page).to_have_url(base + "/jobs/crm-shrinking")
    await expect(page.locator("#declaration")).to_contain_text("Expects a new")
    await expect(page.locator("#reasons")).to_contain_text("smaller")
    chart = page.locator("#chart svg.chart")
    await expect(chart).to_be_visible()
    assert await chart.locator("circle.dot").count() >= 3
    assert await chart.locator("g.flag").count() >= 1  # the shrunk file is marked
    await expect(chart.locator("text.tick").first).to_be_visible()
    await expect(page.locator("#runs")).to_contain_text("No ping received")
    # A read-only token may look, not act.
    await expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    await shot(page, "job")

    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(base + "/")
    await expect(rows).to_have_count(sum(counts.values()))
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the dashboard scrolls sideways on a phone ({width} px)"
    await shot(page, "dashboard-phone")


async def test_pause_with_the_button_and_refresh_without_reload(site, page):
    base = site["base"]
    await log_in(page, base, site["writer"])
    await page.goto(base + "/jobs/db-nightly")
    await page.get_by_role("button", name="Pause").click()
    await expect(page).to_have_url(base + "/jobs/db-nightly")
    await expect(page.locator("h1 .badge")).to_have_text("‖ paused")
    await expect(page.get_by_role("button", name="Resume")).to_be_visible()
    # A backup script reports a run: the job page lists it with its duration.
    key = await page.evaluate("document.querySelector('#runs code').textContent")
    assert key.startswith("/ping/")
    assert (await page.request.post(base + key + "/start")).status == 200
    assert (await page.request.post(base + key, data="dumped")).status == 200
    await page.reload()
    run = page.locator('#runs tr[data-outcome="success"]')
    await expect(run).to_contain_text("dumped")
    # Paired with its start: the run has a duration (not "—").
    await expect(run.locator("td.num")).to_have_text(re.compile(r"^\d+ s$"))
    async with site["sessionmaker"]() as session:
        assert await session.scalar(select(Job.paused).where(Job.name == "db-nightly")) is True

    # A status changes behind the page's back: the page updates itself, without a reload.
    await page.goto(base + "/")
    await page.evaluate("window.stillThisPage = true")
    row = page.locator('#jobs tr[data-job="vm-images"]')
    await expect(row).to_have_attribute("data-status", "ok")
    async with site["sessionmaker"]() as session:
        await session.execute(
            update(Job)
            .where(Job.name == "vm-images")
            .values(status="critical", status_changed_at=datetime.now(UTC))
        )
        await session.commit()
    await expect(row).to_have_attribute("data-status", "critical", timeout=15_000)
    assert await page.evaluate("window.stillThisPage === true")


async def test_forms_need_the_csrf_token(site, page):
    base = site["base"]
    await log_in(page, base, site["writer"])
    answer = await page.request.post(
        base + "/jobs/db-nightly/pause", form={"csrf": "forged"}, max_redirects=0
    )
    assert answer.status == 403
    async with site["sessionmaker"]() as session:
        assert await session.scalar(select(Job.paused).where(Job.name == "db-nightly")) is False


async def test_silences_page_and_a_silenced_job(site, page):
    """Silences made through the API show on their page and on the silenced job's page."""
    base = site["base"]
    later = datetime.now(UTC).hour + 6  # a nightly window that is not open now
    recurring = {
        "name": "nightly-patching", "tags": ["db"], "cron": f"0 {later % 24} * * *",
        "duration": "1h", "comment": "nightly OS patching (ops)",
    }  # fmt: skip
    declared = parse_declarations({"jobs": [], "silences": [recurring]}, "test")
    async with site["sessionmaker"]() as session:
        await apply_jobs(session, [], silences=declared.silences)

    headers = {"Authorization": f"Bearer {site['writer']}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for body in (
            {"jobs": ["app-late"], "duration": "3h", "comment": "app server moved to rack 4"},
            {"tags": ["media"], "jobs": ["vm-images"], "duration": "1h",
             "comment": "NAS firmware update"},
        ):  # fmt: skip
            async with http.post(base + "/api/v1/silences", json=body) as answer:
                assert answer.status == 201, await answer.text()
        ended = {"jobs": ["crm-shrinking"], "duration": "1h", "comment": "tried, not needed"}
        async with http.post(base + "/api/v1/silences", json=ended) as answer:
            made = await answer.json()
        async with http.delete(f"{base}/api/v1/silences/{made['id']}") as answer:
            assert answer.status == 200

    await log_in(page, base, site["reader"])
    # These two, and the demo's own maintenance window (relay-migration, open now).
    await expect(page.locator("#silences-now")).to_contain_text("3 silences active now")
    await expect(page.locator('tr[data-job="app-late"] .silenced')).to_contain_text(
        "silenced until"
    )
    await page.click("header a.nav")
    await expect(page).to_have_url(base + "/silences")
    await expect(page.locator("#active tbody tr")).to_have_count(3)
    await expect(page.locator("#active")).to_contain_text("relay-migration (jobs file)")
    await expect(page.locator("#upcoming tbody tr")).to_have_count(1)
    await expect(page.locator("#expired tbody tr")).to_have_count(1)
    await expect(page.locator("#upcoming")).to_contain_text("nightly-patching (jobs file)")
    for width, height, suffix in ((1366, 900, "desktop"), (390, 844, "phone")):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(base + "/silences")
        await shot(page, f"silences-{suffix}")
        await page.goto(base + "/jobs/app-late")
        line = page.locator(".silenced-line")
        await expect(line).to_contain_text("by browser-rw: app server moved to rack 4")
        await shot(page, f"job-silenced-{suffix}")


# Words cut in two by a line break: a range over each word of the element's text spans more than
# one line box.
SPLIT_WORDS = """elements => elements.flatMap(element => {
  const split = [];
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const match of node.textContent.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
      if (tops.size > 1) split.push(match[0]);
    }
  }
  return split;
})"""


async def test_layout_at_desktop_and_phone_width(site, page):
    """No header or tag cut mid-word at 1366 px; on a phone, jobs are cards whose file names
    fit in two lines, and neither the dashboard nor the login page scrolls sideways."""
    base = site["base"]
    for width, height, suffix in ((1366, 900, "desktop"), (390, 844, "phone")):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(base + "/login")
        scroll = await page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= width, f"the login page scrolls sideways at {width} px ({scroll} px)"
        await shot(page, f"login-{suffix}")
    await page.set_viewport_size({"width": 1366, "height": 900})
    await log_in(page, base, site["reader"])
    split = await page.locator("#jobs th, #jobs .tag, .badge").evaluate_all(SPLIT_WORDS)
    assert split == [], f"cut mid-word at 1366 px: {split}"
    # A 64-character snapshot id or a long key never widens the table beyond the window.
    scroll = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= 1366, f"the dashboard scrolls sideways at 1366 px ({scroll} px)"
    if shutil.which("restic"):  # the demo has a restic job: its snapshot by its short id
        newest = page.locator("tr", has=page.locator("a", has_text="laptop-restic")).locator(
            "td.newest"
        )
        assert re.fullmatch(r"[0-9a-f]{8} · .*", (await newest.inner_text()).strip())
    await shot(page, "layout-desktop")

    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(base + "/")
    rows = page.locator("#jobs tbody tr")
    displays = set(await rows.evaluate_all("rows => rows.map(r => getComputedStyle(r).display)"))
    assert displays == {"grid"}, f"jobs are not cards on a phone: {displays}"
    lines = await page.locator("#jobs td.newest").evaluate_all(
        "cells => cells.map(c => [c.textContent.trim(), Math.round(c.getBoundingClientRect()"
        ".height / parseFloat(getComputedStyle(c).lineHeight))])"
    )
    assert all(count <= 2 for _, count in lines), f"newest files over more than 2 lines: {lines}"
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await shot(page, "layout-phone")


async def test_chart_text_ticks_crosses_and_thresholds(site, page):
    """The chart's text is readable at both widths, its size ticks are round, only size problems
    get a cross (not a late job's newest file), and min_size / max_size are drawn."""
    base = site["base"]
    await log_in(page, base, site["reader"])
    for width, height, suffix in ((1366, 900, "desktop"), (390, 844, "phone")):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(base + "/jobs/uploads-truncated")
        chart = page.locator("#chart svg.chart")
        # Every label shown is readable (a phone hides every other time label: "minor").
        heights = await chart.locator("text.tick").evaluate_all(
            "texts => texts.filter(t => getComputedStyle(t).display !== 'none')"
            ".map(t => t.getBoundingClientRect().height)"
        )
        assert heights and all(10 <= h <= 20 for h in heights), f"tick text at {width}: {heights}"
        await no_time_labels_overlap(page, width)
        labels = await chart.locator("text.size").evaluate_all("ts => ts.map(t => t.textContent)")
        values = [float(label.split()[0]) for label in labels]
        assert values[0] == 0 and len(values) >= 3, labels
        step = values[1] - values[0]
        assert all(abs(b - a - step) < 1e-9 for a, b in itertools.pairwise(values)), labels
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert round(mantissa, 6) in (1, 2, 5), f"ticks not round: {labels}"
        await expect(chart.locator("g.flag")).to_have_count(1)  # the truncated upload
        await expect(chart.locator("g.threshold")).to_contain_text("min 1 MiB")
        await shot(page, f"chart-{suffix}")
        await page.goto(base + "/jobs/reports-oversized")
        await expect(page.locator("#chart g.threshold")).to_contain_text("max 5 MiB")
        await expect(page.locator("#chart g.flag")).to_have_count(1)
        await page.goto(base + "/jobs/app-late")
        await expect(page.locator("#reasons")).to_contain_text("was due by")
        await expect(page.locator("#chart circle.dot").first).to_be_visible()
        await expect(page.locator("#chart g.flag")).to_have_count(0)  # late, no size problem
        await shot(page, f"chart-late-{suffix}")
        if shutil.which("restic"):  # three days of snapshots: long "day hour" labels
            await page.goto(base + "/jobs/laptop-restic")
            await no_time_labels_overlap(page, width)
            await shot(page, f"chart-restic-{suffix}")


async def no_time_labels_overlap(page: Page, width: int) -> None:
    """The chart's time labels shown (a phone hides every other one) never overlap, nor touch:
    a space of 4 px at least between two ("28 02:1828 14:18" read as one)."""
    spans = await page.locator("#chart svg.chart text.tick:not(.size)").evaluate_all(
        "texts => texts.filter(t => getComputedStyle(t).display !== 'none'"
        " && !t.closest('g.threshold'))"
        ".map(t => { const r = t.getBoundingClientRect(); return [r.left, r.right]; })"
    )
    spans.sort()
    assert len(spans) >= 2, spans
    assert all(a[1] + 4 <= b[0] for a, b in itertools.pairwise(spans)), f"at {width}: {spans}"


async def test_tab_title_and_icon_follow_the_status(site, page):
    """/favicon.ico answers; each page has a status icon; a live refresh updates the tab's
    title and icon, so a background tab never shows a stale status."""
    base = site["base"]
    for path in ("/favicon.ico", "/favicon.svg?status=critical", "/favicon.svg?status=none"):
        answer = await page.request.get(base + path)
        assert answer.status == 200, path
    assert (await page.request.get(base + "/favicon.ico")).headers["content-type"] == "image/x-icon"
    assert (await page.request.get(base + "/favicon.svg?status=nope")).status == 422
    await page.goto(base + "/login")
    icon = page.locator("link[rel=icon]")
    await expect(icon).to_have_attribute("href", "/favicon.svg?status=none")
    await log_in(page, base, site["reader"])
    await expect(icon).to_have_attribute("href", "/favicon.svg?status=critical")
    for width, height, suffix in ((1366, 900, "desktop"), (390, 844, "phone")):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(base + "/jobs/vm-images")
        await expect(page).to_have_title("vm-images: ok · backup-monitor")
        await expect(icon).to_have_attribute("href", "/favicon.svg?status=ok")
        async with site["sessionmaker"]() as session:
            await session.execute(
                update(Job)
                .where(Job.name == "vm-images")
                .values(status="paused", paused=True, status_changed_at=datetime.now(UTC))
            )
            await session.commit()
        await expect(page).to_have_title("vm-images: paused · backup-monitor", timeout=15_000)
        await expect(icon).to_have_attribute("href", "/favicon.svg?status=paused")
        await shot(page, f"title-refreshed-{suffix}")
        async with site["sessionmaker"]() as session:
            await session.execute(
                update(Job)
                .where(Job.name == "vm-images")
                .values(status="ok", paused=False, status_changed_at=datetime.now(UTC))
            )
            await session.commit()
    # The icons themselves, side by side, for a person to look at.
    tags = "".join(
        f'<figure style="display:inline-block"><img src="{base}/favicon.svg?status={name}" '
        f'width="64"><figcaption>{name}</figcaption></figure>'
        for name in ("ok", "warning", "critical", "unknown", "pending", "paused", "none")
    )
    await page.set_content(f"<body>{tags}</body>")
    await page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth)")
    await shot(page, "favicons")


async def test_words_deadlines_channels_zones_and_sizes(site, page):
    """An overdue job says so; a file being written is not shown as the deadline; with no
    CHANNELS_FILE a notice says no channel is configured; file times carry their zone; a
    declared size reads as written."""
    base = site["base"]
    await log_in(page, base, site["reader"])
    for width, height, suffix in ((1366, 900, "desktop"), (390, 844, "phone")):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(base + "/")
        late = page.locator('#jobs tr[data-job="app-late"] td.deadline')
        await expect(late).to_have_text(re.compile(r"^overdue by \d+ h$"))
        writing = page.locator('#jobs tr[data-job="erp-dump-writing"] td.deadline')
        await expect(writing).to_have_text(
            re.compile(r"^re-checked in \d+ s: newest file being written$")
        )
        await shot(page, f"words-dashboard-{suffix}")
        await page.goto(base + "/jobs/app-late")
        await expect(page.locator("#reasons")).to_contain_text("next deadline: overdue by")
        await expect(page.locator("#declaration")).to_contain_text("at least 1 MiB.")
        await expect(page.locator("#notices")).not_to_contain_text("being routed")
        await expect(page.locator("#notices tbody tr").first).to_contain_text(
            "no notification channel is configured (set CHANNELS_FILE)"
        )
        times = await page.locator("#files tbody td:nth-child(3)").all_inner_texts()
        assert times and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", t) for t in times)
        await shot(page, f"words-job-{suffix}")


async def test_a_heartbeat_job_page(site, page):
    """A job without a source: its last ping, its runs with durations and a duration chart, its
    ping URL even once runs exist, logs with their line breaks; no Scan button, no Files."""
    base = site["base"]
    declared = parse_declarations(
        {"jobs": [{"name": "cron-sync", "schedule": {"every": "1h"}, "grace": "10m"}]}, "test"
    )
    async with site["sessionmaker"]() as session:
        await apply_jobs(session, declared.jobs)
    await log_in(page, base, site["writer"])
    await page.goto(base + "/jobs/cron-sync")
    key = await page.locator("#ping-url code").first.text_content()
    assert key and key.startswith("/ping/")
    for body in ("first run", "rsync: 12 files\nsent 3.1 MB\ndone"):
        assert (await page.request.post(base + key + "/start")).status == 200
        assert (await page.request.post(base + key, data=body)).status == 200
    assert (await page.request.post(base + key + "/start")).status == 200
    assert (await page.request.post(base + key + "/fail", data="disk full")).status == 200
    for width, height, suffix in ((1366, 900, "desktop"), (390, 844, "phone")):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(base + "/jobs/cron-sync")
        await expect(page.locator("#last-ping")).to_contain_text("Last ping: just now")
        await expect(page.locator("#ping-url code").first).to_have_text(key)
        await expect(page.locator('#runs tr[data-outcome="success"]')).to_have_count(2)
        await expect(page.locator('#runs tr[data-outcome="fail"] td.num')).to_have_text(
            re.compile(r"^\d+ s$")
        )
        log = page.locator("#runs pre.run-log", has_text="rsync")
        assert await log.inner_text() == "rsync: 12 files\nsent 3.1 MB\ndone"
        box = await log.bounding_box()
        assert box and box["height"] > 40, "the log's three lines are shown as lines"
        chart = page.locator("#chart svg.chart")
        await expect(chart.locator("circle.dot")).to_have_count(2)
        await expect(chart.locator("g.flag")).to_have_count(1)  # the failed run
        await expect(page.locator("#chart h2")).to_have_text("Run durations")
        await expect(page.get_by_role("button", name="Scan now")).to_have_count(0)
        await expect(page.get_by_role("button", name="Pause")).to_be_visible()
        await expect(page.locator("#files")).to_have_count(0)
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
        await shot(page, f"heartbeat-{suffix}")


LUMINANCE = """element => {
  const [r, g, b] = getComputedStyle(element)[arguments_property].match(/\\d+/g).map(Number);
  return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
}"""


async def luminance(page: Page, selector: str, prop: str) -> float:
    script = LUMINANCE.replace("arguments_property", repr(prop))
    return float(await page.locator(selector).first.evaluate(script))


async def test_dark_mode_focus_and_status_words(site, page):
    """The pages follow prefers-color-scheme; keyboard focus is visible; statuses keep their
    symbol and word beside their colour."""
    base = site["base"]
    await page.emulate_media(color_scheme="dark")
    await log_in(page, base, site["reader"])
    for width, height, suffix in ((1366, 900, "desktop"), (390, 844, "phone")):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(base + "/")
        assert await luminance(page, "body", "backgroundColor") < 0.2
        assert await luminance(page, "body", "color") > 0.8
        assert await luminance(page, "#jobs tbody tr", "backgroundColor") < 0.2
        badges = await page.locator("#jobs .badge").all_inner_texts()
        assert all(re.fullmatch(r"[✔▲✖?…‖] [a-z]+", badge) for badge in badges), badges
        await shot(page, f"dark-dashboard-{suffix}")
        await page.goto(base + "/jobs/crm-shrinking")
        assert await luminance(page, "section.card", "backgroundColor") < 0.2
        await shot(page, f"dark-job-{suffix}")
    await page.emulate_media(color_scheme="light")
    await page.goto(base + "/")
    assert await luminance(page, "body", "backgroundColor") > 0.8
    # Tab to the first count link: its focus ring is drawn.
    for _ in range(20):
        await page.keyboard.press("Tab")
        focused = await page.evaluate("document.activeElement.closest('.counts') !== null")
        if focused:
            break
    assert focused, "Tab never reached the status counts"
    style = await page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, parseFloat(s.outlineWidth)]; })()"
    )
    assert style[0] != "none" and style[1] >= 2, style
    await shot(page, "focus-phone")


async def test_the_chart_marks_backups_that_never_came(site, page):
    """app-late's newest file is 3 days old: the two nightly slots since (their deadlines
    passed) are marked on the time axis; a healthy job has none."""
    base = site["base"]
    await log_in(page, base, site["reader"])
    for width, height, suffix in ((1366, 900, "desktop"), (390, 844, "phone")):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(base + "/jobs/app-late")
        missing = page.locator("#chart g.missing")
        await expect(missing).to_have_count(2)
        await expect(missing.first.locator("title")).to_contain_text("never came")
        await shot(page, f"chart-missing-{suffix}")
        await page.goto(base + "/jobs/db-nightly")
        await expect(page.locator("#chart circle.dot").first).to_be_visible()
        await expect(page.locator("#chart g.missing")).to_have_count(0)


async def test_retention_calendar_strip(site, page):
    """The retention slots as a strip: a word and a symbol in each cell (not colour alone), the
    missing ones named; no sideways scrolling on a phone."""
    base = site["base"]
    await log_in(page, base, site["reader"])
    for width, height, suffix in ((1366, 900, "desktop"), (390, 844, "phone")):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(base + "/jobs/ledger-retention")
        await expect(page.locator("#reasons")).to_contain_text("no backup kept for")
        strip = page.locator("#retention")
        await expect(strip.locator("h3")).to_have_count(2)  # daily, weekly
        daily = strip.locator("ol.strip").first
        await expect(daily.locator("li")).to_have_count(7)
        missing = daily.locator("li.slot-missing")
        await expect(missing).to_have_count(2)
        await expect(missing.first).to_contain_text("✖ missing")
        await expect(daily.locator("li.slot-kept").first).to_contain_text("✔ kept")
        # The slot's state is in its text: readable without colour.
        texts = await daily.locator("li").all_inner_texts()
        assert all(re.search(r"\d{4}-\d{2}-\d{2}\s+\S+ (kept|missing|not expected yet)", t)
                   for t in texts), texts  # fmt: skip
        weekly = await strip.locator("ol.strip").nth(1).locator("li").all_inner_texts()
        assert len(weekly) == 4 and all(re.match(r"\d{4}-W\d{2}", t) for t in weekly), weekly
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
        await strip.scroll_into_view_if_needed()
        ARTIFACTS.mkdir(exist_ok=True)
        await strip.screenshot(path=str(ARTIFACTS / f"retention-strip-{suffix}.png"))
        await shot(page, f"retention-job-{suffix}")


async def test_the_list_in_pages_keeps_its_filters_at_both_widths(site, page):
    """250 more jobs: the list comes in pages of 100, its page links keep the filter and fit
    on a phone, and the counts stay those of every job."""
    now = datetime.now(UTC)
    async with site["sessionmaker"]() as session:
        for index in range(250):
            declared = {
                "name": f"fleet-{index:03d}",
                "tags": ["fleet"],
                "schedule": {"every": "1d"},
            }
            session.add(new_job(parse_job(declared), now))
        await session.commit()
        counts = await status_counts(session)
    base = site["base"]
    await log_in(page, base, site["reader"])
    for width, height, suffix in ((1366, 900, "desktop"), (390, 844, "phone")):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(base + "/?tag=fleet&page=2")
        await expect(page.locator("#jobs tbody tr")).to_have_count(100)
        await expect(page.locator("#shown")).to_contain_text("Jobs 101–200 of 250 matching")
        current = page.locator('#pages-top a[aria-current="page"]')
        await expect(current).to_have_text("2")
        await expect(page.locator('.counts a[data-status="all"] strong')).to_have_text(
            str(sum(counts.values()))
        )
        scroll = await page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= width, f"the paged list scrolls sideways at {width} px ({scroll} px)"
        await shot(page, f"pages-{suffix}")
        await page.locator("#pages-bottom a[rel=next]").click()
        await expect(page).to_have_url(base + "/?tag=fleet&page=3")
        await expect(page.locator("#jobs tbody tr")).to_have_count(50)
        await expect(page.locator("#pages-top a[rel=next]")).to_have_count(0)


async def test_verified_files_at_desktop_and_phone_width(site, page):
    """The per-file verification marks with their findings (a checksum mismatch gives two
    64-digit digests): no sideways scrolling, and on a phone each file is a card whose name is
    as wide as the page, not a column a few letters wide beside the finding."""
    sessionmaker = site["sessionmaker"]
    verifier = Verifier(sessionmaker, VerifyOptions(bytes_per_second=10**9, poll_seconds=0.05))
    await verifier.start()
    try:
        async with asyncio.timeout(60):
            while True:
                async with sessionmaker() as session:
                    job_id = await session.scalar(select(Job.id).where(Job.name == "docs-offsite"))
                    outcomes = set(
                        await session.scalars(
                            select(ArtifactVerification.outcome).where(
                                ArtifactVerification.job_id == job_id
                            )
                        )
                    )
                if "checksum_mismatch" in outcomes and None not in outcomes:
                    break
                await asyncio.sleep(0.1)
    finally:
        await verifier.stop(5)
    base = site["base"]
    await log_in(page, base, site["reader"])
    for width, height, suffix in ((1366, 900, "desktop"), (390, 844, "phone")):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(base + "/jobs/docs-offsite")
        files = page.locator("#files")
        await expect(files.locator("td.verified .badge").first).to_contain_text("checksum mismatch")
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
        table = await files.locator("table").bounding_box()
        name = await files.locator("tbody td:first-child > span").first.bounding_box()
        finding = await files.locator("tbody td.verified").first.bounding_box()
        assert table is not None and name is not None and finding is not None
        # The name on one line (about 1.5 rem high), the finding at least half the table.
        assert name["height"] < 40, name
        assert finding["width"] >= table["width"] * 0.4, (finding, table)
        await files.scroll_into_view_if_needed()
        ARTIFACTS.mkdir(exist_ok=True)
        await files.screenshot(path=str(ARTIFACTS / f"verified-files-{suffix}.png"))
