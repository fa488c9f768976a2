"""The HTTP edge against a real `serve` process, over raw sockets: malformed requests, and the
headers every answer carries."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.app import create_app
from service.settings import load_settings

from support import free_port, read

METRICS_TOKEN = "metrics-token-long-enough"
ROUTINE = re.compile(r"^\S+ INFO (service\.scheduler|service\.scanner\.scanner) ")


@dataclass
class Served:
    port: int
    log: Path
    process: asyncio.subprocess.Process

    def log_lines(self) -> list[str]:
        """The log, but the scheduler's and the scanner's routine lines."""
        return [line for line in read(self.log).splitlines() if not ROUTINE.search(line)]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads(self.body)
        return loaded


async def exchange(port: int, raw: bytes, timeout: float = 10) -> Answer:
    """Send `raw` bytes as they are, read the answer until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), data[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, body)


async def answers_live(port: int) -> bool:
    try:
        answer = await exchange(
            port, b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 5
        )
    except (OSError, TimeoutError, AssertionError):
        return False
    return answer.status == 200


async def wait_until(condition, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def serving(
    sqlite_url: str,
    base_env: dict[str, str],
    tmp_path: Path,
    open_files: int | None = None,
    **settings: str,
) -> AsyncIterator[Served]:
    """`backup-monitor serve` on a free port (optionally with a lower RLIMIT_NOFILE), until
    SIGTERM; fails the test if it does not stop cleanly."""
    port = free_port()
    log = tmp_path / "serve.log"
    env = dict(base_env, DATABASE_URL=sqlite_url, **settings)

    def limit_files() -> None:
        if open_files is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "serve", "--port", str(port),
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
            preexec_fn=limit_files,
        )  # fmt: skip
    served = Served(port, log, process)
    try:

        async def up() -> bool:
            if process.returncode is not None:
                pytest.fail(f"serve exited with {process.returncode}:\n{read(log)}")
            return await answers_live(port)

        await wait_until(up, 60, "serve answers /health/live")
        yield served
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
                pytest.fail(f"serve did not stop on SIGTERM:\n{read(log)}")


def request(
    head: str, body: bytes = b"", *, host: bytes = b"127.0.0.1", extra: bytes = b""
) -> bytes:
    """One request, `Connection: close`; `head` is `METHOD /path`."""
    length = f"Content-Length: {len(body)}\r\n".encode() if body else b""
    return (
        head.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + length
        + b"Connection: close\r\n\r\n" + body
    )  # fmt: skip


def form(body: bytes, content_type: bytes = b"multipart/form-data; boundary=xx") -> bytes:
    return request("POST /login", body, extra=b"Content-Type: " + content_type + b"\r\n")


def part(headers: bytes, value: bytes = b"abc") -> bytes:
    return b"--xx\r\n" + headers + b"\r\n\r\n" + value + b"\r\n--xx--\r\n"


NAME = b'Content-Disposition: form-data; name="csrf"'
HTML = b"Accept: text/html\r\n"
URLENCODED = b"application/x-www-form-urlencoded"
TOKEN_AUTH = b"Authorization: Bearer \xff\r\n"
METRICS_AUTH = b"Authorization: Bearer \xff\xfe" + METRICS_TOKEN.encode() + b"\r\n"

# (what, raw request, status): each once found answering 500 with a traceback in the log, or
# logging aiohttp's own traceback for a request it could not parse.
MALFORMED = [
    ("Host a:b", request("GET /api/v1/jobs", host=b"a:b"), 400),
    ("Host x:99999", request("GET /api/v1/jobs", host=b"x:99999"), 400),
    ("Host [::1]:x", request("GET /api/v1/jobs", host=b"[::1]:x"), 400),
    ("Host not UTF-8", request("GET /api/v1/jobs", host=b"\xff"), 400),
    ("Host with a path", request("GET /api/v1/jobs", host=b"evil.example/x"), 400),
    ("Host, dashboard", request("GET /", host=b"a:b", extra=HTML), 400),
    ("Host, health", request("GET /health/live", host=b"a:b"), 400),
    ("Host, metrics", request("GET /metrics", host=b"a:b"), 400),
    ("metrics token not UTF-8", request("GET /metrics", extra=METRICS_AUTH), 401),
    ("API token not UTF-8", request("GET /api/v1/jobs", extra=TOKEN_AUTH), 401),
    ("form boundary missing", form(b"garbage!!!", b"multipart/form-data"), 400),
    ("form without a boundary line", form(b"garbage!!!"), 400),
    ("form part charset unknown", form(part(NAME + b"\r\nContent-Type: text/x; charset=no")), 400),
    ("form part encoding unknown", form(part(NAME + b"\r\nContent-Transfer-Encoding: weird")), 400),
    ("form part header not UTF-8", form(part(b"\xff\xff: \xfe")), 400),
    ("form charset unknown", form(b"csrf=a", URLENCODED + b"; charset=bogus"), 400),
    ("form CSRF cookie not UTF-8", request(
        "POST /login", b"csrf=abc",
        extra=b"Content-Type: application/x-www-form-urlencoded\r\nCookie: bm_csrf=\xff\xfe\r\n",
    ), 403),
]  # fmt: skip


async def test_malformed_requests_are_4xx_with_one_log_line_and_no_traceback(
    sqlite_url, base_env, tmp_path
):
    async with serving(sqlite_url, base_env, tmp_path, METRICS_TOKEN=METRICS_TOKEN) as served:
        for what, raw, status in MALFORMED:
            before = len(served.log_lines())
            answer = await exchange(served.port, raw)
            assert answer.status == status, (what, answer)
            if what.endswith("dashboard"):  # a person's browser gets a page
                assert answer.headers["content-type"].startswith("text/html"), what
                assert b"400 Bad Request" in answer.body and b"Host header" in answer.body
            else:
                assert answer.json()["error"]["code"] in (
                    "bad_request",
                    "unauthorized",
                    "forbidden",
                )
            assert answer.headers["x-content-type-options"] == "nosniff", what
            assert answer.headers["server"] == "backup-monitor", what
            # Let the server finish writing its log line, then: at most one, never a traceback.
            assert await answers_live(served.port)
            new = served.log_lines()[before:]
            assert len(new) <= 1 and not any("Traceback" in line for line in new), (what, new)
            assert all(" bad request " in line for line in new), (what, new)

        # A stranger sending bad requests by the hundred gets a bounded number of log lines.
        before = len(served.log_lines())
        for _ in range(60):
            await exchange(served.port, request("GET /api/v1/jobs", host=b"a:b"))
        assert await answers_live(served.port)
        assert len(served.log_lines()[before:]) <= 20


# --- headers ------------------------------------------------------------------------------------


async def test_every_answer_has_the_security_headers(aiohttp_client, sqlite_url):
    client = await aiohttp_client(
        create_app(load_settings(database_url=sqlite_url), scheduler=False)
    )
    for path in ("/login", "/", "/api/v1/jobs", "/nope", "/api/docs", "/health/live"):
        response = await client.get(path, allow_redirects=False)
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], path
        assert response.headers["Referrer-Policy"] == "same-origin", path
        assert response.headers["Server"] == "backup-monitor", path
