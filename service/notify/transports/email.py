"""Email: the notice as a plain-text message through an SMTP server (aiosmtplib)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
from email.message import EmailMessage

import aiohttp
import aiosmtplib

from service.core.visible import quote
from service.db.errors import describe_error
from service.notify.config import EmailChannel, tls_context
from service.notify.notice import Notice
from service.notify.transports.base import (
    DeliveryError,
    Transport,
    connection_problem,
    plural,
    scrub,
    seconds_text,
)

QUIT_TIMEOUT = 5.0  # seconds given to an SMTP server to answer QUIT, the message once accepted


def email_message(channel: EmailChannel, notice: Notice) -> EmailMessage:
    """The message: the notice's subject and text, a Message-ID made from its event id."""
    message = EmailMessage()
    message["Subject"] = notice.subject()
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.to)
    message["Date"] = email.utils.format_datetime(notice.occurred_at)
    domain = email.utils.parseaddr(channel.sender)[1].rpartition("@")[2] or "backup-monitor"
    # The same event sent again has the same Message-ID: mail clients show it once.
    message["Message-ID"] = f"<{notice.event_id}@{domain}>"
    message["X-Event-Id"] = notice.event_id
    message["Auto-Submitted"] = "auto-generated"  # no vacation replies (RFC 3834)
    message.set_content(notice.text())
    return message


class SMTPClient(aiosmtplib.SMTP):
    """aiosmtplib's client, whose close() leaves no socket open, TLS or not.

    aiosmtplib closes the connection with close(): after QUIT, and itself on any failure in
    connect() (a refused login, a failed STARTTLS, a cancellation), so the caller never sees
    that transport. Over TLS, the transport's close() only starts TLS's closing handshake: it
    sends close_notify and leaves the socket open until the server answers it (asyncio waits up
    to 30 s). If the event loop stops first, the socket is never closed, and Python reports an
    unclosed transport whenever it is collected. Aborting the transport too closes the socket at
    the loop's next pass without waiting for the server; the close_notify already went out.
    """

    def close(self) -> None:
        transport = self.transport
        super().close()
        if isinstance(transport, asyncio.WriteTransport):
            transport.abort()


def smtp_error(exc: Exception, channel: EmailChannel) -> DeliveryError:
    """A DeliveryError for what aiosmtplib (or the network under it) raised."""
    where = channel.where
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = [f"{error.recipient}: {error.code} {error.message}" for error in exc.recipients]
        permanent = all(error.code >= 500 for error in exc.recipients)
        return DeliveryError(
            f"{where} refused every recipient: {'; '.join(refused)}", permanent=permanent
        )
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return DeliveryError(
            f"{where} refused the login of {quote(channel.username)}: {exc.code} {exc.message}",
            permanent=exc.code >= 500,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code > 0:
        return DeliveryError(
            f"{where} answered {exc.code} {exc.message}", permanent=exc.code >= 500
        )
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return DeliveryError(f"timed out after {seconds_text(channel.timeout)} talking to {where}")
    if reason := connection_problem(exc, channel.host, where):
        return DeliveryError(reason)
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return DeliveryError(f"{where} closed the connection: {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        return DeliveryError(f"cannot connect to {where}: {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPException):  # no STARTTLS, no AUTH offered: fix the config
        return DeliveryError(f"{where}: {exc.message}", permanent=True)
    return DeliveryError(f"sending through {where} failed: {describe_error(exc)}")


class EmailTransport(Transport[EmailChannel]):
    type = "email"

    def secrets(self) -> list[str]:
        password = self.channel.password
        return [password.get_secret_value()] if password else []

    async def send(self, notice: Notice, http: aiohttp.ClientSession) -> str:
        channel = self.channel
        message = email_message(channel, notice)
        recipients = [email.utils.parseaddr(address)[1] for address in channel.to]
        client = SMTPClient(
            hostname=channel.host,
            port=channel.port,
            username=channel.username,
            password=channel.password.get_secret_value() if channel.password else None,
            use_tls=channel.security == "tls",
            start_tls=channel.security == "starttls",
            tls_context=tls_context(channel.ca_file) if channel.security != "none" else None,
            timeout=channel.timeout,
        )
        # Not `async with client`: on the way out it waits for the server's answer to QUIT, which
        # would hold a cancellation (or an error) for as long as the server keeps silent.
        try:
            try:
                async with asyncio.timeout(channel.timeout):
                    await client.connect()  # and STARTTLS, and the login
                    refused, _reply = await client.send_message(
                        message,
                        sender=email.utils.parseaddr(channel.sender)[1],
                        recipients=recipients,
                    )
            except Exception as exc:
                error = smtp_error(exc, channel)
                text = scrub(str(error), self.secrets())
                raise DeliveryError(text, permanent=error.permanent) from None
            # The message is accepted: whatever QUIT meets, it is not sent again.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(QUIT_TIMEOUT):
                    await client.quit()
        finally:
            client.close()  # if aiosmtplib has not: the socket is closed at the loop's next pass
            # Let that pass come now (as for the socket a failed STARTTLS left closing): it is
            # closed when this returns, not in whatever runs after us.
            await asyncio.sleep(0)
        accepted = len(recipients) - len(refused)
        text = f"accepted by {channel.host} for {plural(accepted, 'recipient')}"
        if refused:
            details = "; ".join(f"{address}: {reply.code}" for address, reply in refused.items())
            text += f" (refused: {details})"
        return text
