"""The declaration of a backup job: one pydantic model shared by the YAML file, the database
and the API. Pure data and validation; no I/O except resolving a local path against SCAN_ROOTS.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic import Tag as UnionTag

from service.core.paths import path_within_roots
from service.core.problems import problems_of
from service.core.units import (
    DURATION_PATTERN,
    MAX_DURATION,
    MAX_SIZE,
    MAX_UNIT_TEXT,
    PERCENT_PATTERN,
    SIZE_PATTERN,
    parse_duration,
    parse_percent,
    parse_size,
)
from service.core.visible import quote

JOB_NAME_PATTERN = r"^[a-z][a-z0-9_.-]{0,99}$"
# Exactly the 5 fields the README promises (cronsim would also take a 6th, seconds, field).
CRON_PATTERN = r"^[ \t]*[^ \t]+([ \t]+[^ \t]+){4}[ \t]*$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
DEFAULT_GRACE = 3600
# IANA zone names: components of letters, digits, '_', '+', '-' (the longest has 32 characters).
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
MAX_ZONE_LENGTH = 64
# Every text of a declaration is bounded: a 300 KB glob froze the service while it compiled,
# and a value of any size is stored, answered and compared on every scan.
MAX_DESCRIPTION = 2000
MAX_TAGS = 50
MAX_PATH = 4096  # PATH_MAX on Linux
MAX_PATTERN = 1024  # a file name has at most 255 bytes; a glob may spell classes out
MAX_CRON = 500  # every field written out as a list takes about 370
MAX_CHANNELS = 50
MAX_COUNT = 10**9
MAX_EXCLUDES = 50
# notify.after: consecutive bad judgements before a problem is told (1: at once).
MAX_AFTER = 100
# A file modified this recently (or changed since the previous listing) may still be written.
DEFAULT_SETTLE = 120
# Names that writers use while a file is incomplete, and dot-files (rsync's temporary copies).
DEFAULT_EXCLUDE = ("*.tmp", "*.part", "*.partial", ".*")


def _no_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("expected a whole number, got a boolean")
    return value


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError("Input should be greater than 0")
    return value


def _count(value: int) -> int:
    if value < 1:
        raise ValueError("Input should be greater than or equal to 1")
    if value > MAX_COUNT:
        raise ValueError(f"Input should be less than or equal to {MAX_COUNT}")
    return value


def _number_or_text(number: dict[str, Any], pattern: str, text: str) -> WithJsonSchema:
    """What the API documents for a field that also takes a unit string ("1h", "1MiB")."""
    words = {"type": "string", "pattern": pattern, "maxLength": MAX_UNIT_TEXT, "examples": [text]}
    return WithJsonSchema({"anyOf": [number, words]}, "validation")


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("contains a NUL character")
    return value


# The pattern tells API clients (and the OpenAPI document) what _no_nul refuses.
_NO_NUL = Field(json_schema_extra={"pattern": "^[^\\x00]*$"})


def _seconds(minimum: int, example: str) -> WithJsonSchema:
    number = {"type": "integer", "minimum": minimum, "maximum": MAX_DURATION}
    return _number_or_text({**number, "description": "seconds"}, DURATION_PATTERN, example)


Duration = Annotated[int, BeforeValidator(parse_duration), _seconds(0, "1h30m")]
PositiveDuration = Annotated[Duration, AfterValidator(_positive), _seconds(1, "1d")]
Count = Annotated[
    int,
    BeforeValidator(_no_bool),
    AfterValidator(_count),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_COUNT}),
]
AfterCount = Annotated[
    int,
    BeforeValidator(_no_bool),
    Field(ge=1, le=MAX_AFTER),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_AFTER}),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    _number_or_text(
        {"type": "integer", "minimum": 0, "maximum": MAX_SIZE, "description": "bytes"},
        SIZE_PATTERN,
        "1MiB",
    ),
]
Percent = Annotated[
    float,
    BeforeValidator(parse_percent),
    _number_or_text({"type": "number", "minimum": 0, "maximum": 100}, PERCENT_PATTERN, "50%"),
]
Tag = Annotated[str, Field(pattern=TAG_PATTERN)]
Tags = Annotated[tuple[Tag, ...], Field(max_length=MAX_TAGS)]
# The bound before the validator, so that it applies to the text (not "items after validation").
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION), AfterValidator(_no_nul), _NO_NUL]


def _exclude_glob(value: str) -> str:
    if not value or "/" in value or "\0" in value:
        raise ValueError("a glob on the file name: not empty, no '/' or NUL")
    return value


ExcludeGlob = Annotated[
    str,
    Field(max_length=MAX_PATTERN, json_schema_extra={"pattern": "^[^/\\x00]+$"}),
    AfterValidator(_exclude_glob),
]
# Notification channels are named like jobs (the names come from CHANNELS_FILE).
CHANNEL_NAME_PATTERN = JOB_NAME_PATTERN
ChannelName = Annotated[str, Field(pattern=CHANNEL_NAME_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _NamedFiles(_Strict):
    """What the sources of named files share (local, s3, sftp): which names are backups, how
    deep to look, and when the newest one is finished."""

    NAMED: ClassVar[str] = "the file name"  # what `pattern` and `exclude` match, in messages

    pattern: str = Field(
        default="*", max_length=MAX_PATTERN, json_schema_extra={"pattern": "^[^/\\x00]+$"}
    )
    recursive: bool = False
    # Globs on the name for files that are not backups; None: DEFAULT_EXCLUDE. A given list
    # replaces the default (`[]`: nothing excluded).
    exclude: tuple[ExcludeGlob, ...] | None = Field(default=None, max_length=MAX_EXCLUDES)
    # A newest file modified within `settle` seconds, or changed since the previous listing, is
    # still being written: sizes are judged on the newest settled file. 0: never.
    settle: Duration = DEFAULT_SETTLE

    @property
    def excluded(self) -> tuple[str, ...]:
        """The globs in force: the declared ones, or the default temporary names."""
        return DEFAULT_EXCLUDE if self.exclude is None else self.exclude

    @field_validator("pattern")
    @classmethod
    def _name_glob(cls, value: str) -> str:
        if not value or "/" in value or "\0" in value:
            raise ValueError(f"pattern is a glob on {cls.NAMED}: not empty, no '/' or NUL")
        return value


class LocalSource(_NamedFiles):
    type: Literal["local"] = "local"
    path: str = Field(max_length=MAX_PATH, json_schema_extra={"pattern": "^/[^\\x00]*$"})

    @field_validator("path")
    @classmethod
    def _absolute_and_allowed(cls, value: str, info: ValidationInfo) -> str:
        if "\0" in value:
            raise ValueError("path contains a NUL character")
        if not os.path.isabs(value):
            raise ValueError(f"path must be absolute (got {quote(value)})")
        roots: Sequence[Path] = (info.context or {}).get("scan_roots") or ()
        if roots and not path_within_roots(value, roots):
            allowed = ", ".join(str(r) for r in roots)
            raise ValueError(
                f"{value} resolves to {os.path.realpath(value)}, outside SCAN_ROOTS ({allowed})"
            )
        return os.path.normpath(value)

    def location(self) -> str:
        """Where its backups are, as messages say it (every kind of source has these two)."""
        return f"{self.path} or its subdirectories" if self.recursive else self.path

    def missing(self) -> str:
        """What a job with no backup at all lacks, as a message says it."""
        return f"no backup matching {self.pattern} in {self.location()}"


# A secret is never written in a declaration (it would be stored, answered by the API and shown
# on the dashboard): a declaration names where it comes from, `${VARIABLE}` (read from the
# service's environment each time it is used) or a `*_file` field (read each time it is used).
SECRET_REF_PATTERN = r"^\$\{[A-Za-z_][A-Za-z0-9_]{0,127}\}$"  # noqa: S105 (a pattern)
_SECRET_REF = re.compile(SECRET_REF_PATTERN)


def _secret_ref(value: str) -> str:
    # The message never repeats the value: it may be the secret itself.
    if not _SECRET_REF.match(value):
        raise ValueError(
            "a secret is not written in a declaration: give ${VARIABLE} (an environment "
            "variable of the service) or the matching *_file field"
        )
    return value


SecretRef = Annotated[
    str,
    Field(max_length=140, json_schema_extra={"pattern": SECRET_REF_PATTERN}),
    AfterValidator(_secret_ref),
]
SecretFile = Annotated[
    str, Field(max_length=MAX_PATH, json_schema_extra={"pattern": "^/[^\\x00]*$"}),
    AfterValidator(lambda value: _absolute(value, "a secret file")),
]  # fmt: skip
# JSON Schema for the rules between fields that validators enforce, so the OpenAPI document
# (and a client generating requests from it) knows them: a field "given" is present and not
# null; "absent" is missing or null.
_GIVEN: dict[str, Any] = {"not": {"type": "null"}}
_NO_NUL_SCHEMA: dict[str, Any] = {"pattern": "^[^\\x00]*$"}
_ABSENT: dict[str, Any] = {"type": "null"}


def _given(*names: str, absent: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "required": list(names),
        "properties": {**{name: _GIVEN for name in names}, **{name: _ABSENT for name in absent}},
    }


def _not_both(first: str, second: str) -> dict[str, Any]:
    return {"not": _given(first, second)}


def _case_free(word: str) -> str:
    """An ECMA regex for `word` in any case (JSON Schema has no case-insensitive flag)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


