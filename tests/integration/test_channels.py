"""Delivering a notice over real channels: an aiohttp webhook receiver, aiosmtpd SMTP servers
(STARTTLS with AUTH, implicit TLS, plain) with trustme certificates, apprise's json:// service,
and the `backup-monitor notify test` command."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientConnectorDNSError, web
from aiohttp.client_reqrep import ConnectionKey
from pydantic import SecretStr

from service.cli.main import CliError, build_parser, cmd_notify_test
from service.notify.config import AppriseChannel, EmailChannel, WebhookChannel, parse_channels
from service.notify.notice import Notice
from service.notify.transports import DeliveryError, deliver
from service.notify.transports.base import connection_problem
from service.settings import load_settings

from tests.mailserver import (
    PASSWORD,
    Mailbox,
    SmtpServer,
    Tls,
    authenticate,
    make_tls,
    smtp_servers,
)
from tests.support import free_port

pytestmark = [
    # Apprise loads its plugins on first use; its email plugin imports the standard module
    # imghdr, deprecated in Python 3.11 (kept by apprise for PGPy): not ours to change.
    pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning"),
    # aiosmtpd itself sets its deprecated Session.login_data after each successful AUTH (in its
    # server thread); the warning is about aiosmtpd's internals, not about this code.
    pytest.mark.filterwarnings("ignore:Session.login_data is deprecated:DeprecationWarning"),
]

VERSION = metadata.version("backup-monitor")


def make_notice(**fields: Any) -> Notice:
    values: dict[str, Any] = {
        "event_id": "0b6f4a1e-7d2c-4f0e-9a51-5c3d2e1f0a9b",
        "kind": "problem",
        "job": "nightly-db",
        "status": "critical",
        "previous_status": "ok",
        "reasons": [{"code": "too_small", "severity": "critical", "message": "newest file is 0 B"}],
        "latest_artifact": {
            "path": "/backups/db/dump.sql.gz",
            "size": 0,
            "mtime": "2024-05-01T02:00:00+00:00",
        },
        "occurred_at": datetime(2024, 5, 1, 2, 30, tzinfo=UTC),
        "url": "https://backups.example.com/jobs/nightly-db",
    }
    values.update(fields)
    return Notice(**values)


# --- a webhook receiver -------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server: /ok answers 204, /status/N answers N, /slow waits, /redirect 302."""

    port: int
    requests: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    scheme: str = "http"

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    @property
    def where(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Received(request.path, dict(request.headers), await request.read()))
        parts = request.path.strip("/").split("/")
        if parts[0] == "status":
            body = request.query.get("body", f"receiver says {parts[1]}")
            return web.Response(status=int(parts[1]), text=body)
        if parts[0] == "slow":
            await asyncio.wait_for(self.release.wait(), 10)
        if parts[0] == "redirect":
            raise web.HTTPFound(self.url("/ok"))
        return web.Response(status=204)


async def start_receiver(ssl_context: ssl.SSLContext | None = None) -> tuple[Receiver, Any]:
    receiver = Receiver(port=free_port(), scheme="https" if ssl_context else "http")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port, ssl_context=ssl_context).start()
    return receiver, runner


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver, runner = await start_receiver()
    yield receiver
    receiver.release.set()
    await runner.cleanup()


def webhook(url: str, **fields: Any) -> WebhookChannel:
    channels = parse_channels(
        {"channels": {"hook": {"type": "webhook", "url": url, **fields}}}, "t"
    )
    channel = channels.channels["hook"]
    assert isinstance(channel, WebhookChannel)
    return channel


