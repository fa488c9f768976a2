"""Notification channels: their configuration (a YAML file) and sending one notice over one.

```yaml
defaults: [ops-hook]            # the channels of jobs that name none (optional)
channels:
  ops-hook: {type: webhook, url: "https://hooks.example.com/x", headers: {X-Token: "${TOKEN}"}}
  ops-mail: {type: email, host: smtp.example.com, from: bm@example.com, to: [ops@example.com]}
  chat: {type: apprise, urls: ["ntfy://ntfy.sh/topic"]}
```

`${NAME}` in any string value is replaced by the environment variable NAME (`$${NAME}` is the
literal text `${NAME}`). Secrets (passwords, header values, apprise URLs) are SecretStr: they show
as `**********` in reprs, and no error message quotes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import logging
import os
import re
import socket
import ssl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import unquote

import aiohttp
import aiosmtplib
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from yarl import URL

from service.errors import describe_error
from service.jobspec import JOB_NAME_PATTERN
from service.notify.notice import Notice
from service.settingfile import read_setting_file
from service.units import parse_duration
from service.visible import quote
from service.yamlfile import FileProblems, read_yaml

if TYPE_CHECKING:
    from apprise import Apprise, AppriseResult

CHANNEL_TYPES = ("webhook", "email", "apprise")
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
MAX_TIMEOUT = 600.0  # seconds
BODY_EXCERPT = 200  # characters of an error response quoted in a DeliveryError
QUIT_TIMEOUT = 5.0  # seconds given to an SMTP server to answer QUIT, the message once accepted
# Statuses worth retrying among the 4xx: timeout, too early, too many requests.
RETRYABLE_4XX = frozenset({408, 425, 429})
# Headers the webhook sets itself; a channel may not replace them.
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding",
                              "x-event-id", "idempotency-key"})  # fmt: skip
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ENV_REFERENCE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(JOB_NAME_PATTERN)


# --- configuration ------------------------------------------------------------------------------


def _seconds(value: object) -> object:
    """A timeout: a number of seconds, or a duration string such as `30s` or `1m`."""
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds, got a boolean")
    if isinstance(value, str):
        return parse_duration(value)
    return value


def _one_or_more(value: object) -> object:
    """A single string where a list is expected is a list of one."""
    return [value] if isinstance(value, str | SecretStr) else value


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"{quote(value)} is not a valid header name")
    if value.lower() in RESERVED_HEADERS:
        raise ValueError(f"{value} is set by backup-monitor itself")
    return value


def _one_line_secret(value: SecretStr) -> SecretStr:
    if any(char in value.get_secret_value() for char in "\r\n\0"):
        raise ValueError("must not contain a line break or a NUL character")
    return value


def _host(value: str) -> str:
    if not value or any(char.isspace() or char in "/@\0" for char in value):
        raise ValueError(f"{quote(value)} is not a host name or address")
    return value


def _address(value: str) -> str:
    """An email address, bare (`ops@example.com`) or with a name (`Ops <ops@example.com>`)."""
    _name, address = email.utils.parseaddr(value)
    local, _at, domain = address.rpartition("@")
    if any(char in value for char in "\r\n\0") or not local or not domain or " " in address:
        raise ValueError(f"{quote(value)} is not an email address")
    return value


def _apprise_url(value: SecretStr) -> SecretStr:
    if parse_apprise_url(value.get_secret_value()) is None:
        raise ValueError(f"not a URL apprise understands ({scheme_of(value.get_secret_value())})")
    return value


Timeout = Annotated[float, BeforeValidator(_seconds), Field(gt=0, le=MAX_TIMEOUT)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[SecretStr, AfterValidator(_one_line_secret)]
Host = Annotated[str, AfterValidator(_host)]
Address = Annotated[str, AfterValidator(_address)]
AppriseUrl = Annotated[SecretStr, AfterValidator(_apprise_url)]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class WebhookChannel(_Strict):
    """POST the notice as JSON to a URL."""

    type: Literal["webhook"]
    url: str
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    timeout: Timeout = 10.0

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            url = URL(value)
        except (ValueError, TypeError):
            raise ValueError("not a valid URL") from None
        if url.scheme not in ("http", "https"):
            raise ValueError(f"must be an http:// or https:// URL (got {url.scheme or 'none'})")
        if not url.host:
            raise ValueError("the URL has no host")
        return value

    @property
    def where(self) -> str:
        """The host (and port when given) the webhook goes to: what messages may name."""
        return host_label(URL(self.url))


class EmailChannel(_Strict):
    """Send the notice as a plain-text email through an SMTP server."""

    type: Literal["email"]
    host: Host
    port: Port  # defaults by security: 587 starttls, 465 tls, 25 none
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: Address = Field(alias="from")
    to: Annotated[tuple[Address, ...], BeforeValidator(_one_or_more), Field(min_length=1)]
    ca_file: Path | None = None  # an extra trust anchor, besides the system's
    timeout: Timeout = 30.0

    @model_validator(mode="before")
    @classmethod
    def _default_port(cls, data: object) -> object:
        if isinstance(data, dict) and "port" not in data:
            security = data.get("security", "starttls")
            port = DEFAULT_PORTS.get(security, 587) if isinstance(security, str) else 587
            return {**data, "port": port}
        return data

    @field_validator("ca_file")
    @classmethod
    def _loadable(cls, value: Path | None) -> Path | None:
        if value is not None:
            if not value.is_absolute():
                raise ValueError(f"must be an absolute path (got {quote(str(value))})")
            try:
                tls_context(value)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot load {value}: {describe_error(exc)}") from None
        return value

    @model_validator(mode="after")
    def _login_pair(self) -> EmailChannel:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: give both or neither")
        return self

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class AppriseChannel(_Strict):
    """Send the notice to any service Apprise knows (Slack, ntfy, Telegram, ...)."""

    type: Literal["apprise"]
    urls: Annotated[tuple[AppriseUrl, ...], BeforeValidator(_one_or_more), Field(min_length=1)]
    timeout: Timeout = 30.0


Channel = Annotated[WebhookChannel | EmailChannel | AppriseChannel, Field(discriminator="type")]
_CHANNEL: TypeAdapter[Channel] = TypeAdapter(Channel)


@dataclass(frozen=True, slots=True)
class ChannelSet:
    """The configured channels, by name, and the ones used by jobs that name none."""

    channels: Mapping[str, Channel] = field(default_factory=dict)
    defaults: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", MappingProxyType(dict(self.channels)))
        object.__setattr__(self, "defaults", tuple(dict.fromkeys(self.defaults)))
        if missing := self.unknown(self.defaults):
            raise ValueError(f"defaults name unknown channels: {', '.join(missing)}")

    def route(self, names: Sequence[str] | None) -> tuple[str, ...]:
        """The channels of a job: its own list (order kept, no repeats), or the defaults."""
        return self.defaults if names is None else tuple(dict.fromkeys(names))

    def unknown(self, names: Sequence[str]) -> list[str]:
        """The names that are not configured channels, in order, each once."""
        return [name for name in dict.fromkeys(names) if name not in self.channels]


EMPTY = ChannelSet()


class ChannelsFileError(FileProblems):
    """The channels file cannot be used; `problems` lists every one, each naming its place."""


def expand_env(
    value: object, environ: Mapping[str, str], where: tuple[str, ...] = ()
) -> tuple[object, list[tuple[tuple[str, ...], str]]]:
    """Replace `${NAME}` in every string of a loaded document.

    Returns the new document and the unset variables, each with the place it was named.
    """
    missing: list[tuple[tuple[str, ...], str]] = []
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            escaped, name = match.groups()
            if escaped:
                return "${" + name + "}"
            if name not in environ:
                missing.append((where, name))
                return ""
            return environ[name]

        return _ENV_REFERENCE.sub(substitute, value), missing
    if isinstance(value, dict):
        expanded: dict[object, object] = {}
        for key, item in value.items():
            expanded[key], found = expand_env(item, environ, (*where, str(key)))
            missing += found
        return expanded, missing
    if isinstance(value, list):
        items = []
        for index, item in enumerate(value):
            new, found = expand_env(item, environ, (*where, str(index)))
            items.append(new)
            missing += found
        return items, missing
    return value, missing


def _place(label: str, parts: Sequence[object]) -> str:
    """`channels.ops-mail: port` (or the label alone for the whole channel)."""
    return f"{label}: {'.'.join(str(part) for part in parts)}" if parts else label


def validation_problems(exc: ValidationError) -> list[tuple[tuple[str, ...], str]]:
    """Flatten a channel's ValidationError into (field path, message); never quotes a secret."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"])
        if loc[:1] and loc[0] in CHANNEL_TYPES:
            loc = loc[1:]  # the discriminated union's tag
        loc = tuple(part for part in loc if not part.startswith("function-"))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "union_tag_not_found":
            loc, message = ("type",), f"required: one of {', '.join(CHANNEL_TYPES)}"
        elif error["type"] == "union_tag_invalid":
            got = error["input"].get("type") if isinstance(error["input"], dict) else None
            loc = ("type",)
            message = f"unknown channel type {quote(got)} (expected {', '.join(CHANNEL_TYPES)})"
        elif error["type"] == "model_attributes_type":
            message = "a channel is a mapping with a 'type' and its fields"
        elif error["type"] == "literal_error" and isinstance(error["input"], str):
            message = f"{message} (got {quote(error['input'])})"
        problems.append((loc, message))
    return problems