# Environment variables a backup tool is run with (BORG_RSH, its backend's credentials). A
# value may hold `${VARIABLE}` references (expanded when the tool runs); a variable whose name
# says it holds a secret must be exactly one such reference.
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_SECRET_WORDS = ("PASS", "SECRET", "TOKEN", "CREDENTIAL")
_SECRET_NAME = re.compile("|".join([*_SECRET_WORDS, "_KEY$", "^KEY$"]), re.IGNORECASE)
_SECRET_NAME_SCHEMA = "|".join(
    [*map(_case_free, _SECRET_WORDS), f"{_case_free('_KEY')}$", f"^{_case_free('KEY')}$"]
)


def _tool_environment(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        _no_nul(text)
        if _SECRET_NAME.search(name):
            try:
                _secret_ref(text)
            except ValueError:
                raise ValueError(
                    f"{name} holds a secret: give it as ${{VARIABLE}} (an environment variable "
                    "of the service), not its value"
                ) from None
    return value


ToolEnvironment = Annotated[
    dict[
        Annotated[str, Field(pattern=ENV_NAME_PATTERN)],
        Annotated[str, Field(max_length=4096, json_schema_extra=_NO_NUL_SCHEMA)],
    ],
    Field(
        max_length=50,
        # Written out whole: pydantic states the key pattern and the values' schema in its own
        # `patternProperties`, which this one would replace (any key, any value documented).
        json_schema_extra={
            "propertyNames": {"pattern": ENV_NAME_PATTERN},
            "additionalProperties": {"type": "string", "maxLength": 4096, **_NO_NUL_SCHEMA},
            "patternProperties": {
                _SECRET_NAME_SCHEMA: {"type": "string", "pattern": SECRET_REF_PATTERN}
            },
        },
    ),
    AfterValidator(_tool_environment),
]
MAX_HOST = 253
MAX_KEY = 1024  # S3 keys have at most 1024 bytes
# A remote source may take this long to list, instead of SOURCE_TIMEOUT_SECONDS.
SourceTimeout = Annotated[
    int,
    BeforeValidator(parse_duration),
    AfterValidator(_positive),
    _seconds(1, "10m"),
]


def _absolute(value: str, what: str) -> str:
    if "\0" in value:
        raise ValueError(f"{what} contains a NUL character")
    if not value.startswith("/"):
        raise ValueError(f"{what} must be an absolute path (got {quote(value)})")
    return value


def _one_secret(given: Sequence[object | None], names: str) -> None:
    if sum(value is not None for value in given) > 1:
        raise ValueError(f"give one of {names}, not several")


class S3Source(_NamedFiles):
    """Objects in an S3-compatible bucket. An artifact is an object: its key below `prefix`,
    size, last-modified time and ETag."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "properties": {
                        name: _ABSENT
                        for name in ("access_key_id", "secret_access_key", "secret_access_key_file")
                    }
                },
                _given("access_key_id", "secret_access_key", absent=["secret_access_key_file"]),
                _given("access_key_id", "secret_access_key_file", absent=["secret_access_key"]),
            ]
        }
    )

    NAMED: ClassVar[str] = "the object's name"

    type: Literal["s3"]
    bucket: str = Field(
        min_length=3, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]$"
    )
    # Keys below this prefix (as is: "db/" lists db/x, "db" also lists db-old/x).
    prefix: str = Field(
        default="", max_length=MAX_KEY, json_schema_extra={"pattern": "^[^\\x00]*$"}
    )
    # An object appears whole once its upload is finished: nothing to wait for by default.
    settle: Duration = 0
    endpoint_url: str | None = Field(
        default=None, max_length=2048, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
    )
    region: str | None = Field(default=None, max_length=64, pattern=r"^[a-z0-9-]+$")
    addressing: Literal["auto", "path", "virtual"] = "auto"
    # Not secret (it names the key); may still be given as ${VARIABLE}.
    access_key_id: str | None = Field(default=None, max_length=256)
    secret_access_key: SecretRef | None = None
    secret_access_key_file: SecretFile | None = None
    timeout: SourceTimeout | None = None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _no_nul(value)

    @model_validator(mode="after")
    def _credentials(self) -> S3Source:
        _one_secret((self.secret_access_key, self.secret_access_key_file),
                    "secret_access_key and secret_access_key_file")  # fmt: skip
        has_secret = self.secret_access_key is not None or self.secret_access_key_file is not None
        if has_secret != (self.access_key_id is not None):
            raise ValueError(
                "give access_key_id with secret_access_key (or secret_access_key_file), or "
                "neither (the standard AWS credential chain)"
            )
        return self

    def location(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}"
        where += " and below" if self.recursive else ""
        return where if self.endpoint_url is None else f"{where} at {self.endpoint_url}"

    def missing(self) -> str:
        return f"no object matching {self.pattern} in {self.location()}"


class SftpSource(_NamedFiles):
    """Files in a directory of an SFTP host. An artifact is a file: its path below `path`,
    size and modification time. Host keys are always verified against `known_hosts`."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [_given("key_file"), _given("password"), _given("password_file")],
            **_not_both("password", "password_file"),
        }
    )

    type: Literal["sftp"]
    host: str = Field(max_length=MAX_HOST, pattern=r"^[A-Za-z0-9_.:\[\]-]+$")
    port: int = Field(default=22, ge=1, le=65535)
    username: str = Field(max_length=256, pattern=r"^[^\s@:/\x00]+$")
    key_file: SecretFile | None = None
    password: SecretRef | None = None
    password_file: SecretFile | None = None
    # The host's public keys, OpenSSH's format; an unknown or changed key is refused.
    known_hosts: SecretFile
    path: str = Field(max_length=MAX_PATH, json_schema_extra={"pattern": "^/[^\\x00]*$"})
    timeout: SourceTimeout | None = None

    @field_validator("path")
    @classmethod
    def _remote_path(cls, value: str) -> str:
        return _absolute(value, "path")

    @model_validator(mode="after")
    def _credentials(self) -> SftpSource:
        _one_secret((self.password, self.password_file), "password and password_file")
        if self.key_file is None and self.password is None and self.password_file is None:
            raise ValueError("give key_file, password or password_file")
        return self

    def location(self) -> str:
        where = f"sftp://{self.username}@{self.host}:{self.port}{self.path}"
        return f"{where} or its subdirectories" if self.recursive else where

    def missing(self) -> str:
        return f"no backup matching {self.pattern} in {self.location()}"


