"""Secret settings given as files (`DATABASE_URL_FILE`, `API_TOKEN_FILE`, ...): Docker and
Kubernetes secrets, systemd credentials (service/settings.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.settings import SECRET_SETTINGS, Settings, SettingsError, load_settings

from tests.support import OWNED_SETTINGS

VALUES = {
    "database_url": "postgresql+asyncpg://monitor:s3cr%40t@db.example.com:5432/monitor",
    "api_token": "0123456789abcdef0123456789abcdef",
    "metrics_token": "metrics-0123456789",
    "ping_key": "hc-project_key-0123",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting from the calling shell, no stray `.env`: the cwd is an empty directory."""
    for key in list(os.environ):
        if key.upper() in OWNED_SETTINGS:
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def value_of(settings: Settings, name: str) -> str:
    value = getattr(settings, name)
    return value if isinstance(value, str) else value.get_secret_value()


def test_every_secret_setting_has_a_file_variant() -> None:
    assert set(SECRET_SETTINGS) == set(VALUES)
    for name in SECRET_SETTINGS:
        assert f"{name}_file" in Settings.model_fields
    # The secret-looking settings of the model are all among them.
    secrets = {
        name
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation) or name == "database_url"
    }
    assert secrets == set(SECRET_SETTINGS)


@pytest.mark.parametrize("name", SECRET_SETTINGS)
@pytest.mark.parametrize("ending", ["", "\n", "\r\n"], ids=["bare", "lf", "crlf"])
def test_a_secret_is_read_from_its_file_without_the_line_break(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, ending: str
) -> None:
    secret = tmp_path / f"{name}.secret"
    secret.write_bytes((VALUES[name] + ending).encode())
    monkeypatch.setenv(f"{name.upper()}_FILE", str(secret))
    settings = load_settings()
    assert value_of(settings, name) == VALUES[name]
    assert f"{name}_file" not in settings.model_dump()


def test_only_one_line_break_is_dropped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("0123456789abcdef \n\n")
    monkeypatch.setenv("API_TOKEN_FILE", str(secret))
    assert value_of(load_settings(), "api_token") == "0123456789abcdef \n"


@pytest.mark.parametrize("name", SECRET_SETTINGS)
def test_the_file_wins_over_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    # An image sets DATABASE_URL for its default database; a secret file given later wins.
    secret = tmp_path / "secret"
    secret.write_text(VALUES[name] + "\n")
    other = "sqlite+aiosqlite:////data/x.db" if name == "database_url" else "z" * 20
    monkeypatch.setenv(name.upper(), other)
    monkeypatch.setenv(f"{name.upper()}_FILE", str(secret))
    assert value_of(load_settings(), name) == VALUES[name]


def test_the_file_may_be_named_in_dotenv(clean_env: Path) -> None:
    (clean_env / "token").write_text(VALUES["api_token"] + "\n")
    (clean_env / ".env").write_text(f"API_TOKEN_FILE={clean_env / 'token'}\n")
    assert value_of(load_settings(), "api_token") == VALUES["api_token"]


def test_an_empty_file_variable_is_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN_FILE", "")
    assert load_settings().api_token is None


def test_a_missing_file_names_the_variable_and_the_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "nope"))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message == (
        f"invalid setting DATABASE_URL_FILE: cannot read '{tmp_path / 'nope'}': "
        "No such file or directory"
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_directory_or_a_fifo_is_refused_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo):
        monkeypatch.setenv("PING_KEY_FILE", str(path))
        with pytest.raises(SettingsError, match=r"^invalid setting PING_KEY_FILE: .*regular file"):
            load_settings()


def test_a_huge_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (1024 * 1024))
    monkeypatch.setenv("METRICS_TOKEN_FILE", str(big))
    with pytest.raises(SettingsError, match=r"^invalid setting METRICS_TOKEN_FILE: .*larger"):
        load_settings()


def test_errors_never_show_the_content(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("not a key: top-secret-words\n")
    monkeypatch.setenv("PING_KEY_FILE", str(secret))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith("invalid setting PING_KEY: must be 16 to 64")
    assert "top-secret" not in str(caught.value)

    secret.write_bytes(b"\xffsecret-bytes\xfe")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == f"invalid setting PING_KEY_FILE: '{secret}' is not UTF-8 text"


def test_a_bad_database_url_in_a_file_is_refused_without_its_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "url"
    secret.write_text("mysql://user:hunter2@db/x\n")
    monkeypatch.setenv("DATABASE_URL_FILE", str(secret))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith("invalid setting DATABASE_URL: must start with")
    assert "hunter2" not in str(caught.value)


def test_secrets_read_from_files_are_never_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("api_token", "metrics_token", "ping_key"):
        (tmp_path / name).write_text(VALUES[name])
        monkeypatch.setenv(f"{name.upper()}_FILE", str(tmp_path / name))
    settings = load_settings()
    for name in ("api_token", "metrics_token", "ping_key"):
        assert VALUES[name] not in repr(settings)
        assert VALUES[name] not in str(settings.model_dump())