async def delivery_error(channel: Any, notice: Notice | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        await deliver(channel, notice or make_notice())
    return caught.value


# --- webhook ------------------------------------------------------------------------------------


async def test_webhook_posts_the_notice_as_json_with_its_headers(receiver):
    notice = make_notice()
    channel = webhook(receiver.url("/ok"), headers={"Authorization": "Bearer hook-token"})

    outcome = await deliver(channel, notice)

    assert outcome == f"HTTP 204 from {receiver.where}"
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.path == "/ok"
    assert request.json() == notice.as_json()
    assert request.json()["service"] == "backup-monitor"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"backup-monitor/{VERSION}"
    assert request.headers["X-Event-Id"] == "0b6f4a1e-7d2c-4f0e-9a51-5c3d2e1f0a9b"
    assert request.headers["Authorization"] == "Bearer hook-token"


async def test_webhook_500_is_an_error_worth_retrying_that_names_no_path(receiver):
    channel = webhook(receiver.url("/status/500?token=path-secret"))

    error = await delivery_error(channel)

    assert str(error) == f"HTTP 500 from {receiver.where}: receiver says 500"
    assert error.permanent is False


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (404, True), (410, True), (408, False), (425, False), (429, False),
     (502, False), (503, False)],
)  # fmt: skip
async def test_webhook_4xx_is_permanent_except_408_425_429(receiver, status, permanent):
    error = await delivery_error(webhook(receiver.url(f"/status/{status}")))

    assert str(error) == f"HTTP {status} from {receiver.where}: receiver says {status}"
    assert error.permanent is permanent


async def test_webhook_error_quotes_only_the_first_200_characters_on_one_line(receiver):
    body = "line one\n  line two " + "x" * 500

    error = await delivery_error(webhook(receiver.url("/status/503?body=" + body)))

    excerpt = ("line one line two " + "x" * 500)[:200]
    assert str(error) == f"HTTP 503 from {receiver.where}: {excerpt}"


async def test_webhook_does_not_follow_a_redirect(receiver):
    error = await delivery_error(webhook(receiver.url("/redirect")))

    assert str(error) == (
        f"HTTP 302 from {receiver.where}: redirects are not followed (use the final URL)"
    )
    assert error.permanent is True
    assert [request.path for request in receiver.requests] == ["/redirect"]


async def test_webhook_slow_receiver_times_out(receiver):
    started = time.monotonic()

    error = await delivery_error(webhook(receiver.url("/slow"), timeout=0.3))

    assert str(error) == f"timed out after 0.3 s waiting for {receiver.where}"
    assert error.permanent is False
    assert time.monotonic() - started < 2


async def test_webhook_connection_refused_is_a_clear_error():
    port = free_port()  # nothing listens there

    error = await delivery_error(webhook(f"http://127.0.0.1:{port}/hook"))

    assert str(error) == f"connection refused by 127.0.0.1:{port}"
    assert error.permanent is False


async def test_webhook_untrusted_certificate_is_a_clear_error(tls):
    receiver, runner = await start_receiver(tls.server_context)
    try:
        error = await delivery_error(webhook(receiver.url("/ok")))
    finally:
        await runner.cleanup()

    assert str(error) == (
        f"TLS certificate of {receiver.where} not trusted: unable to get local issuer certificate"
    )
    assert error.permanent is False
    assert receiver.requests == []


async def test_webhook_https_to_a_plain_http_server_is_a_tls_error(receiver):
    error = await delivery_error(webhook(receiver.url("/ok").replace("http:", "https:")))

    assert str(error) == f"TLS error with {receiver.where}: WRONG_VERSION_NUMBER"
    assert error.permanent is False


async def test_webhook_may_replace_the_user_agent_but_not_the_event_id(receiver):
    channel = webhook(receiver.url("/ok"), headers={"user-agent": "ops-proxy/1"})

    await deliver(channel, make_notice())

    [request] = receiver.requests
    assert request.headers["User-Agent"] == "ops-proxy/1"
    assert request.headers["X-Event-Id"] == "0b6f4a1e-7d2c-4f0e-9a51-5c3d2e1f0a9b"
    assert request.headers["Idempotency-Key"] == "0b6f4a1e-7d2c-4f0e-9a51-5c3d2e1f0a9b"


def test_a_name_that_does_not_resolve_is_a_clear_error():
    # No lookup here (the tests send nothing beyond loopback): the error aiohttp raises for it.
    key = ConnectionKey("nowhere.invalid", 443, True, True, None, None, None)
    failure = ClientConnectorDNSError(key, socket.gaierror(-2, "Name or service not known"))
    try:
        raise failure from failure.os_error
    except ClientConnectorDNSError as exc:
        reason = connection_problem(exc, "nowhere.invalid", "nowhere.invalid")

    assert reason == "cannot resolve nowhere.invalid: Name or service not known"


