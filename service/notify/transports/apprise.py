"""Apprise: the notice to any service Apprise knows (Slack, ntfy, Telegram, ...).

Apprise is imported when a channel first needs it (a third of a second of imports)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import unquote

import aiohttp

from service.db.errors import describe_error
from service.notify.config import AppriseChannel, quiet_apprise, scheme_of
from service.notify.notice import Notice
from service.notify.transports.base import (
    BODY_EXCERPT,
    DeliveryError,
    Transport,
    plural,
    scrub,
    seconds_text,
)

if TYPE_CHECKING:
    from apprise import Apprise, AppriseResult


def url_fragments(url: str) -> list[str]:
    """The parts of an apprise URL that may be secret (tokens, users, passwords, paths)."""
    _scheme, _separator, rest = url.partition("://")
    pieces = re.split(r"[/:@?&=#,;+]", rest)
    return [text for piece in pieces for text in {piece, unquote(piece)} if len(text) >= 4]


def apprise_failures(result: AppriseResult, secrets: Sequence[str]) -> list[str]:
    """One line per failed service: its position, kind and last warning, secrets removed."""
    lines = []
    for index, service in enumerate(result, start=1):
        if service:
            continue
        detail = service.status.name.lower()
        warnings = [entry.message for entry in service.logs()
                    if str(entry.level).upper() in ("WARNING", "ERROR")]  # fmt: skip
        if warnings:
            detail += ": " + scrub(str(warnings[-1]), secrets)[:BODY_EXCERPT]
        lines.append(f"#{index} {service.name} ({detail})")
    return lines


def apprise_notifier(urls: Sequence[str]) -> Apprise:
    """An Apprise object with every URL; DeliveryError (permanent) for one it cannot use."""
    import apprise  # imported on first use: see service.notify.config.parse_apprise_url

    quiet_apprise()
    notifier = apprise.Apprise()
    for index, url in enumerate(urls, start=1):
        if not notifier.add(url):
            raise DeliveryError(
                f"apprise URL #{index} ({scheme_of(url)}) is not one apprise can use",
                permanent=True,
            )
    return notifier


class AppriseTransport(Transport[AppriseChannel]):
    type = "apprise"

    def secrets(self) -> list[str]:
        urls = self.channel.urls
        return [piece for url in urls for piece in url_fragments(url.get_secret_value())]

    async def send(self, notice: Notice, http: aiohttp.ClientSession) -> str:
        channel = self.channel
        urls = [url.get_secret_value() for url in channel.urls]
        secrets = self.secrets()
        try:
            # Apprise loads its plugins on first use (a second of imports) and runs the services in
            # its own threads: the event loop waits for neither. Its timeout stops waiting for the
            # services; ours is a last guard around the whole call.
            async with asyncio.timeout(channel.timeout + 5):
                notifier = await asyncio.to_thread(apprise_notifier, urls)
                result = await notifier.async_notify(
                    body=notice.text(), title=notice.subject(), timeout=channel.timeout
                )
        except DeliveryError:
            raise
        except TimeoutError:
            raise DeliveryError(
                f"timed out after {seconds_text(channel.timeout)} (apprise)"
            ) from None
        except Exception as exc:
            raise DeliveryError(scrub(f"apprise failed: {describe_error(exc)}", secrets)) from None
        with result:
            if result:
                return f"sent to {plural(len(urls), 'apprise service')}"
            failed = apprise_failures(result, secrets)
            if not failed:
                raise DeliveryError(f"apprise did not send ({result.status.name.lower()})")
            services = plural(len(urls), "apprise service")
            raise DeliveryError(f"{len(failed)} of {services} failed: {'; '.join(failed)}")
