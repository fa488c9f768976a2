"""Secrets of a source resolved at use (service/scanner/sources/secrets.py): from the
environment or a file, and errors that say where they looked, never what they found."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.scanner.sources import SourceError
from service.scanner.sources.secrets import environment, expand, resolve


def test_a_reference_is_read_from_the_environment_when_used() -> None:
    assert resolve("${S3_KEY}", None, "secret_access_key", {"S3_KEY": "k3y"}) == "k3y"
    assert resolve(None, None, "password", {}) is None


def test_an_unset_variable_names_the_field_and_the_variable() -> None:
    with pytest.raises(SourceError) as caught:
        resolve("${S3_KEY}", None, "secret_access_key", {})
    assert str(caught.value) == (
        "secret_access_key: environment variable S3_KEY is not set for the service"
    )


def test_a_file_gives_its_first_line(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\nignored\n")
    assert resolve(None, str(secret), "password_file", {}) == "s3cret"


def test_an_unreadable_file_says_why_without_its_content(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as caught:
        resolve(None, str(tmp_path / "absent"), "password_file", {})
    assert str(caught.value) == (
        f"password_file: cannot read {tmp_path / 'absent'}: No such file or directory"
    )
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SourceError) as caught:
        resolve(None, str(fifo), "password_file", {})  # refused at once, never waits
    assert str(caught.value).startswith(f"password_file: {fifo}: ")


def test_a_tool_environment_is_expanded_variable_by_variable() -> None:
    declared = {"BORG_RSH": "ssh -i ${KEY_PATH}", "AWS_SECRET_ACCESS_KEY": "${AWS_KEY}"}
    assert environment(declared, {"KEY_PATH": "/k", "AWS_KEY": "v"}) == {
        "BORG_RSH": "ssh -i /k", "AWS_SECRET_ACCESS_KEY": "v",
    }  # fmt: skip
    with pytest.raises(SourceError, match=r"^env AWS_SECRET_ACCESS_KEY: environment variable"):
        environment(declared, {"KEY_PATH": "/k"})
    assert expand("no reference", "x", {}) == "no reference"
