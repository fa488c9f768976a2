"""The dashboard shows a file name's control characters and bidi overrides as escapes: HTML
escaping keeps markup out, not a right-to-left override that makes `evil‮gpj.exe` read as
`evilexe.jpg`."""

from __future__ import annotations

from datetime import timedelta

from service.scanner.scanner import BackupScanner

from tests.support import add_job, make_file


async def test_a_file_name_is_shown_with_visible_escapes(
    aiohttp_client, make_app, sessionmaker, clock, tmp_path
):
    await add_job(
        sessionmaker, clock() - timedelta(days=3), name="db",
        source={"type": "local", "path": str(tmp_path), "pattern": "*.dump"},
        rules={"min_size": "1KiB"},
    )  # fmt: skip
    make_file(tmp_path / "evil\u202egpj.exe\x1b[8m\n.dump", 10, clock())
    async with sessionmaker() as session:
        await BackupScanner(session, clock=clock).scan_all_jobs()
    client = await aiohttp_client(make_app())
    for page in ("/", "/jobs/db"):
        response = await client.get(page)
        assert response.status == 200
        html = await response.text()
        assert "evil\\u202egpj.exe\\x1b[8m\\n.dump" in html, page
        assert not any(char in html for char in "\u202e\x1b"), page


async def test_a_description_and_a_run_log_keep_their_lines_and_escape_the_rest(
    aiohttp_client, make_app, sessionmaker, clock
):
    """Text meant to have lines (`description: |`, a script's output sent with a ping) keeps
    its line breaks and tabs on the page (`white-space: pre-wrap`); a terminal escape, a bidi
    override or a backslash in it is still shown escaped (one-line fields, a file name, keep
    showing a line break as `\\n`: the test above)."""
    await add_job(
        sessionmaker, clock() - timedelta(days=3), name="db",
        description="Nightly dump of the orders database.\nOwner:\tops team\x1b[8m\n",
    )  # fmt: skip
    client = await aiohttp_client(make_app())
    job = await (await client.get("/api/v1/jobs/db")).json()
    log = "dumping orders\r\n\tdone: 12 tables\u202e\nC:\\new"
    assert (await client.post(f"/ping/{job['ping_key']}", data=log.encode())).status == 200

    html = await (await client.get("/jobs/db")).text()
    assert (
        '<p class="muted lines">Nightly dump of the orders database.\nOwner:\tops team\\x1b[8m</p>'
        in html
    )
    assert (
        '<pre class="lines run-log">dumping orders\n\tdone: 12 tables\\u202e\nC:\\\\new</pre>'
        in html
    )
    assert not any(char in html for char in "\u202e\x1b\r"), html
