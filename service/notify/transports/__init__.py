"""How notices leave: one transport per channel type (webhook, email, apprise), each a module
with one class on the small base in `base`, registered here by the type the channels file names.

May import the channel declarations (service.notify.config) and the notice; never the database
or the dispatcher, which calls `deliver` with its own client session.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import aiohttp

from service.db.errors import describe_error
from service.notify.config import Channel
from service.notify.notice import Notice
from service.notify.transports.apprise import AppriseTransport
from service.notify.transports.base import DeliveryError, Transport, scrub
from service.notify.transports.email import EmailTransport
from service.notify.transports.webhook import WebhookTransport, client_session

__all__ = ["TRANSPORTS", "DeliveryError", "Transport", "client_session", "deliver", "transport"]

# Channel type -> its transport. A new type is a module beside these, a model in
# service.notify.config, and one line here.
TRANSPORTS: Mapping[str, type[Transport[Any]]] = MappingProxyType(
    {kind.type: kind for kind in (WebhookTransport, EmailTransport, AppriseTransport)}
)


def transport(channel: Channel) -> Transport[Any]:
    """The transport for one declared channel."""
    return TRANSPORTS[channel.type](channel)


async def deliver(
    channel: Channel, notice: Notice, http: aiohttp.ClientSession | None = None
) -> str:
    """Send one notice over one channel; return a short outcome ("HTTP 204 from ...").

    `http`: the client session to send over (the dispatcher's, for its lifetime); without
    one (a one-off send: `notify test`), a session is opened for this send and closed after.
    Raises DeliveryError for every failure. Safe to cancel at any await.
    """
    sender = transport(channel)
    try:
        if http is not None:
            return await sender.send(notice, http)
        async with client_session() as own:
            return await sender.send(notice, own)
    except DeliveryError:
        raise
    except Exception as exc:  # a case the transport does not know yet: still one clear line
        raise DeliveryError(
            scrub(f"cannot send: {describe_error(exc)}", sender.secrets())
        ) from None
