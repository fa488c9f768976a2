"""Webhook: POST the notice as JSON to a URL, over the caller's aiohttp client session."""

from __future__ import annotations

import asyncio
import functools
import json
from importlib import metadata

import aiohttp
from yarl import URL

from service.db.errors import describe_error
from service.notify.config import WebhookChannel
from service.notify.notice import Notice
from service.notify.transports.base import (
    BODY_EXCERPT,
    DeliveryError,
    Transport,
    connection_problem,
    scrub,
    seconds_text,
)

# Statuses worth retrying among the 4xx: timeout, too early, too many requests.
RETRYABLE_4XX = frozenset({408, 425, 429})


def client_session() -> aiohttp.ClientSession:
    """The client session webhooks are sent over (one for a dispatcher's lifetime, as aiohttp
    asks: its connections are pooled and kept alive between sends).

    Each send bounds itself (the channel's timeout), so the session has none. No connection
    limit: the dispatcher's per-channel slots bound the sends, and a shared limit would let a
    hung receiver hold up the others. No cookies: a receiver's Set-Cookie must not follow the
    next notice, to it or to another channel.
    """
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None),
        connector=aiohttp.TCPConnector(limit=0),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


@functools.cache
def user_agent() -> str:
    try:
        version = metadata.version("backup-monitor")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"backup-monitor/{version}"


def webhook_headers(channel: WebhookChannel, notice: Notice) -> dict[str, str]:
    """User-Agent (which the channel may replace), its headers, the JSON type and event id.

    The event id is also the Idempotency-Key (the IETF draft's header, which many receivers
    and gateways already honour): a retry after a timeout, which the receiver may have taken
    and acted on, is the same request again, and can be dropped as one."""
    configured = {name: value.get_secret_value() for name, value in channel.headers.items()}
    default_agent = (
        {}
        if any(name.lower() == "user-agent" for name in configured)
        else {"User-Agent": user_agent()}
    )
    return {**default_agent, **configured, "Content-Type": "application/json",
            "X-Event-Id": notice.event_id, "Idempotency-Key": notice.event_id}  # fmt: skip


def status_error(status: int, where: str, excerpt: str) -> DeliveryError:
    """The DeliveryError for a non-2xx answer; 4xx other than 408/425/429 is permanent."""
    text = f"HTTP {status} from {where}"
    if 300 <= status < 400:
        return DeliveryError(
            f"{text}: redirects are not followed (use the final URL)", permanent=True
        )
    permanent = 400 <= status < 500 and status not in RETRYABLE_4XX
    return DeliveryError(f"{text}: {excerpt}" if excerpt else text, permanent=permanent)


async def read_excerpt(response: aiohttp.ClientResponse, limit: int = BODY_EXCERPT) -> str:
    """The first `limit` characters of a response body, on one line (the rest is not read)."""
    data = b""
    while len(data) < limit * 4 and not response.content.at_eof():
        chunk = await response.content.read(limit * 4 - len(data))
        if not chunk:
            break
        data += chunk
    return " ".join(data.decode("utf-8", errors="replace").split())[:limit]


class WebhookTransport(Transport[WebhookChannel]):
    type = "webhook"

    def secrets(self) -> list[str]:
        url = URL(self.channel.url)
        headers = [value.get_secret_value() for value in self.channel.headers.values()]
        return [url.raw_path_qs, url.password or "", *headers]

    async def send(self, notice: Notice, http: aiohttp.ClientSession) -> str:
        channel = self.channel
        url = URL(channel.url)
        where = channel.where
        secrets = self.secrets()
        body = json.dumps(notice.as_json(), ensure_ascii=False).encode()
        try:
            async with (
                asyncio.timeout(channel.timeout),
                http.post(
                    url,
                    data=body,
                    headers=webhook_headers(channel, notice),
                    allow_redirects=False,
                ) as response,
            ):
                if 200 <= response.status < 300:
                    return f"HTTP {response.status} from {where}"
                excerpt = await read_excerpt(response)
        except TimeoutError:
            raise DeliveryError(
                f"timed out after {seconds_text(channel.timeout)} waiting for {where}"
            ) from None
        except aiohttp.ServerDisconnectedError:
            raise DeliveryError(f"{where} closed the connection without answering") from None
        except Exception as exc:
            reason = connection_problem(exc, url.host or "?", where)
            message = reason or f"request to {where} failed: {describe_error(exc)}"
            raise DeliveryError(scrub(message, secrets)) from None
        raise status_error(response.status, where, scrub(excerpt, secrets))