def parse_channel(
    name: str, document: object, environ: Mapping[str, str]
) -> tuple[Channel | None, list[str]]:
    """One channel from its loaded mapping: the channel, or None and every problem."""
    label = f"channels.{name}"
    problems = []
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(
            f"channels: bad name {quote(name)}: use lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter (at most 100)"
        )
    document, missing = expand_env(document, environ)
    problems += [
        f"{_place(label, where)}: environment variable {variable} is not set"
        for where, variable in missing
    ]
    try:
        channel = _CHANNEL.validate_python(document)
    except ValidationError as exc:
        unset_fields = {where for where, _variable in missing}
        for loc, message in validation_problems(exc):
            # A field whose variable is unset is already reported; its empty value is no news.
            if not any(loc[: len(where)] == where for where in unset_fields):
                problems.append(f"{_place(label, loc)}: {message}")
        return None, problems
    return (None if problems else channel), problems


def parse_channels(
    document: object, source: str, environ: Mapping[str, str] | None = None
) -> ChannelSet:
    """Validate a loaded `{"channels": {...}, "defaults": [...]}` document; every problem at
    once. `environ` (default: the process environment) resolves `${NAME}`."""
    env = os.environ if environ is None else environ
    if not isinstance(document, dict) or not isinstance(document.get("channels"), dict):
        raise ChannelsFileError(
            source, ["the file must be a mapping with a 'channels' mapping (name: channel)"]
        )
    problems = [
        f"unknown top-level field {quote(key)} (expected 'channels' and 'defaults')"
        for key in document
        if key not in ("channels", "defaults")
    ]
    channels: dict[str, Channel] = {}
    for name, item in document["channels"].items():
        channel, found = parse_channel(name, item, env)
        problems += found
        if channel is not None:
            channels[name] = channel
    defaults, found = parse_defaults(document.get("defaults", []), document["channels"], env)
    problems += found
    if problems:
        raise ChannelsFileError(source, problems)
    return ChannelSet(channels, defaults)


