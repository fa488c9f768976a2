"""Real SMTP servers for the tests (aiosmtpd, each in its own thread), with TLS from a private
CA (trustme): what the e-mail transport is tested against, and where dispatched notices land."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tests.support import free_port

USERNAME = "monitor"
PASSWORD = "s3cret-pass-word"


@dataclass
class Tls:
    ca_file: Path
    server_context: ssl.SSLContext


def make_tls(directory: Path) -> Tls:
    """A private CA (trustme), written to `directory`/ca.pem, and a server certificate for
    127.0.0.1 signed by it."""
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return Tls(ca_file, context)


@dataclass
class Mailbox:
    """What an SMTP server received: one entry per message."""

    envelopes: list[Envelope] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    data_started: int = 0
    data_delay: float = 0.0

    async def handle_RCPT(  # aiosmtpd's hook name
        self, server: Any, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # aiosmtpd's hook name
        self, server: Any, session: Session, envelope: Envelope
    ) -> str:
        self.data_started += 1
        await asyncio.sleep(self.data_delay)
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def message(self, index: int = 0) -> EmailMessage:
        content = self.envelopes[index].content
        assert isinstance(content, bytes)
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def authenticate(
    server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USERNAME.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


@dataclass
class SmtpServer:
    port: int
    mailbox: Mailbox

    @property
    def where(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.contextmanager
def smtp_servers() -> Iterator[Callable[..., SmtpServer]]:
    """Start aiosmtpd servers (in their own threads) with the given options, each with its
    Mailbox; all stopped on the way out."""
    controllers: list[Controller] = []

    def start(**options: Any) -> SmtpServer:
        mailbox, port = Mailbox(), free_port()
        controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
        controller.start()
        controllers.append(controller)
        return SmtpServer(port, mailbox)

    try:
        yield start
    finally:
        for controller in controllers:
            wait_for_no_session(controller)
            controller.stop()


async def _sessions() -> int:
    return len(asyncio.all_tasks()) - 1  # each session is a task; the other one is this


def wait_for_no_session(controller: Controller) -> None:
    """Let the server see its clients leave: aiosmtpd's stop() cancels the sessions still open
    and may leave their sockets closing, which Python then reports as unclosed."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if not asyncio.run_coroutine_threadsafe(_sessions(), controller.loop).result(1):
            return
        time.sleep(0.01)