def _repository(value: str) -> str:
    """A restic or borg repository string: never with a password inside a URL."""
    _no_nul(value)
    if re.search(_PASSWORD_IN_URL, value):
        raise ValueError(
            "the repository holds a password (user:password@): give it through env "
            "(a ${VARIABLE}) instead"
        )
    return value


_PASSWORD_IN_URL = r"://[^/@\s]*:[^/@\s]*@"  # noqa: S105 (a pattern)
Repository = Annotated[
    str,
    Field(
        min_length=1, max_length=MAX_PATH,
        json_schema_extra={"pattern": "^[^\\x00]*$", "not": {"pattern": _PASSWORD_IN_URL}},
    ),
    AfterValidator(_repository),
]  # fmt: skip


AbsolutePath = Annotated[
    str,
    Field(max_length=MAX_PATH, json_schema_extra={"pattern": "^/[^\\x00]*$"}),
    AfterValidator(lambda value: _absolute(value, "a path")),
]


class ResticSource(_Strict):
    """A restic repository. An artifact is a snapshot: its id, time, host, tags, paths and its
    restore size (computed once: a snapshot never changes)."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                _given("password", absent=["password_file"]),
                _given("password_file", absent=["password"]),
            ]
        }
    )

    type: Literal["restic"]
    # Any restic backend: a path, sftp:, s3:, rest:, b2:, ...
    repository: Annotated[
        str, Field(min_length=1, max_length=MAX_PATH), AfterValidator(_repository)
    ]
    password: SecretRef | None = None
    password_file: SecretFile | None = None
    # Only snapshots of this host, with all these tags, of these paths (restic's own filters).
    host: str | None = Field(default=None, max_length=MAX_HOST)
    tags: tuple[Tag, ...] = Field(default=(), max_length=MAX_TAGS)
    paths: tuple[AbsolutePath, ...] = Field(default=(), max_length=MAX_EXCLUDES)
    # The backend's credentials (AWS_ACCESS_KEY_ID, RESTIC_REST_PASSWORD, ...).
    env: ToolEnvironment = Field(default_factory=dict)
    settle: Duration = 0  # a snapshot exists only once it is complete
    timeout: SourceTimeout | None = None

    @model_validator(mode="after")
    def _credentials(self) -> ResticSource:
        _one_secret((self.password, self.password_file), "password and password_file")
        if self.password is None and self.password_file is None:
            raise ValueError("give password (a ${VARIABLE}) or password_file")
        return self

    def location(self) -> str:
        return f"restic repository {self.repository}"

    def missing(self) -> str:
        kept = [f"host {self.host}"] if self.host else []
        kept += [f"tags {', '.join(self.tags)}"] if self.tags else []
        return f"no snapshot{' of ' + ' and '.join(kept) if kept else ''} in {self.location()}"


class BorgSource(_Strict):
    """A borg repository. An artifact is an archive: its name, time, and original, compressed
    and deduplicated sizes (computed once: an archive never changes)."""

    model_config = ConfigDict(json_schema_extra=_not_both("passphrase", "passphrase_file"))

    type: Literal["borg"]
    repository: Annotated[
        str, Field(min_length=1, max_length=MAX_PATH), AfterValidator(_repository)
    ]
    passphrase: SecretRef | None = None
    passphrase_file: SecretFile | None = None
    # Only archives whose name matches this glob (borg's --glob-archives).
    archives: str | None = Field(default=None, max_length=MAX_PATTERN)
    env: ToolEnvironment = Field(default_factory=dict)  # BORG_RSH, ...
    settle: Duration = 0  # an archive exists only once it is complete
    timeout: SourceTimeout | None = None

    @model_validator(mode="after")
    def _credentials(self) -> BorgSource:
        _one_secret((self.passphrase, self.passphrase_file), "passphrase and passphrase_file")
        return self

    def location(self) -> str:
        return f"borg repository {self.repository}"

    def missing(self) -> str:
        kept = f" matching {self.archives}" if self.archives else ""
        return f"no archive{kept} in {self.location()}"


RemoteSource = S3Source | SftpSource | ResticSource | BorgSource
SOURCE_TYPES = ("local", "s3", "sftp", "restic", "borg")


def source_type(value: object) -> str | None:
    """The kind of a declared source: its `type`, "local" when left out (as before there were
    other kinds)."""
    if isinstance(value, dict):
        kind = value.get("type", "local")
        return kind if isinstance(kind, str) else None
    # A declared source; anything else is refused as the local kind refuses it ("should be a
    # valid dictionary").
    return getattr(value, "type", "local")


Source = Annotated[
    Annotated[LocalSource, UnionTag("local")]
    | Annotated[S3Source, UnionTag("s3")]
    | Annotated[SftpSource, UnionTag("sftp")]
    | Annotated[ResticSource, UnionTag("restic")]
    | Annotated[BorgSource, UnionTag("borg")],
    Discriminator(
        source_type,
        custom_error_type="source_type",
        custom_error_message=f"type must be one of {', '.join(SOURCE_TYPES)}",
    ),
]


class Schedule(_Strict):
    """Either `every` (seconds between backups) or `cron` (with an optional time zone)."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["every"],
                    "properties": {
                        "every": {"not": {"type": "null"}},
                        "cron": {"type": "null"},
                        "timezone": {"type": "null"},
                    },
                },
                {
                    "required": ["cron"],
                    "properties": {
                        "cron": {"type": "string", "minLength": 1, "pattern": CRON_PATTERN},
                        "every": {"type": "null"},
                    },
                },
            ]
        }
    )

    every: PositiveDuration | None = None
    cron: str | None = Field(default=None, max_length=MAX_CRON)
    # Not max_length: a long name is an unknown time zone like any other (zone_info says so).
    timezone: str | None = Field(default=None, json_schema_extra={"maxLength": MAX_ZONE_LENGTH})

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            zone_info(value)
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Schedule:
        if (self.every is None) == (self.cron is None):
            raise ValueError("give exactly one of 'every' (a duration) or 'cron'")
        if self.cron is not None:
            check_cron(self.cron, self.zone)
        elif self.timezone is not None:
            raise ValueError("timezone applies to cron schedules only")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return zone_info(self.timezone or "UTC")


