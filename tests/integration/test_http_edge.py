"""The HTTP edge against a real `serve` process, over raw sockets: malformed requests, requests
that never finish their head, more connections than the process has descriptors for, and the
headers every answer carries."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.runtime.app import create_app
from service.settings import load_settings

from tests.support import free_port, read

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
    """`backup-monitor serve` on a free port (optionally with a lower RLIMIT_NOFILE), from the
    end of its start-up scan until SIGTERM; fails the test if it does not stop cleanly."""
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

        async def started() -> bool:  # its log lines must not land among a test's requests
            return "scan finished" in read(log)

        await wait_until(started, 60, "the first full scan (of no job) finished")
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
ODD_ACCEPT = (
    b"Accept: application/openmetrics-text; version=x\r\n"
    b"Authorization: Bearer " + METRICS_TOKEN.encode() + b"\r\n"
)
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
    ("metrics Accept malformed", request("GET /metrics", extra=ODD_ACCEPT), 200),
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
    ("body not gzip", request(
        "POST /api/v1/jobs", b"garbage",
        extra=b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
    ), 400),
    ("ping body not gzip", request(
        "POST /ping/abcdefghijklmnopqrstuv", b"garbage", extra=b"Content-Encoding: gzip\r\n"
    ), 400),
    ("bad chunk", b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
     b"application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    ("header without a colon", b"GET / HTTP/1.1\r\nHost localhost\r\n\r\n", 400),
    ("two Host headers", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("path not UTF-8", b"GET /jobs/\xff HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400),
    ("absolute URI with a bad port", b"GET http://a:b/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400),
    ("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", 400),
]  # fmt: skip


async def test_malformed_requests_are_4xx_with_one_log_line_and_no_traceback(
    sqlite_url, base_env, tmp_path
):
    async with serving(sqlite_url, base_env, tmp_path, METRICS_TOKEN=METRICS_TOKEN) as served:
        for what, raw, status in MALFORMED:
            before = len(served.log_lines())
            answer = await exchange(served.port, raw)
            assert answer.status == status, (what, answer)
            if status == 200:  # a format the client did not quite ask for, but an answer
                assert answer.headers["content-type"].startswith("text/plain"), what
            elif what.endswith("dashboard"):  # a person's browser gets a page
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
    text = read(served.log)
    assert "Traceback" not in text and "ERROR" not in text, text


# --- items that never finish their head, and more connections than descriptors ----------------


async def hold(
    port: int, count: int, data: bytes
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    held = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if data:
            writer.write(data)
            await writer.drain()
        held.append((reader, writer))
    return held


async def closed_by_server(reader: asyncio.StreamReader) -> float:
    """When the server closed the connection (EOF or reset), in loop time."""
    with suppress(ConnectionResetError):
        await reader.read()
    return asyncio.get_running_loop().time()


HALF = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


async def test_requests_that_never_finish_their_head_are_closed(sqlite_url, base_env, tmp_path):
    settings = {"HTTP_HEADER_TIMEOUT_SECONDS": "1", "HTTP_MAX_CONNECTIONS": "30"}
    async with serving(sqlite_url, base_env, tmp_path, **settings) as served:
        loop = asyncio.get_running_loop()
        started = loop.time()
        half_sent = await hold(served.port, 25, HALF)
        silent = await hold(served.port, 5, b"")
        # A kept-alive connection that answered once, then starts a next request and stalls.
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await reader.readuntil(b'{"status": "ok"}')).startswith(b"HTTP/1.1 200")
        writer.write(HALF)
        kept_alive = [(reader, writer)]
        # While they are held, more than the limit in all: /health/live answers at once.
        assert await answers_live(served.port)
        closed = await asyncio.wait_for(
            asyncio.gather(*(closed_by_server(r) for r, _ in half_sent + silent + kept_alive)), 10
        )
        assert max(closed) - started < 6
        for _, held_writer in half_sent + silent + kept_alive:
            held_writer.close()
        assert await answers_live(served.port)


async def test_a_body_that_never_arrives_is_closed(sqlite_url, base_env, tmp_path):
    """A body sent a byte now and then held its connection, busy, for ever; now it has four
    header timeouts. A slow body that does arrive in time is served."""
    settings = {"HTTP_HEADER_TIMEOUT_SECONDS": "1"}
    async with serving(sqlite_url, base_env, tmp_path, **settings) as served:
        loop = asyncio.get_running_loop()
        head = (
            b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
        )
        started = loop.time()
        stalled = await hold(served.port, 5, head + b"csrf=")
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"POST /ping/no-such-key HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Length: 4\r\nConnection: close\r\n\r\nok")  # fmt: skip
        await asyncio.sleep(1.5)  # a slow client, past the header timeout, within the body's
        writer.write(b"!!")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 404")
        writer.close()
        closed = await asyncio.wait_for(
            asyncio.gather(*(closed_by_server(r) for r, _ in stalled)), 15
        )
        assert min(closed) - started > 3.5 and max(closed) - started < 9
        for _, held_writer in stalled:
            held_writer.close()
        assert await answers_live(served.port)
    assert "Traceback" not in read(served.log)


async def rest(reader: asyncio.StreamReader) -> bytes:
    """All the server sends until it closes; `<reset>` when it closed with a reset."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b"<reset>"


SLOW_FORM = (
    b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n\r\ncsrf="
)


async def test_health_gets_in_when_every_connection_is_busy(sqlite_url, base_env, tmp_path):
    """Slow requests (bodies that never end), one after the other, against 16 places: at most
    14 are let in, the others are answered 503; a health probe is answered all along (it was
    refused once all 16 were busy), any other request gets a 503 meanwhile."""
    settings = {"HTTP_HEADER_TIMEOUT_SECONDS": "2", "HTTP_MAX_CONNECTIONS": "16"}
    async with serving(sqlite_url, base_env, tmp_path, **settings) as served:
        slow = []
        try:
            for _ in range(20):
                slow += await hold(served.port, 1, SLOW_FORM)
                # The probe's answer also says the server has read the slow request before it.
                assert await answers_live(served.port), len(slow)
            answer = await exchange(served.port, request("GET /api/v1/status"), 5)
            assert answer.status == 503 and answer.json()["error"]["code"] == "unavailable"
            assert answer.headers["retry-after"] == "1"
            assert answer.headers["x-content-type-options"] == "nosniff"
            # At most 14 slow ones were let in (and closed at their body's deadline); the others
            # were answered 503 (or closed to make room).
            ends = await asyncio.wait_for(asyncio.gather(*(rest(r) for r, _ in slow)), 20)
            assert sum(end.startswith(b"HTTP/1.1 503 ") for end in ends) >= 6, ends
            assert all(end.startswith((b"HTTP/1.1 503 ", b"<reset>")) or not end for end in ends)
        finally:
            for _, writer in slow:
                writer.close()
    assert "connection limit reached" in read(served.log)
    assert "Traceback" not in read(served.log)


async def test_more_connections_than_descriptors_leave_health_reachable(
    sqlite_url, base_env, tmp_path
):
    """With RLIMIT_NOFILE at 256, 400 half-sent requests once made /health/live unreachable."""
    async with serving(sqlite_url, base_env, tmp_path, open_files=256) as served:
        held = await hold(served.port, 400, HALF)
        try:
            for _ in range(5):
                assert await answers_live(served.port)
            assert "connection limit lowered to fit the open-file limit" in read(served.log)
        finally:
            for _, writer in held:
                writer.close()
    assert "Traceback" not in read(served.log)


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