async def test_webhook_delivery_can_be_cancelled_mid_request(receiver):
    task = asyncio.create_task(deliver(webhook(receiver.url("/slow")), make_notice()))
    for _ in range(200):
        if receiver.requests:
            break
        await asyncio.sleep(0.01)
    assert [request.path for request in receiver.requests] == ["/slow"]

    cancelled_at = time.monotonic()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert time.monotonic() - cancelled_at < 0.5  # not held until the server answers


# --- email --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp() -> Iterator[Callable[..., SmtpServer]]:
    with smtp_servers() as start:
        yield start


def starttls_server(smtp: Callable[..., SmtpServer], tls: Tls) -> SmtpServer:
    return smtp(tls_context=tls.server_context, require_starttls=True,
                authenticator=authenticate, auth_require_tls=True, auth_required=True)  # fmt: skip


def mail_channel(server: SmtpServer, **fields: Any) -> EmailChannel:
    document = {
        "type": "email", "host": "127.0.0.1", "port": server.port,
        "from": "Backup Monitor <monitor@example.com>",
        "to": ["ops@example.com", "dba@example.com"], "timeout": 5, **fields,
    }  # fmt: skip
    channel = parse_channels({"channels": {"mail": document}}, "t").channels["mail"]
    assert isinstance(channel, EmailChannel)
    return channel


async def test_email_starttls_with_login_delivers_the_notice(smtp, tls):
    server = starttls_server(smtp, tls)
    notice = make_notice()
    channel = mail_channel(server, username="monitor", password=PASSWORD, ca_file=str(tls.ca_file))

    outcome = await deliver(channel, notice)

    assert outcome == "accepted by 127.0.0.1 for 2 recipients"
    [envelope] = server.mailbox.envelopes
    assert envelope.mail_from == "monitor@example.com"
    assert envelope.rcpt_tos == ["ops@example.com", "dba@example.com"]
    message = server.mailbox.message()
    assert message["Subject"] == "[backup-monitor] CRITICAL nightly-db (was ok)"
    assert message["From"] == "Backup Monitor <monitor@example.com>"
    assert message["To"] == "ops@example.com, dba@example.com"
    assert message["Message-ID"] == "<0b6f4a1e-7d2c-4f0e-9a51-5c3d2e1f0a9b@example.com>"
    assert message["Date"].datetime == notice.occurred_at
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "text/plain"
    assert message.get_content().replace("\r\n", "\n") == notice.text()


async def test_email_wrong_password_is_permanent_and_not_echoed(smtp, tls):
    server = starttls_server(smtp, tls)
    channel = mail_channel(server, username="monitor", password="wrong-pass-word",
                           ca_file=str(tls.ca_file))  # fmt: skip

    error = await delivery_error(channel)

    assert str(error) == (
        f"{server.where} refused the login of 'monitor': 535 5.7.8 Authentication credentials "
        "invalid"
    )
    assert error.permanent is True
    assert server.mailbox.envelopes == []


async def test_email_certificate_of_an_unknown_ca_is_refused(smtp, tls):
    server = starttls_server(smtp, tls)
    channel = mail_channel(server, username="monitor", password=PASSWORD)  # no ca_file

    error = await delivery_error(channel)

    assert str(error) == (
        f"TLS certificate of {server.where} not trusted: unable to get local issuer certificate"
    )
    assert error.permanent is False
    assert server.mailbox.envelopes == []


async def test_email_implicit_tls(smtp, tls):
    server = smtp(ssl_context=tls.server_context)
    channel = mail_channel(server, security="tls", ca_file=str(tls.ca_file), to="ops@example.com")

    outcome = await deliver(channel, make_notice(kind="recovery", status="ok",
                                                 previous_status="critical"))  # fmt: skip

    assert outcome == "accepted by 127.0.0.1 for 1 recipient"
    assert server.mailbox.message()["Subject"] == (
        "[backup-monitor] RECOVERED nightly-db: ok (was critical)"
    )