class Rules(_Strict):
    # None means "not set". An unset min_size still rejects an empty (0-byte) file; set
    # min_size: 0 to accept empty backups.
    min_size: Size | None = None
    max_size: Size | None = None
    min_count: Count | None = None
    max_size_drop: Percent | None = None
    # Runs reported by pings: longer than max_duration is `run_overdue` (critical), a success
    # quicker than min_duration is `run_too_short` (warning: a dump that "succeeds" in 2 s).
    max_duration: Duration | None = None
    min_duration: Duration | None = None

    @model_validator(mode="after")
    def _ordered_sizes(self) -> Rules:
        low, high = self.min_size, self.max_size
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_size ({low} bytes) is larger than max_size ({high} bytes)")
        short, long = self.min_duration, self.max_duration
        if short is not None and long is not None and short > long:
            raise ValueError(f"min_duration ({short} s) is longer than max_duration ({long} s)")
        return self


class Notify(_Strict):
    # `for` is a Python keyword: the field is `for_`, named `for` in YAML, the API and storage.
    model_config = ConfigDict(serialize_by_alias=True)

    # None: the default channels of CHANNELS_FILE; an empty list: no notifications at all.
    channels: tuple[ChannelName, ...] | None = Field(default=None, max_length=MAX_CHANNELS)
    # While the job stays critical, repeat the notice this often (None: once).
    renotify_every: PositiveDuration | None = None
    # A problem is told once the job has been bad (warning, critical, unknown) for `after`
    # consecutive judgements and for `for` seconds without a break; both must hold (the rule
    # is service.notify.events.hold_of). Recoveries are told only for problems told.
    after: AfterCount = 1
    for_: Duration = Field(default=0, alias="for")

    @field_validator("channels")
    @classmethod
    def _known_channels(
        cls, value: tuple[str, ...] | None, info: ValidationInfo
    ) -> tuple[str, ...] | None:
        if value is None:
            return None
        known: Collection[str] | None = (info.context or {}).get("channels")
        unknown = [name for name in value if known is not None and name not in known]
        if unknown:
            names = ", ".join(sorted(known)) if known else "none: CHANNELS_FILE is not set"
            raise ValueError(f"no channel {', '.join(unknown)} (configured channels: {names})")
        return tuple(dict.fromkeys(value))


