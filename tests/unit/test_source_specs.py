"""The declarations of remote sources (s3, sftp, restic, borg): what is refused, with the field
named, and that a secret's value is never kept, answered or repeated in an error."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from service.core.jobspec import (
    BorgSource,
    LocalSource,
    ResticSource,
    S3Source,
    SftpSource,
    error_details,
    parse_job,
)
from service.http.web.words import (
    artifact_name,
    artifact_words,
    describe_details,
    describe_source,
)

SECRET = "hunter2-not-a-reference"


def job(source: dict[str, Any]) -> dict[str, Any]:
    return {"name": "j", "source": source, "schedule": {"every": "1d"}}


def problems(source: dict[str, Any]) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as caught:
        parse_job(job(source))
    return error_details(caught.value)


S3 = {"type": "s3", "bucket": "backups", "prefix": "db/"}
SFTP = {"type": "sftp", "host": "nas.example", "username": "bk", "known_hosts": "/etc/bm/kh",
        "path": "/srv/dumps", "key_file": "/etc/bm/id_ed25519"}  # fmt: skip
RESTIC = {"type": "restic", "repository": "/srv/restic", "password_file": "/etc/bm/restic"}
BORG = {"type": "borg", "repository": "/srv/borg", "passphrase": "${BORG_PASS}"}


@pytest.mark.parametrize(
    ("given", "kind"),
    [({"path": "/b"}, LocalSource), ({"type": "local", "path": "/b"}, LocalSource),
     (S3, S3Source), (SFTP, SftpSource), (RESTIC, ResticSource), (BORG, BorgSource)],
)  # fmt: skip
def test_each_kind_is_read_by_its_type_and_round_trips(given: dict[str, Any], kind: type) -> None:
    spec = parse_job(job(given))
    assert isinstance(spec.source, kind)
    assert parse_job({"name": "j", **spec.declaration()}) == spec


def test_an_unknown_type_names_the_kinds() -> None:
    assert problems({"type": "nfs", "path": "/b"}) == [
        {
            "field": "source.type",
            "message": "type must be one of local, s3, sftp, restic, borg (got 'nfs')",
        }
    ]


def test_a_field_error_names_the_field_without_the_kind() -> None:
    assert problems({**S3, "bucket": "x"}) == [
        {"field": "source.bucket", "message": "String should have at least 3 characters"}
    ]
    assert problems({**SFTP, "port": 0})[0]["field"] == "source.port"


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({**S3, "access_key_id": "AK", "secret_access_key": SECRET}, "source.secret_access_key"),
        ({**SFTP, "password": SECRET}, "source.password"),
        ({**RESTIC, "password_file": None, "password": SECRET}, "source.password"),
        ({**BORG, "passphrase": SECRET}, "source.passphrase"),
        ({**RESTIC, "env": {"AWS_SECRET_ACCESS_KEY": SECRET}}, "source.env"),
        ({**BORG, "env": {"BORG_PASSPHRASE": f"x{SECRET}"}}, "source.env"),
    ],
)
def test_a_secret_written_in_the_declaration_is_refused_and_not_repeated(
    given: dict[str, Any], field: str
) -> None:
    found = problems(given)
    assert [problem["field"] for problem in found] == [field]
    assert SECRET not in str(found)
    assert "${VARIABLE}" in found[0]["message"]


def test_secrets_are_references_or_files_and_the_declaration_keeps_only_those() -> None:
    spec = parse_job(job({**S3, "access_key_id": "AKIA", "secret_access_key": "${S3_KEY}"}))
    assert spec.declaration()["source"]["secret_access_key"] == "${S3_KEY}"
    spec = parse_job(job({**RESTIC, "env": {"AWS_ACCESS_KEY_ID": "AKIA",
                                           "AWS_SECRET_ACCESS_KEY": "${AWS_KEY}"}}))  # fmt: skip
    assert isinstance(spec.source, ResticSource)
    assert spec.source.env == {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "${AWS_KEY}"}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({**S3, "access_key_id": "AK"}, "give access_key_id with secret_access_key"),
        ({**S3, "secret_access_key": "${K}"}, "give access_key_id with secret_access_key"),
        ({**S3, "access_key_id": "AK", "secret_access_key": "${K}",
          "secret_access_key_file": "/k"}, "give one of secret_access_key and"),
        ({**SFTP, "key_file": None}, "give key_file, password or password_file"),
        ({**SFTP, "password": "${P}", "password_file": "/p"}, "give one of password and"),
        ({**RESTIC, "password_file": None}, "give password (a ${VARIABLE}) or password_file"),
        ({**RESTIC, "repository": "rest:https://u:pw@host/"}, "the repository holds a password"),
        ({**SFTP, "path": "srv"}, "path must be an absolute path"),
        ({**SFTP, "known_hosts": "kh"}, "a secret file must be an absolute path"),
        ({**S3, "pattern": "db/*.gz"}, "pattern is a glob on the object's name"),
        ({**S3, "endpoint_url": "ftp://x"}, "String should match pattern"),
    ],
)  # fmt: skip
def test_declarations_that_cannot_work_are_refused(given: dict[str, Any], message: str) -> None:
    found = problems(given)
    assert len(found) == 1
    assert found[0]["message"].startswith(message), found


def test_immutable_artifacts_settle_at_once_and_remote_files_like_local_ones() -> None:
    settles = {kind["type"]: parse_job(job(kind)).source.settle  # type: ignore[union-attr]
               for kind in (S3, SFTP, RESTIC, BORG)}  # fmt: skip
    assert settles == {"s3": 0, "sftp": 120, "restic": 0, "borg": 0}


@pytest.mark.parametrize(
    ("given", "missing", "described"),
    [
        ({"path": "/b", "pattern": "*.gz", "recursive": True},
         "no backup matching *.gz in /b or its subdirectories", "a new *.gz in /b (and below)"),
        ({**S3, "endpoint_url": "http://127.0.0.1:9000"},
         "no object matching * in s3://backups/db/ at http://127.0.0.1:9000",
         "a new object in s3://backups/db/ at http://127.0.0.1:9000"),
        (SFTP, "no backup matching * in sftp://bk@nas.example:22/srv/dumps",
         "a new file in sftp://bk@nas.example:22/srv/dumps"),
        ({**RESTIC, "host": "web1", "tags": ["daily"]},
         "no snapshot of host web1 and tags daily in restic repository /srv/restic",
         "a new restic snapshot in /srv/restic"),
        ({**BORG, "archives": "web-*"}, "no archive matching web-* in borg repository /srv/borg",
         "a new borg archive matching web-* in /srv/borg"),
    ],
)  # fmt: skip
def test_each_kind_says_where_its_backups_are(
    given: dict[str, Any], missing: str, described: str
) -> None:
    spec = parse_job(job(given))
    assert spec.source is not None
    assert spec.source.missing() == missing
    assert describe_source(spec.declaration()["source"]) == described


@pytest.mark.parametrize(
    ("source", "words"),
    [(None, ("File", "Files")), ({"path": "/b"}, ("File", "Files")),
     (SFTP, ("File", "Files")), (S3, ("Object", "Objects")),
     (RESTIC, ("Snapshot", "Snapshots")), (BORG, ("Archive", "Archives"))],
)  # fmt: skip
def test_the_job_page_names_artifacts_by_kind(
    source: dict[str, Any] | None, words: tuple[str, str]
) -> None:
    assert artifact_words(source) == words


def test_an_artifacts_details_read_as_one_line() -> None:
    snapshot = {"short_id": "6cdd0cae", "hostname": "web1", "tags": ["daily", "db"],
                "paths": ["/var/lib/pg"], "username": "root"}  # fmt: skip
    assert artifact_name("6cdd0cae84c7" + "0" * 52, snapshot) == "6cdd0cae"
    assert describe_details(snapshot) == "host web1 · tags daily, db · /var/lib/pg"
    archive = {"id": "aa1f", "compressed_size": 5043, "deduplicated_size": 4096, "nfiles": 1234}
    assert artifact_name("nightly-1", archive) == "nightly-1"
    assert describe_details(archive) == "compressed 4.9 KiB · deduplicated 4.0 KiB · 1 234 files"
    assert describe_details({"etag": "abc", "storage_class": "STANDARD"}) == ""
    assert describe_details({"etag": "abc", "storage_class": "GLACIER"}) == "storage class GLACIER"
    assert describe_details(None) == ""