async def test_email_plain_server_with_security_none(smtp):
    server = smtp()
    notice = make_notice(kind="reminder")

    outcome = await deliver(mail_channel(server, security="none"), notice)

    assert outcome == "accepted by 127.0.0.1 for 2 recipients"
    message = server.mailbox.message()
    assert message["Subject"] == "[backup-monitor] still CRITICAL nightly-db"
    assert message.get_content().replace("\r\n", "\n") == notice.text()


async def test_email_starttls_demanded_from_a_server_without_it_is_permanent(smtp):
    server = smtp()

    error = await delivery_error(mail_channel(server))  # security: starttls by default

    assert str(error) == f"{server.where}: SMTP STARTTLS extension not supported by server."
    assert error.permanent is True
    assert server.mailbox.envelopes == []


async def test_email_refused_recipients(smtp):
    server = smtp()
    server.mailbox.refuse = {"dba@example.com"}

    outcome = await deliver(mail_channel(server, security="none"), make_notice())

    assert outcome == "accepted by 127.0.0.1 for 1 recipient (refused: dba@example.com: 550)"
    assert server.mailbox.envelopes[0].rcpt_tos == ["ops@example.com"]

    server.mailbox.refuse = {"ops@example.com", "dba@example.com"}
    error = await delivery_error(mail_channel(server, security="none"))
    assert str(error) == (
        f"{server.where} refused every recipient: ops@example.com: 550 5.1.1 no such mailbox; "
        "dba@example.com: 550 5.1.1 no such mailbox"
    )
    assert error.permanent is True


async def test_email_connection_refused_is_a_clear_error():
    port = free_port()
    server = SmtpServer(port, Mailbox())  # nothing listens there

    error = await delivery_error(mail_channel(server))

    assert str(error) == f"connection refused by 127.0.0.1:{port}"
    assert error.permanent is False


async def test_email_delivery_can_be_cancelled_mid_message(smtp):
    server = smtp()
    server.mailbox.data_delay = 0.5
    task = asyncio.create_task(deliver(mail_channel(server, security="none"), make_notice()))
    for _ in range(200):
        if server.mailbox.data_started:
            break
        await asyncio.sleep(0.01)
    assert server.mailbox.data_started == 1

    cancelled_at = time.monotonic()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert time.monotonic() - cancelled_at < 0.5  # not held until the server answers


# --- apprise ------------------------------------------------------------------------------------


def apprise_channel(*urls: str) -> AppriseChannel:
    document = {"type": "apprise", "urls": list(urls), "timeout": 5}
    channel = parse_channels({"channels": {"chat": document}}, "t").channels["chat"]
    assert isinstance(channel, AppriseChannel)
    return channel


async def test_apprise_sends_the_subject_and_text(receiver):
    notice = make_notice()
    channel = apprise_channel(f"json://127.0.0.1:{receiver.port}/apprise/ok")

    outcome = await deliver(channel, notice)

    assert outcome == "sent to 1 apprise service"
    [request] = receiver.requests
    assert request.path == "/apprise/ok"
    body = request.json()
    assert body["title"] == notice.subject()
    assert body["message"] == notice.text().strip()  # apprise trims the body


async def test_apprise_text_shows_control_characters_as_escapes(receiver):
    path = "/b/x.dump\nDashboard: https://evil.example\x1b[8m\u2028"
    notice = make_notice(latest_artifact={"path": path, "size": 1, "mtime": "2024-05-01"})
    channel = apprise_channel(f"json://127.0.0.1:{receiver.port}/apprise/ok")

    await deliver(channel, notice)

    [request] = receiver.requests
    message = request.json()["message"]
    assert "Newest file: /b/x.dump\\nDashboard: https://evil.example\\x1b[8m\\u2028" in message
    assert [line for line in message.splitlines() if line.startswith("Dashboard:")] == [
        "Dashboard: https://backups.example.com/jobs/nightly-db"
    ]