# The most periods of each kind a retention policy may name (10 years of days, of weeks...).
MAX_RETENTION = {"daily": 3660, "weekly": 530, "monthly": 1200, "yearly": 100}
RETENTION_KINDS = tuple(MAX_RETENTION)


def _periods(kind: str) -> Any:
    return Field(default=0, ge=0, le=MAX_RETENTION[kind], description=f"{kind} slots kept")


RetentionCount = Annotated[int, BeforeValidator(_no_bool)]


class Retention(_Strict):
    """What the job's backup tool is meant to keep, grandfather-father-son as restic's and
    borg's `--keep-daily/weekly/monthly/yearly` define it: one backup in each of the last
    `daily` calendar days, `weekly` ISO weeks, `monthly` months and `yearly` years, in the
    schedule's time zone. The slots checked are service.core.retention_slots's."""

    daily: RetentionCount = _periods("daily")
    weekly: RetentionCount = _periods("weekly")
    monthly: RetentionCount = _periods("monthly")
    yearly: RetentionCount = _periods("yearly")
    # A gap is critical instead of a warning.
    strict: bool = False

    def count(self, kind: str) -> int:
        """How many slots of `kind` (daily, weekly, monthly, yearly) the policy keeps."""
        return int(getattr(self, kind))


class Report(_Strict):
    """A digest of the job's restore points, sent to `channel` every `every` seconds."""

    channel: ChannelName
    every: PositiveDuration = 7 * 86400

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, value: str, info: ValidationInfo) -> str:
        known: Collection[str] | None = (info.context or {}).get("channels")
        if known is not None and value not in known:
            names = ", ".join(sorted(known)) if known else "none: CHANNELS_FILE is not set"
            raise ValueError(f"no channel {value} (configured channels: {names})")
        return value


