"""`${NAME}` in the channels file from the file NAME_FILE names (Docker and Kubernetes secrets,
systemd credentials), as the service's own secret settings (service/notify/config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.notify.config import ChannelsFileError, EmailChannel, parse_channels

DOCUMENT = {
    "channels": {
        "ops-mail": {
            "type": "email",
            "host": "smtp.example.com",
            "username": "monitor",
            "password": "${SMTP_PASSWORD}",
            "from": "monitor@example.com",
            "to": ["ops@example.com"],
        }
    }
}


def password(environ: dict[str, str]) -> str:
    channel = parse_channels(DOCUMENT, "channels.yml", environ).channels["ops-mail"]
    assert isinstance(channel, EmailChannel) and channel.password is not None
    return channel.password.get_secret_value()


def problems(environ: dict[str, str]) -> list[str]:
    with pytest.raises(ChannelsFileError) as caught:
        parse_channels(DOCUMENT, "channels.yml", environ)
    return list(caught.value.problems)


def test_the_secret_is_read_from_the_file_without_its_newline(tmp_path: Path) -> None:
    secret = tmp_path / "smtp_password"
    secret.write_text("s3cret pass\n")
    assert password({"SMTP_PASSWORD_FILE": str(secret)}) == "s3cret pass"


def test_the_variable_still_works_and_the_file_wins(tmp_path: Path) -> None:
    assert password({"SMTP_PASSWORD": "from-env"}) == "from-env"
    secret = tmp_path / "smtp_password"
    secret.write_text("from-file")
    both = {"SMTP_PASSWORD": "from-env", "SMTP_PASSWORD_FILE": str(secret)}
    assert password(both) == "from-file"


def test_an_unreadable_file_names_the_variable_and_the_path(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    assert problems({"SMTP_PASSWORD_FILE": str(gone)}) == [
        f"channels.ops-mail: password: SMTP_PASSWORD_FILE: cannot read '{gone}': "
        "No such file or directory"
    ]
    assert problems({"SMTP_PASSWORD_FILE": str(tmp_path)}) == [
        "channels.ops-mail: password: SMTP_PASSWORD_FILE: cannot read "
        f"'{tmp_path}': not a regular file (a directory, a FIFO or a device): give the path "
        "of a file"
    ]


def test_neither_is_the_unset_variable() -> None:
    assert problems({}) == [
        "channels.ops-mail: password: environment variable SMTP_PASSWORD is not set"
    ]


def test_the_content_is_never_in_a_problem(tmp_path: Path) -> None:
    secret = tmp_path / "smtp_password"
    secret.write_bytes(b"\xffsecret\n")
    (problem,) = problems({"SMTP_PASSWORD_FILE": str(secret)})
    where = "channels.ops-mail: password: SMTP_PASSWORD_FILE"
    assert problem == f"{where}: '{secret}' is not UTF-8 text"
