"""Job declarations: validation, error details and SCAN_ROOTS (service/core/jobspec.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.core.jobspec import error_details, parse_job

FULL: dict[str, Any] = {
    "name": "db-nightly",
    "description": "PostgreSQL dump of the main database",
    "tags": ["db", "prod"],
    "source": {
        "type": "local",
        "path": "/backups/db",
        "pattern": "*.sql.gz",
        "recursive": True,
        "exclude": ["*.tmp", "*.sql.gz.new"],
        "settle": "5m",
    },
    "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Paris"},
    "grace": "1h30m",
    "rules": {"min_size": "1MiB", "max_size": "2GB", "min_count": 7, "max_size_drop": "50%"},
    "notify": {
        "channels": ["ops", "mail", "ops"],
        "renotify_every": "4h",
        "after": 3,
        "for": "30m",
    },
    "paused": True,
    "retention": {"daily": 7, "weekly": 4, "monthly": 12, "strict": True},
    "report": {"channel": "ops", "every": "7d"},
    "verify": {"archive": True, "checksum": "sidecar", "every": "7d", "unverified_after": "1d"},
}
FULL_DECLARATION: dict[str, Any] = {
    "description": "PostgreSQL dump of the main database",
    "tags": ["db", "prod"],
    "source": {
        "type": "local",
        "path": "/backups/db",
        "pattern": "*.sql.gz",
        "recursive": True,
        "exclude": ["*.tmp", "*.sql.gz.new"],
        "settle": 300,
    },
    "schedule": {"every": None, "cron": "0 2 * * *", "timezone": "Europe/Paris"},
    "grace": 5400,
    "rules": {
        "min_size": 1048576,
        "max_size": 2000000000,
        "min_count": 7,
        "max_size_drop": 50.0,
        "max_duration": None,
        "min_duration": None,
    },
    "notify": {"channels": ["ops", "mail"], "renotify_every": 14400, "after": 3, "for": 1800},
    "paused": True,
    "retention": {"daily": 7, "weekly": 4, "monthly": 12, "yearly": 0, "strict": True},
    "report": {"channel": "ops", "every": 604800},
    "verify": {
        "archive": True,
        "checksum": "sidecar",
        "every": 604800,
        "unverified_after": 86400,
        "repository": None,
    },
}
NOTIFY_DEFAULTS = {"channels": None, "renotify_every": None, "after": 1, "for": 0}
MINIMAL: dict[str, Any] = {"name": "heartbeat", "schedule": {"every": 3600}}
SOURCE: dict[str, Any] = {"type": "local", "path": "/backups/db"}


def with_(base: dict[str, Any], **fields: Any) -> dict[str, Any]:
    data = copy.deepcopy(base)
    data.update(fields)
    return data


def details_of(data: object, scan_roots: list[Path] | None = None) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as caught:
        parse_job(data, scan_roots or [])
    return error_details(caught.value)


def only_detail(data: object, scan_roots: list[Path] | None = None) -> dict[str, str]:
    (detail,) = details_of(data, scan_roots)
    # Readable: no pydantic prefix, one line.
    assert not detail["message"].startswith("Value error")
    assert "\n" not in detail["message"]
    return detail


# --- valid declarations ---------------------------------------------------------------------


def test_full_job_declaration_has_integers() -> None:
    spec = parse_job(FULL)
    assert spec.name == "db-nightly"
    declaration = spec.declaration()
    assert declaration == FULL_DECLARATION
    for value in (declaration["grace"], declaration["rules"]["min_size"]):
        assert type(value) is int
    assert json.loads(json.dumps(declaration)) == declaration


def test_full_job_round_trips_through_declaration() -> None:
    spec = parse_job(FULL)
    again = parse_job({"name": spec.name, **spec.declaration()})
    assert again == spec
    assert again.declaration() == FULL_DECLARATION


def test_minimal_job_defaults() -> None:
    assert parse_job(MINIMAL).declaration() == {
        "description": "",
        "tags": [],
        "source": None,
        "schedule": {"every": 3600, "cron": None, "timezone": None},
        "grace": 3600,
        "rules": {
            "min_size": None,
            "max_size": None,
            "min_count": None,
            "max_size_drop": None,
            "max_duration": None,
            "min_duration": None,
        },
        "notify": NOTIFY_DEFAULTS,
        "paused": False,
        "retention": None,
        "report": None,
        "verify": None,
    }


def test_source_defaults() -> None:
    source = parse_job(with_(MINIMAL, source={"type": "local", "path": "/b"})).source
    assert source is not None
    assert (source.pattern, source.recursive) == ("*", False)
    # Two minutes to settle; the usual temporary names and dot-files are not backups.
    assert (source.settle, source.exclude) == (120, None)
    assert source.excluded == ("*.tmp", "*.part", "*.partial", ".*")


@pytest.mark.parametrize(
    ("given", "settle", "excluded"),
    [
        pytest.param({"exclude": []}, 120, (), id="empty-exclude-excludes-nothing"),
        pytest.param({"exclude": ["*.new"]}, 120, ("*.new",), id="given-list-replaces-default"),
        pytest.param({"settle": 0}, 0, ("*.tmp", "*.part", "*.partial", ".*"), id="settle-off"),
        pytest.param({"settle": "30m"}, 1800, ("*.tmp", "*.part", "*.partial", ".*"), id="text"),
    ],
)
def test_source_settle_and_exclude(given: dict[str, Any], settle: int, excluded: Any) -> None:
    source = parse_job(with_(MINIMAL, source={"type": "local", "path": "/b", **given})).source
    assert source is not None
    assert (source.settle, source.excluded) == (settle, excluded)


@pytest.mark.parametrize(
    ("fields", "attribute", "expected"),
    [
        pytest.param({"schedule": {"every": "1d"}}, "schedule.every", 86400, id="every-string"),
        pytest.param({"schedule": {"every": "1w"}}, "schedule.every", 604800, id="every-week"),
        pytest.param({"grace": 0}, "grace", 0, id="grace-zero"),
        pytest.param({"grace": "15m"}, "grace", 900, id="grace-string"),
        pytest.param({"rules": {"min_size": 0}}, "rules.min_size", 0, id="min-size-zero"),
        pytest.param(
            {"rules": {"min_size": 10, "max_size": 10}}, "rules.max_size", 10, id="min-equals-max"
        ),
        pytest.param({"rules": {"min_count": 1}}, "rules.min_count", 1, id="min-count-one"),
        pytest.param({"rules": {"max_size_drop": 0}}, "rules.max_size_drop", 0, id="drop-zero"),
        pytest.param({"rules": {"max_size_drop": 100}}, "rules.max_size_drop", 100, id="drop-100"),
        pytest.param(
            {"schedule": {"cron": "0 0 29 2 *"}}, "schedule.cron", "0 0 29 2 *", id="cron-leap-day"
        ),
        pytest.param(
            # Day of month and day of week both set: either one fires (Mondays of February).
            {"schedule": {"cron": "0 0 30 2 1"}},
            "schedule.cron",
            "0 0 30 2 1",
            id="cron-dom-or-dow",
        ),
        pytest.param(
            {"schedule": {"cron": "*/15 * * * *", "timezone": "America/New_York"}},
            "schedule.timezone",
            "America/New_York",
            id="cron-with-zone",
        ),
        pytest.param(
            {"source": {**SOURCE, "path": "/backups//db/./"}},
            "source.path",
            "/backups/db",
            id="path-normalised",
        ),
        pytest.param(
            {"source": {**SOURCE, "pattern": "db-*.sql.[gx]z"}},
            "source.pattern",
            "db-*.sql.[gx]z",
            id="pattern-glob",
        ),
        pytest.param(
            {"tags": ["b", "a", "b", "c", "a"]}, "tags", ("b", "a", "c"), id="tags-deduplicated"
        ),
        pytest.param({"tags": ["env:prod", "A.1"]}, "tags", ("env:prod", "A.1"), id="tag-chars"),
        pytest.param({"description": "x" * 2000}, "description", "x" * 2000, id="long-description"),
    ],
)
def test_valid_fields(fields: dict[str, Any], attribute: str, expected: Any) -> None:
    value: Any = parse_job(with_(MINIMAL, **fields))
    for part in attribute.split("."):
        value = getattr(value, part)
    assert value == expected


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a", id="one-letter"),
        pytest.param("db-nightly", id="dash"),
        pytest.param("db.nightly_2", id="dot-underscore-digit"),
        pytest.param("a" * 100, id="100-chars"),
    ],
)
def test_valid_names(name: str) -> None:
    assert parse_job(with_(MINIMAL, name=name)).name == name


# --- invalid declarations: one detail, the right field, a readable message ------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("1db", id="starts-with-digit"),
        pytest.param("-db", id="starts-with-dash"),
        pytest.param("Db", id="upper-case"),
        pytest.param("", id="empty"),
        pytest.param("db nightly", id="space"),
        pytest.param("db/nightly", id="slash"),
        pytest.param("café", id="non-ascii"),
        pytest.param("db\n", id="trailing-newline"),
        pytest.param("a" * 101, id="101-chars"),
    ],
)
def test_name_not_a_slug(name: str) -> None:
    detail = only_detail(with_(MINIMAL, name=name))
    assert detail["field"] == "name"
    assert f"{name!r} is not a valid job name" in detail["message"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"color": "red"}, "color", id="top-level"),
        pytest.param({"schedule": {"every": 60, "at": "02:00"}}, "schedule.at", id="schedule"),
        pytest.param({"rules": {"max_age": "1d"}}, "rules.max_age", id="rules"),
        pytest.param({"source": {**SOURCE, "glob": "*.gz"}}, "source.glob", id="source"),
    ],
)
def test_unknown_field_anywhere(fields: dict[str, Any], field: str) -> None:
    assert only_detail(with_(MINIMAL, **fields)) == {"field": field, "message": "unknown field"}


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        pytest.param({"name": 5}, "name", "valid string", id="name-not-a-string"),
        pytest.param(
            {"description": "x" * 2001}, "description", "2000 characters", id="description-long"
        ),
        pytest.param({"tags": ["ok", "bad tag"]}, "tags.1", "pattern", id="tag-with-space"),
        # schedule
        pytest.param(
            {"schedule": {"every": 60, "cron": "0 2 * * *"}},
            "schedule",
            "give exactly one of 'every' (a duration) or 'cron'",
            id="every-and-cron",
        ),
        pytest.param(
            {"schedule": {}},
            "schedule",
            "give exactly one of 'every' (a duration) or 'cron'",
            id="neither-every-nor-cron",
        ),
        pytest.param(
            {"schedule": {"timezone": "UTC"}}, "schedule", "exactly one", id="timezone-alone"
        ),
        pytest.param(
            {"schedule": {"every": 60, "timezone": "Europe/Paris"}},
            "schedule",
            "timezone applies to cron schedules only",
            id="timezone-with-every",
        ),
        pytest.param(
            {"schedule": {"cron": "0 2 * * *", "timezone": "Mars/Olympus"}},
            "schedule.timezone",
            "unknown time zone 'Mars/Olympus'",
            id="unknown-timezone",
        ),
        pytest.param(
            {"schedule": {"cron": "0 2 * * *", "timezone": "../../etc/passwd"}},
            "schedule.timezone",
            "unknown time zone '../../etc/passwd'",
            id="timezone-path",
        ),
        pytest.param(
            {"schedule": {"cron": "0 2 * * *", "timezone": ""}},
            "schedule.timezone",
            "unknown time zone ''",
            id="timezone-empty",
        ),
        # Names ZoneInfo turns into a file that is no zone: OSError, not "unknown" (issue 10 #13)
        *(
            pytest.param(
                {"schedule": {"cron": "0 2 * * *", "timezone": zone}},
                "schedule.timezone",
                f"unknown time zone {shown}",
                id=f"timezone-{label}",
            )
            for label, zone, shown in [
                ("directory", "Europe", "'Europe'"),
                ("subdirectory", "America/Argentina", "'America/Argentina'"),
                ("too-long", "x" * 300, f"'{'x' * 60}…' (300 characters)"),
                ("absolute", "/usr/share/zoneinfo/UTC", "'/usr/share/zoneinfo/UTC'"),
                ("dot-dot", "Europe/../UTC", "'Europe/../UTC'"),
                ("nul", "Europe/Paris\0", "'Europe/Paris\\x00'"),
                ("not-a-zone-file", "zone.tab", "'zone.tab'"),
            ]
        ),
        pytest.param(
            {"schedule": {"cron": "61 * * * *"}},
            "schedule",
            "bad cron expression '61 * * * *': ",
            id="bad-cron-minute",
        ),
        pytest.param(
            {"schedule": {"cron": "* * * *"}},
            "schedule",
            "bad cron expression '* * * *': ",
            id="cron-four-fields",
        ),
        pytest.param(
            {"schedule": {"cron": ""}}, "schedule", "bad cron expression ''", id="cron-empty"
        ),
        pytest.param(
            {"schedule": {"cron": "0 0 30 2 *"}},
            "schedule",
            "'0 0 30 2 *'",
            id="cron-never-fires-30-february",
        ),
        pytest.param(
            {"schedule": {"cron": "0 0 31 4,6,9,11 *"}},
            "schedule",
            "'0 0 31 4,6,9,11 *'",
            id="cron-never-fires-31-of-short-months",
        ),
        pytest.param(
            {"schedule": {"every": 0}}, "schedule.every", "greater than 0", id="every-zero"
        ),
        pytest.param(
            {"schedule": {"every": -60}},
            "schedule.every",
            "a duration cannot be negative (got -60)",
            id="every-negative",
        ),
        pytest.param(
            {"schedule": {"every": "daily"}},
            "schedule.every",
            "'daily' is not a duration",
            id="every-word",
        ),
        pytest.param(
            {"schedule": {"every": True}}, "schedule.every", "boolean", id="every-boolean"
        ),
        pytest.param({"schedule": None}, "schedule", "valid dictionary", id="schedule-null"),
        # grace
        pytest.param(
            {"grace": -1}, "grace", "a duration cannot be negative (got -1)", id="grace-negative"
        ),
        pytest.param({"grace": "-1h"}, "grace", "'-1h' is not a duration", id="grace-neg-string"),
        pytest.param({"grace": True}, "grace", "boolean", id="grace-boolean"),
        # rules
        pytest.param(
            {"rules": {"min_size": "2KB", "max_size": "1KB"}},
            "rules",
            "min_size (2000 bytes) is larger than max_size (1000 bytes)",
            id="min-size-above-max-size",
        ),
        pytest.param(
            {"rules": {"min_count": 0}},
            "rules.min_count",
            "greater than or equal to 1",
            id="min-count-zero",
        ),
        pytest.param(
            {"rules": {"min_count": 1.5}}, "rules.min_count", "integer", id="min-count-fraction"
        ),
        pytest.param(
            {"rules": {"max_size_drop": 150}},
            "rules.max_size_drop",
            "a percentage must be between 0 and 100 (got 150)",
            id="drop-150",
        ),
        pytest.param(
            {"rules": {"max_size_drop": "150%"}},
            "rules.max_size_drop",
            "(got '150%')",
            id="drop-150-percent-string",
        ),
        pytest.param(
            {"rules": {"max_size_drop": -1}}, "rules.max_size_drop", "(got -1)", id="drop-negative"
        ),
        pytest.param(
            {"rules": {"min_size": "1XB"}}, "rules.min_size", "'1XB' is not a size", id="bad-size"
        ),
        pytest.param(
            {"rules": {"max_size": -1}},
            "rules.max_size",
            "a size cannot be negative",
            id="negative-size",
        ),
        # source
        pytest.param(
            {"source": {**SOURCE, "path": "backups/db"}},
            "source.path",
            "path must be absolute (got 'backups/db')",
            id="relative-path",
        ),
        pytest.param(
            {"source": {**SOURCE, "pattern": "db/*.sql.gz"}},
            "source.pattern",
            "pattern is a glob on the file name",
            id="pattern-with-slash",
        ),
        pytest.param(
            {"source": {**SOURCE, "pattern": ""}},
            "source.pattern",
            "not empty",
            id="pattern-empty",
        ),
        pytest.param(
            {"source": {**SOURCE, "exclude": ["tmp/*.part"]}},
            "source.exclude.0",
            "a glob on the file name",
            id="exclude-with-slash",
        ),
        pytest.param(
            {"source": {**SOURCE, "exclude": [""]}},
            "source.exclude.0",
            "not empty",
            id="exclude-empty",
        ),
        pytest.param(
            {"source": {**SOURCE, "exclude": "*.tmp"}},
            "source.exclude",
            "tuple",
            id="exclude-not-a-list",
        ),
        pytest.param(
            {"source": {**SOURCE, "settle": -1}}, "source.settle", "", id="settle-negative"
        ),
        pytest.param(
            {"source": {**SOURCE, "settle": "soon"}}, "source.settle", "", id="settle-words"
        ),
        pytest.param(
            {"source": {"type": "nfs", "path": "/bucket"}},
            "source.type",
            "type must be one of local, s3, sftp, restic, borg (got 'nfs')",
            id="source-type-unknown",
        ),
        pytest.param(
            {"source": {"type": "s3"}},
            "source.bucket",
            "Field required",
            id="source-s3-without-bucket",
        ),
        pytest.param({"source": "/backups/db"}, "source", "dictionary", id="source-string"),
    ],
)
def test_invalid_field(fields: dict[str, Any], field: str, fragment: str) -> None:
    detail = only_detail(with_(MINIMAL, **fields))
    assert detail["field"] == field
    assert fragment in detail["message"]


def test_an_unknown_source_type_names_the_supported_types() -> None:
    detail = only_detail(with_(MINIMAL, source={"type": "nfs", "path": "/bucket"}))
    assert "local, s3, sftp, restic, borg" in detail["message"]


def test_missing_required_fields() -> None:
    assert details_of({"schedule": {"every": 60}}) == [
        {"field": "name", "message": "Field required"}
    ]
    assert details_of({"name": "db"}) == [{"field": "schedule", "message": "Field required"}]


def test_not_a_mapping_is_a_job_level_error() -> None:
    (detail,) = details_of(["db", 60])
    assert detail["field"] == "(job)"


def test_every_problem_is_reported_at_once() -> None:
    data = {
        "name": "X",
        "schedule": {"every": 60, "cron": "0 2 * * *"},
        "grace": "soon",
        "rules": {"min_count": 0},
        "source": {**SOURCE, "pattern": "a/b"},
        "colour": "red",
    }
    fields = [detail["field"] for detail in details_of(data)]
    assert sorted(fields) == sorted(
        ["name", "schedule", "grace", "rules.min_count", "source.pattern", "colour"]
    )


def test_min_count_rejects_booleans() -> None:
    detail = only_detail(with_(MINIMAL, rules={"min_count": True}))
    assert detail["field"] == "rules.min_count"


def test_job_spec_is_frozen() -> None:
    spec = parse_job(MINIMAL)
    with pytest.raises(ValidationError):
        spec.paused = True  # type: ignore[misc]
    assert spec.paused is False


# --- SCAN_ROOTS -----------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """root/{db, inner -> root/db, escape -> outside}, outside/, root2/ (a prefix sibling)."""
    base = tmp_path.resolve()
    root, outside, sibling = base / "root", base / "outside", base / "root2"
    for directory in (root / "db", outside / "secret", sibling / "db"):
        directory.mkdir(parents=True)
    (root / "inner").symlink_to(root / "db")
    (root / "escape").symlink_to(outside)
    return {"base": base, "root": root, "outside": outside, "sibling": sibling}


def local_job(path: Path | str) -> dict[str, Any]:
    return with_(MINIMAL, source={"type": "local", "path": str(path)})


@pytest.mark.parametrize(
    ("relative", "stored"),
    [
        pytest.param("root/db", "root/db", id="inside"),
        pytest.param("root", "root", id="the-root-itself"),
        pytest.param("root/not-created-yet", "root/not-created-yet", id="inside-not-existing"),
        pytest.param("root/inner", "root/inner", id="symlink-staying-inside"),
        pytest.param("root/db/../db", "root/db", id="dotdot-staying-inside"),
    ],
)
def test_scan_roots_accept_paths_inside(tree: dict[str, Path], relative: str, stored: str) -> None:
    spec = parse_job(local_job(f"{tree['base']}/{relative}"), scan_roots=[tree["root"]])
    assert spec.source is not None
    assert spec.source.path == str(tree["base"] / stored)


@pytest.mark.parametrize(
    ("relative", "resolved"),
    [
        pytest.param("outside", "outside", id="outside"),
        pytest.param("root/../outside", "outside", id="dotdot-escape"),
        pytest.param("root/escape", "outside", id="symlink-escape"),
        pytest.param("root/escape/secret", "outside/secret", id="below-symlink-escape"),
        pytest.param("root2/db", "root2/db", id="sibling-sharing-the-prefix"),
    ],
)
def test_scan_roots_reject_paths_outside(
    tree: dict[str, Path], relative: str, resolved: str
) -> None:
    path = f"{tree['base']}/{relative}"
    detail = only_detail(local_job(path), scan_roots=[tree["root"]])
    assert detail["field"] == "source.path"
    assert detail["message"] == (
        f"{path} resolves to {tree['base'] / resolved}, outside SCAN_ROOTS ({tree['root']})"
    )


def test_scan_roots_any_of_several(tree: dict[str, Path]) -> None:
    roots = [tree["root"], tree["outside"]]
    spec = parse_job(local_job(tree["root"] / "escape"), scan_roots=roots)
    assert spec.source is not None
    detail = only_detail(local_job(tree["sibling"]), scan_roots=roots)
    assert f"outside SCAN_ROOTS ({tree['root']}, {tree['outside']})" in detail["message"]


def test_without_scan_roots_any_absolute_path_is_accepted(tree: dict[str, Path]) -> None:
    spec = parse_job(local_job(tree["root"] / "escape"))
    assert spec.source is not None
    assert spec.source.path == str(tree["root"] / "escape")


def test_scan_roots_do_not_apply_to_a_job_without_source(tree: dict[str, Path]) -> None:
    assert parse_job(MINIMAL, scan_roots=[tree["root"]]).source is None


# --- notify -----------------------------------------------------------------------------------


def test_notify_defaults_to_the_default_channels() -> None:
    assert parse_job(MINIMAL).declaration()["notify"] == NOTIFY_DEFAULTS
    silent = parse_job(with_(MINIMAL, notify={"channels": []}))
    assert silent.notify.channels == ()


def test_notify_channels_must_be_configured_when_the_caller_knows_them() -> None:
    data = with_(MINIMAL, notify={"channels": ["ops", "pager", "sms"]})
    with pytest.raises(ValidationError) as caught:
        parse_job(data, (), channels={"ops", "mail"})
    (detail,) = error_details(caught.value)
    assert detail["field"] == "notify.channels"
    assert detail["message"] == "no channel pager, sms (configured channels: mail, ops)"
    with pytest.raises(ValidationError) as caught:
        parse_job(data, (), channels=set())
    assert "CHANNELS_FILE is not set" in error_details(caught.value)[0]["message"]
    # Stored jobs are read without the list: a channel removed since must not break a scan.
    assert parse_job(data).notify.channels == ("ops", "pager", "sms")


@pytest.mark.parametrize(
    ("notify", "field"),
    [
        ({"channels": ["Ops"]}, "notify.channels.0"),
        ({"channels": "ops"}, "notify.channels"),
        ({"renotify_every": 0}, "notify.renotify_every"),
        ({"renotify_every": "soon"}, "notify.renotify_every"),
        ({"email": "me@example.com"}, "notify.email"),
    ],
)
def test_bad_notify(notify: dict[str, Any], field: str) -> None:
    assert only_detail(with_(MINIMAL, notify=notify))["field"] == field


# Every text of a declaration is bounded (issue 10 #10): the error names the field and the limit.
CRON_AT_THE_LIMIT = "0 " + ",".join(["1-2"] * 123) + "  * * *"
OVER_THE_LIMIT: list[Any] = [
    pytest.param({"name": "a" * 101}, "name", "at most 100 characters", id="name"),
    pytest.param(
        {"description": "x" * 2001}, "description", "at most 2000 characters", id="description"
    ),
    pytest.param(
        {"tags": [f"t{i}" for i in range(51)]}, "tags", "at most 50 items", id="tag-count"
    ),
    pytest.param({"tags": ["t" * 65]}, "tags.0", "pattern", id="tag-length"),
    pytest.param(
        {"source": {**SOURCE, "path": "/" + "p" * 4096}},
        "source.path",
        "at most 4096 characters",
        id="path",
    ),
    pytest.param(
        {"source": {**SOURCE, "pattern": "*a" * 512 + "*"}},
        "source.pattern",
        "at most 1024 characters",
        id="pattern",
    ),
    pytest.param(
        {"source": {**SOURCE, "exclude": ["*a" * 512 + "*"]}},
        "source.exclude.0",
        "at most 1024 characters",
        id="exclude-glob",
    ),
    pytest.param(
        {"source": {**SOURCE, "exclude": [f"*.{i}" for i in range(51)]}},
        "source.exclude",
        "at most 50 items",
        id="exclude-count",
    ),
    pytest.param(
        {"schedule": {"cron": CRON_AT_THE_LIMIT + " "}},
        "schedule.cron",
        "at most 500 characters",
        id="cron",
    ),
    pytest.param(
        {"schedule": {"cron": "0 2 * * *", "timezone": "Europe/" + "P" * 58}},
        "schedule.timezone",
        "unknown time zone 'Europe/PPP",
        id="timezone",
    ),
    pytest.param(
        {"notify": {"channels": [f"c{i}" for i in range(51)]}},
        "notify.channels",
        "at most 50 items",
        id="channel-count",
    ),
    pytest.param(
        {"notify": {"channels": ["c" * 101]}}, "notify.channels.0", "pattern", id="channel-name"
    ),
    pytest.param({"grace": "1h" * 51}, "grace", "at most 100 characters", id="duration-text"),
    pytest.param(
        {"rules": {"min_size": "1" * 101}},
        "rules.min_size",
        "at most 100 characters",
        id="size-text",
    ),
    pytest.param(
        {"rules": {"max_size_drop": " " * 100 + "1%"}},
        "rules.max_size_drop",
        "at most 100 characters",
        id="percent-text",
    ),
]


@pytest.mark.parametrize(("fields", "field", "fragment"), OVER_THE_LIMIT)
def test_every_text_is_bounded(fields: dict[str, Any], field: str, fragment: str) -> None:
    detail = only_detail(with_(MINIMAL, **fields))
    assert detail["field"] == field
    assert fragment in detail["message"]
    assert len(detail["message"]) < 300, detail


def test_texts_at_their_limits_are_accepted() -> None:
    assert len(CRON_AT_THE_LIMIT) == 500
    spec = parse_job(
        with_(
            MINIMAL,
            description="x" * 2000,
            tags=[f"t{i}" for i in range(50)],
            source={**SOURCE, "path": "/" + "p" * 4095, "pattern": "*a" * 511 + "**"},
            grace=" " * 98 + "1h",
        )
    )
    assert len(spec.tags) == 50 and spec.source is not None
    assert len(spec.source.pattern) == 1024 and spec.grace == 3600
    cron = parse_job(with_(MINIMAL, schedule={"cron": CRON_AT_THE_LIMIT}))
    assert cron.schedule.cron == CRON_AT_THE_LIMIT


def test_an_echoed_value_is_shortened() -> None:
    """A bad value is quoted in the message, but never 300 KB of it."""
    cases = [
        ({"name": "N" * 300_000}, "name"),
        ({"source": {**SOURCE, "path": "r" * 4000}}, "source.path"),
        ({"source": {"type": "t" * 300_000, "path": "/x"}}, "source.type"),
        ({"schedule": {"cron": "6" * 400 + " * * * *"}}, "schedule"),
        ({"schedule": {"cron": "* " * 240}}, "schedule"),  # 240 fields, not 5
        ({"grace": "x" * 90}, "grace"),
    ]
    for fields, field in cases:
        detail = only_detail(with_(MINIMAL, **fields))
        assert detail["field"] == field
        assert len(detail["message"]) < 300, detail
        assert "…" in detail["message"] and "characters)" in detail["message"], detail


@pytest.mark.parametrize(
    ("notify", "after", "for_"),
    [
        ({}, 1, 0),
        ({"after": 2}, 2, 0),
        ({"after": 100, "for": "30m"}, 100, 1800),
        ({"for": 45}, 1, 45),
        ({"for": "1h30m", "after": 1}, 1, 5400),
    ],
)
def test_notify_after_and_for(notify: dict[str, Any], after: int, for_: int) -> None:
    spec = parse_job(with_(MINIMAL, notify=notify))
    assert (spec.notify.after, spec.notify.for_) == (after, for_)
    # Named `for` in the declaration as stored and answered, as in YAML.
    declared = spec.declaration()["notify"]
    assert (declared["after"], declared["for"]) == (after, for_)
    assert parse_job({"name": spec.name, **spec.declaration()}) == spec


@pytest.mark.parametrize(
    ("notify", "field", "message"),
    [
        ({"after": 0}, "notify.after", "greater than or equal to 1"),
        ({"after": 101}, "notify.after", "less than or equal to 100"),
        ({"after": True}, "notify.after", "got a boolean"),
        ({"for": "soon"}, "notify.for", "is not a duration"),
        ({"for": -1}, "notify.for", ""),
        ({"for_": 60}, "notify.for_", "unknown field"),
    ],
)
def test_notify_after_and_for_refused(notify: dict[str, Any], field: str, message: str) -> None:
    detail = only_detail(with_(MINIMAL, notify=notify))
    assert detail["field"] == field
    assert message in detail["message"]


# --- retention and report -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retention", "field"),
    [
        ({"daily": -1}, "retention.daily"),
        ({"weekly": True}, "retention.weekly"),
        ({"monthly": 1201}, "retention.monthly"),
        ({"yearly": "two"}, "retention.yearly"),
        ({"hourly": 24}, "retention.hourly"),
        ({"strict": "maybe"}, "retention.strict"),
    ],
)
def test_bad_retention_is_refused(retention: dict[str, Any], field: str) -> None:
    assert only_detail(with_(MINIMAL, retention=retention))["field"] == field


def test_retention_defaults_to_zeros() -> None:
    spec = parse_job(with_(MINIMAL, retention={"monthly": 3}))
    assert spec.declaration()["retention"] == {
        "daily": 0, "weekly": 0, "monthly": 3, "yearly": 0, "strict": False,
    }  # fmt: skip


def test_report_channel_must_be_configured() -> None:
    data = with_(MINIMAL, report={"channel": "ops-mail"})
    with pytest.raises(ValidationError) as caught:
        parse_job(data, channels={"ops"})
    [detail] = error_details(caught.value)
    assert detail["field"] == "report.channel"
    assert "no channel ops-mail (configured channels: ops)" in detail["message"]
    spec = parse_job(data, channels={"ops-mail"})
    assert spec.report is not None and spec.report.every == 7 * 86400
    assert only_detail(with_(MINIMAL, report={"channel": "ops", "every": 0}))["field"] == (
        "report.every"
    )