# Verification (see README "Verification"): local files are read whole (archive) and/or
# compared with their sidecar checksum; restic and borg repositories are checked by their tool.
DEFAULT_VERIFY_EVERY = 7 * 86400
DEFAULT_UNVERIFIED_AFTER = 86400
DEFAULT_REPOSITORY_EVERY = 86400
# Where archive and checksum verification can read the files (S3 and SFTP: streamed).
FILE_VERIFIED_SOURCES = ("local", "s3", "sftp")
REPOSITORY_SOURCES = ("restic", "borg")


class RepositoryVerify(_Strict):
    """`restic check` / `borg check --repository-only` on their own cadence."""

    every: PositiveDuration = DEFAULT_REPOSITORY_EVERY
    # restic only: --read-data-subset=N% (the share of pack data read and checked; 0 or
    # none: the structure only).
    read_data_subset: Percent | None = None


class Verify(_Strict):
    """What proves a job's backups restorable: each new settled artifact is verified once, and
    again every `every`; the newest is `unverified` (warning) when no verification of it is
    recorded `unverified_after` after it settled."""

    # Read the whole artifact: gzip, bzip2, xz, zstd streams; tar members; zip entries' CRCs.
    archive: bool = False
    # sidecar: FILE.sha256 / .sha512 / .md5 or a SHA256SUMS file beside it; none: no checksum.
    checksum: Literal["sidecar", "none"] = "none"
    every: PositiveDuration = DEFAULT_VERIFY_EVERY
    unverified_after: PositiveDuration = DEFAULT_UNVERIFIED_AFTER
    repository: RepositoryVerify | None = None

    @property
    def files(self) -> bool:
        """Whether the artifacts themselves are read (archive or checksum)."""
        return self.archive or self.checksum != "none"


