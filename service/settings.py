"""Service settings, read from the environment (and an optional `.env`).

Every secret setting (SECRET_SETTINGS) can also be given as a file: `DATABASE_URL_FILE=/run/
secrets/database_url` reads the value from that file (Docker and Kubernetes secrets, systemd
credentials: `API_TOKEN_FILE=%d/api_token` with `LoadCredential=`), its trailing newline dropped.
When both `X` and `X_FILE` are set, the file wins (an image's default `DATABASE_URL` is in every
container's environment). A file that cannot be read stops the start with one line naming the
variable and the path, never the content.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.config.settingfile import read_setting_file
from service.core.jobspec import TAG_PATTERN
from service.core.problems import problems_of
from service.core.scan_options import ScanOptions
from service.core.units import parse_size
from service.core.visible import quote

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./backup-monitor.db"
# The settings that may hold a secret: each can be read from the file `<NAME>_FILE` names.
SECRET_SETTINGS = ("database_url", "api_token", "metrics_token", "ping_key")
# A secret file is a line or a few: anything larger is a wrong path.
MAX_SECRET_BYTES = 64 * 1024
# Paths are shown whole in errors (a cut path cannot be checked).
PATH_LIMIT = 4096


class SettingsError(Exception):
    """A setting has a bad value; the message names the variable and is one line."""


def _read_secret(name: str, path: object) -> str:
    """The content of the file `<NAME>_FILE` names, its trailing line break dropped."""
    variable = f"{name.upper()}_FILE"
    try:
        data = read_setting_file(str(path), MAX_SECRET_BYTES)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SettingsError(
            f"invalid setting {variable}: cannot read {quote(str(path), PATH_LIMIT)}: {reason}"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(
            f"invalid setting {variable}: {quote(str(path), PATH_LIMIT)} is not UTF-8 text"
        ) from None
    return text.removesuffix("\n").removesuffix("\r")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        allow_inf_nan=False,
    )

    database_url: str = DEFAULT_DATABASE_URL
    scanner_interval_minutes: float = Field(default=15.0, gt=0, le=7 * 24 * 60)
    # Between full scans, jobs whose deadline passed are judged every TICK_SECONDS.
    tick_seconds: float = Field(default=5.0, ge=0.1, le=3600)
    # Replicas on one PostgreSQL database split the listings (service/store/fleet.py). Each is
    # named REPLICA_NAME (default: host name and process id) and beats every third of
    # FLEET_LEASE_SECONDS; one that stops beating loses its share after FLEET_LEASE_SECONDS.
    replica_name: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$"
    )
    fleet_lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # Colon-separated list (like PATH); empty means "no restriction".
    scan_roots: Annotated[tuple[Path, ...], NoDecode] = ()
    jobs_file: Path | None = None
    auto_migrate: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # How long one source listing may take before the job is reported as unknown.
    source_timeout_seconds: float = Field(default=300.0, gt=0)
    # When set, /metrics asks for `Authorization: Bearer <METRICS_TOKEN>`.
    metrics_token: SecretStr | None = None
    # A read-write API token from the environment, for bootstrapping (see `tokens create`).
    api_token: SecretStr | None = None
    # Notification channels (YAML); without it, status changes are recorded but not sent.
    channels_file: Path | None = None
    # The address people reach the service at (https://backups.example.com): notices link to
    # the job's page under it.
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    # Delivery: the first retry comes after NOTIFY_RETRY_SECONDS, each next one after twice as
    # long (at most an hour); after NOTIFY_MAX_ATTEMPTS tries the delivery is given up.
    notify_retry_seconds: float = Field(default=30.0, gt=0, le=3600)
    notify_max_attempts: int = Field(default=24, ge=1, le=1000)
    # How often the dispatcher looks for work, and how long it may hold one delivery before
    # another replica (or the next start) takes it over.
    notify_poll_seconds: float = Field(default=2.0, ge=0.05, le=600)
    notify_lease_seconds: float = Field(default=300.0, ge=1, le=86400)
    # Pings and finished notifications older than this are deleted, hourly (each job keeps its
    # newest pings, those its status is judged from, however old).
    retention_days: float = Field(default=90.0, gt=0, le=36500)
    # A client has this long to send a request's head (line and headers) once it connected or
    # began a next request; then its connection is closed.
    http_header_timeout_seconds: float = Field(default=15.0, ge=0.5, le=300)
    # Connections open at once; lowered to fit the process's open-file limit. At the limit, a new
    # connection replaces the one idle the longest (a half-sent request, a quiet keep-alive).
    http_max_connections: int = Field(default=1000, ge=4, le=1_000_000)
    # Local sources are watched with the OS's file notifications: a file landing is judged
    # within seconds. The watched set follows the jobs every WATCH_REFRESH_SECONDS.
    watch_sources: bool = True
    # `serve` runs on uvloop (libuv: about 1.2x the pings per second of asyncio's own loop);
    # false: asyncio's loop, e.g. to rule uvloop out when chasing a bug.
    uvloop: bool = True
    watch_refresh_seconds: float = Field(default=30.0, ge=0.1, le=3600)
    # Verification (jobs with `verify:`): the most bytes per second all verifications of this
    # process read together (a size: 200MB, 1GiB or bytes), how many artifacts are verified at
    # once (worker threads; one per job at a time), how often due work is looked for, how long a
    # verifier holds an artifact before another replica may take it over (renewed while it
    # reads), and when an artifact that changed while it was read is tried again.
    verify_bytes_per_second: Annotated[int, BeforeValidator(parse_size), Field(ge=1)] = 200_000_000
    verify_workers: int = Field(default=2, ge=1, le=64)
    verify_poll_seconds: float = Field(default=5.0, ge=0.05, le=3600)
    verify_lease_seconds: float = Field(default=300.0, ge=1, le=86400)
    verify_retry_seconds: float = Field(default=300.0, ge=0.01, le=86400)
    # Zip-bomb limits: an archive whose content is more than VERIFY_MAX_RATIO times its size,
    # or more than VERIFY_MAX_EXPANDED bytes, is not read further (reported as corrupt).
    verify_max_ratio: float = Field(default=1100.0, ge=1, le=1e9)
    verify_max_expanded: Annotated[int, BeforeValidator(parse_size), Field(ge=1)] = 2**40
    # How long one repository check (restic check, borg check) may take.
    verify_check_timeout_seconds: float = Field(default=3600.0, gt=0, le=7 * 86400)
    # Tags whose status page (/status/{tag}) anyone may read, without a token: job names and
    # statuses only. Comma-separated; none by default (the page is opt-in, per tag).
    public_status_tags: Annotated[tuple[str, ...], NoDecode] = ()

    # The project's ping key: `/ping/<PING_KEY>/<job name>` pings a job by its name (Healthchecks'
    # slug URLs), and `?create=1` creates a missing heartbeat job with the schedule below.
    ping_key: SecretStr | None = None
    ping_create_every_seconds: int = Field(default=86400, ge=1, le=10 * 366 * 86400)
    ping_create_grace_seconds: int = Field(default=3600, ge=0, le=10 * 366 * 86400)
    # One line per HTTP request (method, path, status, duration, request id) on the logger
    # `service.access`; off by default (a busy ping endpoint writes a lot).
    access_log: bool = False

    # Where the secret settings are read from when given as files (see the module's docstring);
    # read once, at start-up, into the settings above. Not part of the settings' dump.
    database_url_file: Path | None = Field(default=None, exclude=True)
    api_token_file: Path | None = Field(default=None, exclude=True)
    metrics_token_file: Path | None = Field(default=None, exclude=True)
    ping_key_file: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        given = {str(key).lower(): key for key in data}
        for name in SECRET_SETTINGS:
            file_key = given.get(f"{name}_file")
            if file_key is None or data[file_key] in (None, ""):
                continue
            # The file wins over the variable: an image's default (the Dockerfile's
            # DATABASE_URL) is in every container's environment, and a secret given as a file
            # is the operator's later, deliberate choice.
            data = {key: value for key, value in data.items() if str(key).lower() != name}
            data[name] = _read_secret(name, data[file_key])
        return data

    @field_validator("ping_key")
    @classmethod
    def _ping_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            key = value.get_secret_value()
            if not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", key):
                raise ValueError(
                    "must be 16 to 64 letters, digits, '-' or '_' (try `openssl rand -hex 16`)"
                )
        return value

    @field_validator("api_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (try `openssl rand -hex 32`)")
        return value

    @property
    def scan_options(self) -> ScanOptions:
        """What every scan needs from the settings."""
        return ScanOptions(scan_roots=self.scan_roots, source_timeout=self.source_timeout_seconds)

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError(
                "must start with postgresql+asyncpg:// or sqlite+aiosqlite:// "
                f"(got {quote(value.split('://', 1)[0])})"
            )
        return value

    @field_validator("scan_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(os.pathsep)]
            return tuple(Path(p) for p in parts if p)
        return value

    @field_validator("scan_roots")
    @classmethod
    def _absolute_roots(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        for root in value:
            if not root.is_absolute():
                raise ValueError(f"{quote(str(root))} is not an absolute path")
        return tuple(Path(os.path.realpath(root)) for root in value)

    @field_validator("public_status_tags", mode="before")
    @classmethod
    def _split_tags(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(dict.fromkeys(tag.strip() for tag in value.split(",") if tag.strip()))
        return value

    @field_validator("public_status_tags")
    @classmethod
    def _tags_are_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tag in value:
            if not re.fullmatch(TAG_PATTERN, tag):
                raise ValueError(
                    f"{quote(tag)} is not a tag (letters, digits, '_', '.', ':', '-', at most 64)"
                )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; raise SettingsError with one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = problems_of(exc)[0]
        name = first.loc[0].upper() if first.loc else "settings"
        message = " ".join(first.message.split())
        raise SettingsError(f"invalid setting {name}: {message}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