async def test_apprise_failing_service_is_an_error_naming_it(receiver):
    channel = apprise_channel(
        f"json://127.0.0.1:{receiver.port}/ok",
        f"json://monitor:apprise-secret@127.0.0.1:{receiver.port}/status/500",
    )

    error = await delivery_error(channel)

    assert str(error) == (
        "1 of 2 apprise services failed: #2 JSON (failure: Failed to send JSON POST "
        "notification: Internal server error., error=500.)"
    )
    assert error.permanent is False
    assert sorted(request.path for request in receiver.requests) == ["/ok", "/status/500"]


async def test_apprise_url_it_cannot_use_is_permanent():
    # The channels file refuses such a URL; a channel built around that check still fails well.
    channel = AppriseChannel.model_construct(
        type="apprise", urls=(SecretStr("bogus://secret-token/x"),), timeout=5.0
    )

    error = await delivery_error(channel)

    assert str(error) == "apprise URL #1 (bogus://) is not one apprise can use"
    assert error.permanent is True


# --- the command --------------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


async def notify_test(channel: str, env: dict[str, str], cwd: Path) -> Run:
    """Run `python -m service notify test CHANNEL` to its end."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "notify", "test", channel, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def test_notify_test_command_sends_or_says_why_not(receiver, base_env, tmp_path):
    channels_file = tmp_path / "channels.yml"
    channels_file.write_text(
        "channels:\n"
        f"  ops-hook: {{type: webhook, url: '{receiver.url('/ok')}',"
        "             headers: {Authorization: 'Bearer ${HOOK_TOKEN}'}}\n"
        f"  broken: {{type: webhook, url: '{receiver.url('/status/503')}'}}\n"
    )
    env = dict(base_env, CHANNELS_FILE=str(channels_file), HOOK_TOKEN="cli-token",
               DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")  # fmt: skip

    # One after the other: the first run fills the session's bytecode cache (see base_env).
    sent = await notify_test("ops-hook", env, tmp_path)
    broken = await notify_test("broken", env, tmp_path)

    assert (sent.code, sent.err) == (0, ""), sent
    assert sent.out == f"test message sent through 'ops-hook': HTTP 204 from {receiver.where}\n"
    [request] = [r for r in receiver.requests if r.path == "/ok"]
    assert request.headers["Authorization"] == "Bearer cli-token"
    body = request.json()
    assert (body["kind"], body["job"], body["status"]) == ("test", "backup-monitor", "ok")
    assert request.headers["X-Event-Id"] == body["event_id"]
    assert (broken.code, broken.out) == (1, ""), broken
    assert broken.err == (
        f"backup-monitor: channel 'broken': HTTP 503 from {receiver.where}: receiver says 503 "
        "(may succeed later)\n"
    )


def test_notify_test_command_names_what_is_wrong_with_the_channels(tmp_path):
    # The command's own checks, in this process (main() prints a CliError as one line, exit 1).
    channels_file = tmp_path / "channels.yml"
    channels_file.write_text("channels:\n  b: {type: webhook, url: 'http://127.0.0.1:9/'}\n"
                             "  a: {type: webhook, url: 'http://127.0.0.1:9/'}\n")  # fmt: skip
    bad_file = tmp_path / "bad.yml"
    bad_file.write_text("channels:\n  x: {type: sms}\n  y: {type: webhook}\n")

    def refusal(channel: str, path: Path | None) -> str:
        args = build_parser().parse_args(["notify", "test", channel])
        with pytest.raises(CliError) as caught:
            cmd_notify_test(load_settings(channels_file=path), args)
        assert caught.value.code == 1
        return str(caught.value)

    assert refusal("nope", channels_file) == (
        f"no channel named 'nope' in {channels_file} (channels: a, b)"
    )
    assert refusal("x", bad_file) == (
        f"{bad_file}: channels.x: type: unknown channel type 'sms' (expected webhook, email, "
        "apprise); channels.y: url: Field required"
    )
    assert refusal("a", None) == "no channels: set CHANNELS_FILE to a channels file"