class JobSpec(_Strict):
    name: str = Field(json_schema_extra={"pattern": JOB_NAME_PATTERN, "maxLength": 100})
    description: Description = ""
    tags: Tags = ()
    source: Source | None = None
    schedule: Schedule
    grace: Duration = DEFAULT_GRACE
    rules: Rules = Rules()
    notify: Notify = Notify()
    paused: bool = False
    # None: no retention policy is checked; no digest is sent.
    retention: Retention | None = None
    report: Report | None = None
    # None: nothing verified (opt-in). Which checks apply depends on the source's kind (see
    # _verifiable): a rule between two fields, checked by the server, as min_size <= max_size.
    verify: Verify | None = Field(
        default=None,
        description="archive and checksum: local sources only; repository: restic and borg "
        "sources only (read_data_subset: restic only); at least one check",
    )

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not re.fullmatch(JOB_NAME_PATTERN, value):
            raise ValueError(
                # A name just over the limit is shown whole: its length is the mistake.
                f"{quote(value, limit=120)} is not a valid job name: use lowercase letters, "
                "digits, '.', '_' or '-', starting with a letter, at most 100 characters"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _verifiable(self) -> JobSpec:
        verify = self.verify
        if verify is None:
            return self
        kind = self.source.type if self.source is not None else None
        if kind is None:
            raise ValueError("verify needs a source: a heartbeat job has no backups to read")
        if not verify.files and verify.repository is None:
            raise ValueError(
                "verify declares nothing to check: set archive: true, checksum: sidecar or "
                "repository: {...}"
            )
        if verify.files and kind not in FILE_VERIFIED_SOURCES:
            if kind in REPOSITORY_SOURCES:
                raise ValueError(
                    f"verify.archive and verify.checksum read files; a {kind} source is checked "
                    "with verify.repository instead"
                )
            raise ValueError(
                f"verify.archive and verify.checksum are not supported for {kind} sources yet "
                "(local, s3 and sftp sources only)"
            )
        if verify.repository is not None:
            if kind not in REPOSITORY_SOURCES:
                raise ValueError("verify.repository applies to restic and borg sources only")
            if kind == "borg" and verify.repository.read_data_subset is not None:
                raise ValueError(
                    "verify.repository.read_data_subset is restic's option; borg's check is "
                    "--repository-only"
                )
        return self

    def declaration(self) -> dict[str, Any]:
        """The JSON-ready declaration (integers for durations and sizes), without the name."""
        return self.model_dump(mode="json", exclude={"name"}, exclude_none=False)


# The declaration as stored on a job row: every field but the name.
DECLARATION_FIELDS = tuple(name for name in JobSpec.model_fields if name != "name")


def zone_info(name: str) -> ZoneInfo:
    """The zone named `name`; ValueError for anything that is not a zone of the tz database.

    ZoneInfo reads a file named after the zone: a directory of the database (`Europe`), a name
    too long for the filesystem or a path raise OSError, which must not escape as a failure of
    the service (the API took it for a database outage). So only names shaped like IANA names
    reach ZoneInfo, and every error it may raise means "unknown"."""
    unknown = ValueError(f"unknown time zone {quote(name)} (use an IANA name such as Europe/Paris)")
    if len(name) > MAX_ZONE_LENGTH or not _ZONE_NAME.fullmatch(name):
        raise unknown
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise unknown from None


def check_cron(expression: str, zone: ZoneInfo) -> None:
    """Raise ValueError unless the expression has 5 fields, parses and fires at least once."""
    if not re.fullmatch(CRON_PATTERN, expression):
        fields = len(expression.split(None))
        raise ValueError(
            f"bad cron expression {quote(expression)}: a cron expression has 5 fields separated by "
            f"spaces (minute hour day-of-month month day-of-week), this one {fields}; seconds "
            "are not supported"
        )
    try:
        next(CronSim(expression, datetime.now(UTC).astimezone(zone)))
    except CronSimError as exc:
        raise ValueError(f"bad cron expression {quote(expression)}: {exc}") from None
    except StopIteration:
        raise ValueError(f"cron expression {quote(expression)} never fires") from None


def parse_job(
    data: object, scan_roots: Sequence[Path] = (), channels: Collection[str] | None = None
) -> JobSpec:
    """Validate one job declaration; raises pydantic.ValidationError.

    `channels`: the configured notification channels, which the job may name (None: any name,
    for stored jobs whose channel may have left CHANNELS_FILE since)."""
    context = {"scan_roots": tuple(scan_roots), "channels": channels}
    return JobSpec.model_validate(data, context=context)


def error_details(exc: ValidationError) -> list[dict[str, str]]:
    """Flatten a ValidationError into [{field, message}], fields dotted (`schedule.cron`); the
    kind pydantic puts after `source` (`source.s3.bucket`) is left out: people wrote `type`."""
    details = []
    for problem in problems_of(exc):
        loc = list(problem.loc)
        for index in range(len(loc) - 1):
            if loc[index] == "source" and loc[index + 1] in SOURCE_TYPES:
                del loc[index + 1]
                break
        details.append({"field": ".".join(loc) or "(job)", "message": problem.message})
    return details