def parse_defaults(
    value: object, declared: Mapping[object, object], environ: Mapping[str, str]
) -> tuple[tuple[str, ...], list[str]]:
    """The `defaults` list: names of declared channels."""
    value, missing = expand_env(value, environ, ("defaults",))
    problems = [
        f"{'.'.join(where)}: environment variable {variable} is not set"
        for where, variable in missing
    ]
    if value is None:
        return (), problems
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        return (), [*problems, "defaults: must be a list of channel names"]
    problems += [
        f"defaults: unknown channel {quote(name)}"
        for name in dict.fromkeys(value)
        if name not in declared and name  # an unset variable is already reported
    ]
    return tuple(value), problems


def load_channels(path: Path | str | None, environ: Mapping[str, str] | None = None) -> ChannelSet:
    """Read and validate a channels file (None: no channels); raise ChannelsFileError naming
    every problem."""
    if path is None:
        return EMPTY
    return parse_channels(read_yaml(path, ChannelsFileError), str(path), environ)


# --- delivery -----------------------------------------------------------------------------------


class DeliveryError(Exception):
    """A notice was not delivered; the message is one line for an operator.

    `permanent` is True when retrying cannot help (a 4xx answer, an SMTP 5xx, a refused login,
    a URL apprise cannot use).
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


async def deliver(channel: Channel, notice: Notice) -> str:
    """Send one notice over one channel; return a short outcome ("HTTP 204 from ...").

    Raises DeliveryError for every failure. Safe to cancel at any await.
    """
    try:
        if isinstance(channel, WebhookChannel):
            return await send_webhook(channel, notice)
        if isinstance(channel, EmailChannel):
            return await send_email(channel, notice)
        return await send_apprise(channel, notice)
    except DeliveryError:
        raise
    except Exception as exc:  # a case the senders do not know yet: still one clear line
        message = scrub(f"cannot send: {describe_error(exc)}", channel_secrets(channel))
        raise DeliveryError(message) from None


@functools.cache
def user_agent() -> str:
    try:
        version = metadata.version("backup-monitor")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"backup-monitor/{version}"


def host_label(url: URL) -> str:
    """`host` or `host:port` when the URL gives a port: never the path, which may be a secret."""
    host = url.host or "?"
    return f"{host}:{url.explicit_port}" if url.explicit_port is not None else host


def seconds_text(seconds: float) -> str:
    return f"{seconds:g} s"


def scrub(text: str, secrets: Sequence[str]) -> str:
    """`text` on one line, with every secret (of 3 characters or more) replaced by `***`."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return " ".join(text.split())


