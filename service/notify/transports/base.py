"""What every transport shares: the base class, the one error a send may raise, and the
helpers that turn a failure into one line an operator can act on, with no secret in it."""

from __future__ import annotations

import socket
import ssl
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from service.db.errors import describe_error

if TYPE_CHECKING:
    import aiohttp

    from service.notify.notice import Notice

BODY_EXCERPT = 200  # characters of an answer (an error response, a warning) quoted in an error

ChannelT = TypeVar("ChannelT")


class DeliveryError(Exception):
    """A notice was not delivered; the message is one line for an operator.

    `permanent` is True when retrying cannot help (a 4xx answer, an SMTP 5xx, a refused login,
    a URL apprise cannot use).
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Transport(ABC, Generic[ChannelT]):
    """How a notice leaves over one kind of channel (`type`, as the channels file names it).

    Made for one declared channel, per send (cheap: what lasts longer, such as the HTTP client
    session, is handed in by the caller). `send` raises DeliveryError for every failure it
    knows, with no secret of `secrets()` in its message, and is safe to cancel at any await.
    """

    type: ClassVar[str]

    def __init__(self, channel: ChannelT) -> None:
        self.channel = channel

    @abstractmethod
    async def send(self, notice: Notice, http: aiohttp.ClientSession) -> str:
        """Send one notice; a short outcome ("HTTP 204 from ..."). `http` is the caller's
        client session, for the transports that speak HTTP (the others ignore it)."""

    @abstractmethod
    def secrets(self) -> list[str]:
        """What no message about this channel may show (scrubbed from every error)."""


def seconds_text(seconds: float) -> str:
    return f"{seconds:g} s"


def scrub(text: str, secrets: Sequence[str]) -> str:
    """`text` on one line, with every secret (of 3 characters or more) replaced by `***`."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return " ".join(text.split())


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes (or contexts), outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def connection_problem(exc: BaseException, host: str, where: str) -> str | None:
    """A one-line reason for a network failure (TLS, DNS, refused), or None if it is not one."""
    chain = list(causes(exc))

    def first(kind: type[BaseException]) -> Any:
        return next((cause for cause in chain if isinstance(cause, kind)), None)

    if first(ssl.SSLCertVerificationError) is not None:
        reasons = [getattr(cause, "verify_message", None) for cause in chain]
        reason = next((text for text in reasons if isinstance(text, str) and text), "unknown")
        return f"TLS certificate of {where} not trusted: {reason}"
    if (tls := first(ssl.SSLError)) is not None:  # aiohttp's error is one too
        texts = [getattr(cause, "reason", None) for cause in chain]
        text = next((text for text in texts if isinstance(text, str) and text), None)
        return f"TLS error with {where}: {text or describe_error(tls)}"
    if (dns := first(socket.gaierror)) is not None:
        return f"cannot resolve {host}: {dns.strerror or describe_error(dns)}"
    if first(ConnectionRefusedError) is not None:
        return f"connection refused by {where}"
    if first(ConnectionResetError) is not None:
        return f"connection reset by {where}"
    for cause in chain:
        if isinstance(cause, OSError) and cause.errno is not None and cause.strerror:
            return f"cannot connect to {where}: {cause.strerror}"
    return None


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
