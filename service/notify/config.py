"""Notification channels: their declarations, and the channels file that holds them.

```yaml
defaults: [ops-hook]            # the channels of jobs that name none (optional)
channels:
  ops-hook: {type: webhook, url: "https://hooks.example.com/x", headers: {X-Token: "${TOKEN}"}}
  ops-mail: {type: email, host: smtp.example.com, from: bm@example.com, to: [ops@example.com]}
  chat: {type: apprise, urls: ["ntfy://ntfy.sh/topic"]}
```

`${NAME}` in any string value is replaced by the environment variable NAME (`$${NAME}` is the
literal text `${NAME}`), or by the content of the file NAME_FILE names when that is set (its
trailing newline dropped; the file wins: Docker and Kubernetes secrets, systemd credentials),
as the service's own secret settings are read. Secrets (passwords, header values, apprise
URLs) are SecretStr: they show as `**********` in reprs, and no error message quotes them.

What is checked here is what can be checked before sending: a CA file that loads, an apprise URL
that apprise understands. How a notice goes out is service.notify.transports' business; this
module imports none of it.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import os
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

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

from service.config.settingfile import read_setting_file
from service.config.yamlfile import FileProblems, read_yaml
from service.core.jobspec import JOB_NAME_PATTERN
from service.core.problems import problems_of
from service.core.units import parse_duration
from service.core.visible import quote
from service.db.errors import describe_error

CHANNEL_TYPES = ("webhook", "email", "apprise")
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
MAX_TIMEOUT = 600.0  # seconds
# Headers the webhook sets itself; a channel may not replace them.
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding",
                              "x-event-id", "idempotency-key"})  # fmt: skip
MAX_CA_BYTES = 4 * 1024 * 1024  # a whole system bundle is about 220 KB
_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN (?:TRUSTED )?CERTIFICATE-----[A-Za-z0-9+/=\s]*"
    r"-----END (?:TRUSTED )?CERTIFICATE-----"
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ENV_REFERENCE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(JOB_NAME_PATTERN)


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


# A secret file holds a line or a few: anything larger is a wrong path.
MAX_SECRET_FILE_BYTES = 64 * 1024


def _variable(name: str, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """NAME's value, from the file NAME_FILE names when it is set (the file wins, as for the
    service's own settings), else from NAME: (value, None), or (None, why not)."""
    path = environ.get(f"{name}_FILE")
    if not path:
        if name in environ:
            return environ[name], None
        return None, f"environment variable {name} is not set"
    try:
        data = read_setting_file(path, MAX_SECRET_FILE_BYTES)
        text = data.decode("utf-8")
    except OSError as exc:
        return None, f"{name}_FILE: cannot read {quote(path, 4096)}: {exc.strerror or exc}"
    except UnicodeDecodeError:
        return None, f"{name}_FILE: {quote(path, 4096)} is not UTF-8 text"
    return text.removesuffix("\n").removesuffix("\r"), None


def expand_env(
    value: object, environ: Mapping[str, str], where: tuple[str, ...] = ()
) -> tuple[object, list[tuple[tuple[str, ...], str]]]:
    """Replace `${NAME}` in every string of a loaded document (NAME_FILE's content, or NAME).

    Returns the new document and the variables that could not be had, each with the place it
    was named and why (`environment variable NAME is not set`, `NAME_FILE: cannot read ...`).
    """
    missing: list[tuple[tuple[str, ...], str]] = []
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            escaped, name = match.groups()
            if escaped:
                return "${" + name + "}"
            found, problem = _variable(name, environ)
            if problem is not None:
                missing.append((where, problem))
                return ""
            return found or ""

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
    for problem in problems_of(exc):
        loc, message = problem.loc, problem.message
        if loc[:1] and loc[0] in CHANNEL_TYPES:
            loc = loc[1:]  # the discriminated union's tag
        if problem.type == "union_tag_not_found":
            loc, message = ("type",), f"required: one of {', '.join(CHANNEL_TYPES)}"
        elif problem.type == "union_tag_invalid":
            got = problem.input.get("type") if isinstance(problem.input, dict) else None
            loc = ("type",)
            message = f"unknown channel type {quote(got)} (expected {', '.join(CHANNEL_TYPES)})"
        elif problem.type == "model_attributes_type":
            message = "a channel is a mapping with a 'type' and its fields"
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
    problems += [f"{_place(label, where)}: {problem}" for where, problem in missing]
    try:
        channel = _CHANNEL.validate_python(document)
    except ValidationError as exc:
        unset_fields = {where for where, _problem in missing}
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
    problems = [f"{'.'.join(where)}: {problem}" for where, problem in missing]
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


# --- what the declarations check before any send ---------------------------------------------


def host_label(url: URL) -> str:
    """`host` or `host:port` when the URL gives a port: never the path, which may be a secret."""
    host = url.host or "?"
    return f"{host}:{url.explicit_port}" if url.explicit_port is not None else host


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
