"""The declaration of a silence: the API's one-off body and the jobs file's recurring entry.

Pure data and validation (pydantic), like service.core.jobspec. The checks that depend on the time
(`ends_at` still ahead, bounds of the window) are in `one_off_window`, which takes `now`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from service.core.jobspec import (
    JOB_NAME_PATTERN,
    MAX_CRON,
    MAX_TAGS,
    MAX_ZONE_LENGTH,
    PositiveDuration,
    Tags,
    check_cron,
    zone_info,
)
from service.core.units import DURATION_PATTERN, MAX_UNIT_TEXT, format_duration, parse_duration

# A one-off window lasts at most this long (a job to be ignored for longer should be paused),
# and starts at most this far ahead.
MAX_ONE_OFF = timedelta(days=90)
MAX_AHEAD = timedelta(days=365)
# A recurring window lasts at most a week: longer, with a weekly cron, it would never close.
MAX_RECURRING = 7 * 86400
MAX_COMMENT = 1000
ORIGINS = ("api", "file")

MAX_ONE_OFF_SECONDS = int(MAX_ONE_OFF.total_seconds())


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError("Input should be greater than 0")
    return value


# Bounded in the document too (as a number; a text such as "100d" is checked by one_off_window).
OneOffDuration = Annotated[
    int,
    BeforeValidator(parse_duration),
    AfterValidator(_positive),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_ONE_OFF_SECONDS,
                 "description": "seconds"},
                {"type": "string", "pattern": DURATION_PATTERN, "maxLength": MAX_UNIT_TEXT,
                 "examples": ["2h"]},
            ]
        },
        "validation",
    ),
]  # fmt: skip

JobName = Annotated[str, Field(pattern=JOB_NAME_PATTERN, max_length=100)]
JobNames = Annotated[tuple[JobName, ...], Field(max_length=MAX_TAGS)]


def _comment(value: str) -> str:
    if "\0" in value:
        raise ValueError("contains a NUL character")
    if not value.strip():
        raise ValueError("say who silences and why (e.g. 'alice: moving the NAS')")
    return value.strip()


Comment = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_COMMENT,
        json_schema_extra={"pattern": "[^\\s]", "description": "who silences, and why"},
    ),
    AfterValidator(_comment),
]


def _recurring_duration(value: int) -> int:
    if value > MAX_RECURRING:
        raise ValueError(
            f"a recurring window lasts at most {format_duration(MAX_RECURRING)} "
            f"(got {format_duration(value)})"
        )
    return value


# At least one matcher: a silence of nothing is a mistake, a silence of everything is a pause.
_MATCHERS_SCHEMA: JsonDict = {
    "anyOf": [
        {"required": ["jobs"], "properties": {"jobs": {"minItems": 1}}},
        {"required": ["tags"], "properties": {"tags": {"minItems": 1}}},
    ]
}


def _need_matcher(jobs: tuple[str, ...], tags: tuple[str, ...]) -> None:
    if not jobs and not tags:
        raise ValueError("give the jobs to silence (`jobs`: names) or their `tags`, or both")


class SilenceCreate(BaseModel):
    """A one-off silence: the jobs it covers (by name, or by tag), when, and who/why.

    A job is covered when its name is in `jobs` or it has one of `tags`. Names of jobs that do
    not exist (yet) are accepted: a silence may be set up before the job is declared."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "allOf": [
                _MATCHERS_SCHEMA,
                {
                    "oneOf": [
                        {
                            "required": ["ends_at"],
                            "properties": {
                                "ends_at": {"not": {"type": "null"}},
                                "duration": {"type": "null"},
                            },
                        },
                        {
                            "required": ["duration"],
                            "properties": {
                                "duration": {"not": {"type": "null"}},
                                "ends_at": {"type": "null"},
                            },
                        },
                    ]
                },
            ]
        },
    )

    jobs: JobNames = Field(default=(), description="job names (existing or not yet)")
    tags: Tags = Field(default=(), description="every job with one of these tags")
    starts_at: AwareDatetime | None = Field(default=None, description="default: now")
    ends_at: AwareDatetime | None = Field(default=None, description="or give `duration`")
    duration: OneOffDuration | None = Field(default=None, description="or give `ends_at`")
    comment: Comment

    @model_validator(mode="after")
    def _shape(self) -> SilenceCreate:
        _need_matcher(self.jobs, self.tags)
        if (self.ends_at is None) == (self.duration is None):
            raise ValueError("give exactly one of 'ends_at' (a time) or 'duration'")
        return self


class WindowProblem(ValueError):
    """A one-off window that cannot be: `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def one_off_window(body: SilenceCreate, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) in UTC for a one-off silence asked for at `now`; WindowProblem when the
    window is empty, already over, longer than MAX_ONE_OFF or further ahead than MAX_AHEAD."""
    try:
        start = (body.starts_at or now).astimezone(UTC)
    except OverflowError:
        raise WindowProblem("starts_at", "a date out of range (years 1 to 9999 in UTC)") from None
    if start > now + MAX_AHEAD:
        raise WindowProblem(
            "starts_at", f"starts_at is more than 365 days ahead ({start:%Y-%m-%d %H:%M} UTC)"
        )
    if body.ends_at is not None:
        try:
            end = body.ends_at.astimezone(UTC)
        except OverflowError:
            raise WindowProblem("ends_at", "a date out of range (years 1 to 9999 in UTC)") from None
        field = "ends_at"
    else:
        assert body.duration is not None
        if body.duration > MAX_ONE_OFF.total_seconds():
            raise WindowProblem("duration", _too_long(timedelta(seconds=body.duration)))
        end = start + timedelta(seconds=body.duration)
        field = "duration"
    if end <= now:
        raise WindowProblem(
            field, f"this silence would already be over: it ends at {end:%Y-%m-%d %H:%M:%S} "
            f"UTC, before now ({now:%Y-%m-%d %H:%M:%S} UTC)",
        )  # fmt: skip
    if end <= start:
        raise WindowProblem(
            field, f"ends_at ({end:%Y-%m-%d %H:%M:%S} UTC) is not after starts_at "
            f"({start:%Y-%m-%d %H:%M:%S} UTC)",
        )  # fmt: skip
    if end - start > MAX_ONE_OFF:
        raise WindowProblem(field, _too_long(end - start))
    return start, end


def _too_long(length: timedelta) -> str:
    return (
        f"a silence lasts at most {MAX_ONE_OFF.days} days (this one: "
        f"{format_duration(int(length.total_seconds()))}); pause the job instead"
    )


class RecurringSilenceSpec(BaseModel):
    """A recurring silence of the jobs file: each fire of `cron` in `timezone` opens a window
    of `duration`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: JobName
    jobs: JobNames = ()
    tags: Tags = ()
    cron: str = Field(max_length=MAX_CRON)
    timezone: str = Field(default="UTC", json_schema_extra={"maxLength": MAX_ZONE_LENGTH})
    duration: Annotated[PositiveDuration, AfterValidator(_recurring_duration)]
    comment: Comment

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone_info(value)
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        # Whether an expression parses and ever fires does not depend on the zone.
        check_cron(value, zone_info("UTC"))
        return value

    @model_validator(mode="after")
    def _valid(self) -> RecurringSilenceSpec:
        _need_matcher(self.jobs, self.tags)
        return self