def channel_secrets(channel: Channel) -> list[str]:
    """What no message about this channel may show."""
    if isinstance(channel, WebhookChannel):
        url = URL(channel.url)
        headers = [value.get_secret_value() for value in channel.headers.values()]
        return [url.raw_path_qs, url.password or "", *headers]
    if isinstance(channel, EmailChannel):
        return [channel.password.get_secret_value()] if channel.password else []
    return [piece for url in channel.urls for piece in url_fragments(url.get_secret_value())]


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


# --- webhook


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


async def send_webhook(channel: WebhookChannel, notice: Notice) -> str:
    url = URL(channel.url)
    where = channel.where
    secrets = channel_secrets(channel)
    body = json.dumps(notice.as_json(), ensure_ascii=False).encode()
    try:
        async with (
            asyncio.timeout(channel.timeout),
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session,
            session.post(
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


# --- email


MAX_CA_BYTES = 4 * 1024 * 1024  # a whole system bundle is about 220 KB
_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN (?:TRUSTED )?CERTIFICATE-----[A-Za-z0-9+/=\s]*"
    r"-----END (?:TRUSTED )?CERTIFICATE-----"
)


@functools.lru_cache(maxsize=16)
def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificates verified against the system's trust store, plus `ca_file` when given.
    Made once per `ca_file` (loading the store reads files: not on every send); a context is
    shared safely between connections."""
    context = ssl.create_default_context()
    if ca_file is not None:
        # Read by the guarded reader (a FIFO named here hung the start), not by OpenSSL.
        text = read_setting_file(ca_file, MAX_CA_BYTES).decode("latin-1")
        certificates = _PEM_CERTIFICATE.findall(text)  # as OpenSSL, ignore text around them
        if not certificates:
            raise ssl.SSLError("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file")
        context.load_verify_locations(cadata="\n".join(certificates))
    return context


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


async def send_email(channel: EmailChannel, notice: Notice) -> str:
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
                    message, sender=email.utils.parseaddr(channel.sender)[1], recipients=recipients
                )
        except Exception as exc:
            error = smtp_error(exc, channel)
            text = scrub(str(error), channel_secrets(channel))
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


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# --- apprise


def scheme_of(url: str) -> str:
    """The scheme of an apprise URL (`slack`), the only part of it a message may show."""
    scheme, separator, _rest = url.partition("://")
    return f"{scheme}://" if separator and scheme.isalnum() else "no scheme://"


def quiet_apprise() -> None:
    """Keep apprise's own log lines out of the service's logs: some quote secrets (a bad Slack
    token, for one). What failed is told by DeliveryError instead, secrets removed."""
    logging.getLogger("apprise").propagate = False


def parse_apprise_url(url: str) -> Any:
    """The apprise service for a URL, or None when apprise cannot use it."""
    import apprise  # importing apprise takes a third of a second: only when it is used

    quiet_apprise()
    return apprise.Apprise.instantiate(url)


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
    import apprise  # see parse_apprise_url

    quiet_apprise()
    notifier = apprise.Apprise()
    for index, url in enumerate(urls, start=1):
        if not notifier.add(url):
            raise DeliveryError(
                f"apprise URL #{index} ({scheme_of(url)}) is not one apprise can use",
                permanent=True,
            )
    return notifier


async def send_apprise(channel: AppriseChannel, notice: Notice) -> str:
    urls = [url.get_secret_value() for url in channel.urls]
    secrets = channel_secrets(channel)
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
        raise DeliveryError(f"timed out after {seconds_text(channel.timeout)} (apprise)") from None
    except Exception as exc:
        raise DeliveryError(scrub(f"apprise failed: {describe_error(exc)}", secrets)) from None
    with result:
        if result:
            return f"sent to {plural(len(urls), 'apprise service')}"
        failed = apprise_failures(result, secrets)
        if not failed:
            raise DeliveryError(f"apprise did not send ({result.status.name.lower()})")
        raise DeliveryError(
            f"{len(failed)} of {plural(len(urls), 'apprise service')} failed: {'; '.join(failed)}"
        )
