"""Settings from the environment and `.env` (service/settings.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from service.cli.main import DEFAULT_HOST, DEFAULT_PORT
from service.settings import DEFAULT_DATABASE_URL, Settings, SettingsError, load_settings

from tests.support import OWNED_SETTINGS


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting from the calling shell, no stray `.env`: the cwd is an empty directory."""
    for key in list(os.environ):
        if key.upper() in OWNED_SETTINGS:
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_verify_sizes_take_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERIFY_BYTES_PER_SECOND", "50MiB")
    monkeypatch.setenv("VERIFY_MAX_EXPANDED", "10GB")
    settings = load_settings()
    assert settings.verify_bytes_per_second == 50 * 2**20
    assert settings.verify_max_expanded == 10 * 10**9


def test_verify_budget_is_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERIFY_BYTES_PER_SECOND", "0")
    with pytest.raises(SettingsError, match="VERIFY_BYTES_PER_SECOND"):
        load_settings()


def fails(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> str:
    """Set one variable, expect load_settings() to fail, return the message."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return str(caught.value)


# --- defaults -------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings()
    assert settings.model_dump() == {
        "database_url": "sqlite+aiosqlite:///./backup-monitor.db",
        "scanner_interval_minutes": 15.0,
        "tick_seconds": 5.0,
        "replica_name": None,
        "fleet_lease_seconds": 60.0,
        "host": "127.0.0.1",
        "port": 8080,
        "scan_roots": (),
        "jobs_file": None,
        "auto_migrate": True,
        "log_level": "INFO",
        "log_format": "text",
        "source_timeout_seconds": 300.0,
        "metrics_token": None,
        "api_token": None,
        "ping_key": None,
        "ping_create_every_seconds": 86400,
        "ping_create_grace_seconds": 3600,
        "access_log": False,
        "channels_file": None,
        "public_url": None,
        "notify_retry_seconds": 30.0,
        "notify_max_attempts": 24,
        "notify_poll_seconds": 2.0,
        "notify_lease_seconds": 300.0,
        "retention_days": 90.0,
        "http_header_timeout_seconds": 15.0,
        "http_max_connections": 1000,
        "watch_sources": True,
        "uvloop": True,
        "watch_refresh_seconds": 30.0,
        "public_status_tags": (),
        "verify_bytes_per_second": 200_000_000,
        "verify_workers": 2,
        "verify_poll_seconds": 5.0,
        "verify_lease_seconds": 300.0,
        "verify_retry_seconds": 300.0,
        "verify_max_ratio": 1100.0,
        "verify_max_expanded": 2**40,
        "verify_check_timeout_seconds": 3600.0,
    }
    assert settings.database_url == DEFAULT_DATABASE_URL


# --- accepted values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        pytest.param(
            "DATABASE_URL",
            "postgresql+asyncpg://postgres@db:5432/monitor",
            "database_url",
            "postgresql+asyncpg://postgres@db:5432/monitor",
            id="postgres-asyncpg",
        ),
        pytest.param(
            "DATABASE_URL",
            "sqlite+aiosqlite:////var/lib/bm.db",
            "database_url",
            "sqlite+aiosqlite:////var/lib/bm.db",
            id="sqlite-aiosqlite",
        ),
        pytest.param(
            "SCANNER_INTERVAL_MINUTES",
            "0.5",
            "scanner_interval_minutes",
            0.5,
            id="interval-fraction",
        ),
        pytest.param("SCANNER_INTERVAL_MINUTES", "60", "scanner_interval_minutes", 60.0, id="int"),
        pytest.param(
            "SCANNER_INTERVAL_MINUTES", "10080", "scanner_interval_minutes", 10080.0, id="one-week"
        ),
        pytest.param("HOST", "0.0.0.0", "host", "0.0.0.0", id="host"),
        pytest.param("PORT", "1", "port", 1, id="port-min"),
        pytest.param("PORT", "65535", "port", 65535, id="port-max"),
        pytest.param("PORT", "9090", "port", 9090, id="port"),
        pytest.param(
            "JOBS_FILE", "/etc/bm/jobs.yaml", "jobs_file", Path("/etc/bm/jobs.yaml"), id="jobs"
        ),
        pytest.param("AUTO_MIGRATE", "false", "auto_migrate", False, id="auto-migrate-false"),
        pytest.param("AUTO_MIGRATE", "0", "auto_migrate", False, id="auto-migrate-0"),
        pytest.param("AUTO_MIGRATE", "true", "auto_migrate", True, id="auto-migrate-true"),
        pytest.param("LOG_LEVEL", "debug", "log_level", "DEBUG", id="level-lower-case"),
        pytest.param("LOG_LEVEL", "Warning", "log_level", "WARNING", id="level-mixed-case"),
        pytest.param("LOG_LEVEL", "ERROR", "log_level", "ERROR", id="level-upper-case"),
        pytest.param("LOG_FORMAT", "json", "log_format", "json", id="format-json"),
        pytest.param("LOG_FORMAT", "JSON", "log_format", "json", id="format-upper-case"),
        pytest.param("LOG_FORMAT", "text", "log_format", "text", id="format-text"),
        pytest.param(
            "SOURCE_TIMEOUT_SECONDS", "2.5", "source_timeout_seconds", 2.5, id="source-timeout"
        ),
        pytest.param("WATCH_SOURCES", "false", "watch_sources", False, id="watch-off"),
        pytest.param("WATCH_SOURCES", "true", "watch_sources", True, id="watch-on"),
        pytest.param(
            "WATCH_REFRESH_SECONDS", "2.5", "watch_refresh_seconds", 2.5, id="watch-refresh"
        ),
        pytest.param("port", "9191", "port", 9191, id="variable-name-case-insensitive"),
    ],
)
def test_environment_values(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, attribute: str, expected: Any
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(load_settings(), attribute) == expected


def test_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9000")
    assert load_settings(port=9001).port == 9001
    assert load_settings().port == 9000


def test_dotenv_in_cwd_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    (clean_env / ".env").write_text("PORT=9100\nLOG_FORMAT=json\n", encoding="utf-8")
    assert (load_settings().port, load_settings().log_format) == (9100, "json")
    monkeypatch.setenv("PORT", "9200")
    assert (load_settings().port, load_settings().log_format) == (9200, "json")


def test_dotenv_errors_name_the_variable(clean_env: Path) -> None:
    (clean_env / ".env").write_text("PORT=http\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="PORT"):
        load_settings()


# --- SCAN_ROOTS -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "roots"),
    [
        pytest.param("", (), id="empty-no-restriction"),
        pytest.param("/srv/backups", ("/srv/backups",), id="one"),
        pytest.param("/srv/a:/srv/b", ("/srv/a", "/srv/b"), id="two"),
        pytest.param(" /srv/a : /srv/b ", ("/srv/a", "/srv/b"), id="spaces-stripped"),
        pytest.param("/srv/a::/srv/b:", ("/srv/a", "/srv/b"), id="empty-parts-skipped"),
        pytest.param("/srv/a/../b/./c/", ("/srv/b/c",), id="normalised"),
    ],
)
def test_scan_roots_split(
    monkeypatch: pytest.MonkeyPatch, value: str, roots: tuple[str, ...]
) -> None:
    monkeypatch.setenv("SCAN_ROOTS", value)
    scan_roots = load_settings().scan_roots
    assert scan_roots == tuple(Path(root) for root in roots)
    assert type(scan_roots) is tuple


def test_scan_roots_are_resolved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    monkeypatch.setenv("SCAN_ROOTS", f"{tmp_path / 'link'}:{tmp_path}/real/../real")
    assert load_settings().scan_roots == (real.resolve(), real.resolve())


def test_scan_roots_override_as_string() -> None:
    assert load_settings(scan_roots="/srv/a:/srv/b").scan_roots == (Path("/srv/a"), Path("/srv/b"))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("backups", id="relative"),
        pytest.param("/srv/a:backups", id="relative-after-absolute"),
        pytest.param("./backups", id="dot-relative"),
        pytest.param("~/backups", id="tilde-not-expanded"),
    ],
)
def test_scan_roots_relative_rejected(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    message = fails(monkeypatch, "SCAN_ROOTS", value)
    assert message.startswith("invalid setting SCAN_ROOTS: ")
    assert "backups' is not an absolute path" in message  # the path is quoted


# --- rejected values: one line naming the variable ------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        pytest.param("SCANNER_INTERVAL_MINUTES", "0", "greater than 0", id="interval-zero"),
        pytest.param("SCANNER_INTERVAL_MINUTES", "-1", "greater than 0", id="interval-negative"),
        pytest.param("SCANNER_INTERVAL_MINUTES", "abc", "valid number", id="interval-text"),
        pytest.param("SCANNER_INTERVAL_MINUTES", "10081", "10080", id="interval-over-a-week"),
        pytest.param("SCANNER_INTERVAL_MINUTES", "nan", "", id="interval-nan"),
        pytest.param("PORT", "0", "greater than or equal to 1", id="port-zero"),
        pytest.param("PORT", "65536", "less than or equal to 65535", id="port-too-big"),
        pytest.param("PORT", "-80", "greater than or equal to 1", id="port-negative"),
        pytest.param("PORT", "http", "valid integer", id="port-text"),
        pytest.param("PORT", "80.5", "valid integer", id="port-fraction"),
        pytest.param("PORT", "", "valid integer", id="port-empty"),
        pytest.param("LOG_LEVEL", "verbose", "'DEBUG'", id="level-unknown"),
        pytest.param("LOG_LEVEL", "", "'INFO'", id="level-empty"),
        pytest.param("LOG_FORMAT", "xml", "'text' or 'json'", id="format-unknown"),
        pytest.param("LOG_FORMAT", "logfmt", "'text' or 'json'", id="format-logfmt"),
        pytest.param(
            "DATABASE_URL", "postgresql://db/monitor", "(got 'postgresql')", id="postgres-no-driver"
        ),
        pytest.param(
            "DATABASE_URL", "postgresql+psycopg://db/m", "postgresql+asyncpg://", id="psycopg"
        ),
        pytest.param(
            "DATABASE_URL", "sqlite:///bm.db", "sqlite+aiosqlite://", id="sqlite-no-driver"
        ),
        pytest.param("DATABASE_URL", "mysql+aiomysql://db/m", "(got 'mysql+aiomysql')", id="mysql"),
        pytest.param("DATABASE_URL", "bm.db", "must start with", id="not-a-url"),
        pytest.param("AUTO_MIGRATE", "maybe", "valid boolean", id="auto-migrate"),
        pytest.param("SOURCE_TIMEOUT_SECONDS", "0", "greater than 0", id="source-timeout-zero"),
        pytest.param("SCAN_ROOTS", "rel", "not an absolute path", id="scan-roots"),
        pytest.param("PUBLIC_URL", "backups.example.com", "should match", id="public-url"),
        pytest.param("NOTIFY_MAX_ATTEMPTS", "0", "greater than or equal to 1", id="attempts"),
        pytest.param("RETENTION_DAYS", "0", "greater than 0", id="retention-zero"),
        pytest.param("WATCH_SOURCES", "sometimes", "valid boolean", id="watch-sources"),
        pytest.param(
            "WATCH_REFRESH_SECONDS", "0", "greater than or equal to 0.1", id="watch-refresh-zero"
        ),
        pytest.param(
            "WATCH_REFRESH_SECONDS", "3601", "less than or equal to 3600", id="watch-refresh-long"
        ),
        pytest.param("REPLICA_NAME", "two words", "should match", id="replica-name-space"),
        pytest.param("REPLICA_NAME", "r" * 129, "at most 128", id="replica-name-long"),
        pytest.param(
            "FLEET_LEASE_SECONDS", "0.5", "greater than or equal to 1", id="fleet-lease-short"
        ),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    message = fails(monkeypatch, variable, value)
    assert message.startswith(f"invalid setting {variable}: ")
    assert fragment in message
    assert "\n" not in message


def test_error_from_a_lower_case_variable_names_it_in_upper_case(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = fails(monkeypatch, "log_format", "xml")
    assert message.startswith("invalid setting LOG_FORMAT: ")


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        pytest.param({"port": 70000}, "PORT", id="port"),
        pytest.param({"scanner_interval_minutes": 0}, "SCANNER_INTERVAL_MINUTES", id="interval"),
        pytest.param({"scan_roots": ("rel",)}, "SCAN_ROOTS", id="scan-roots-tuple"),
        pytest.param({"database_url": "mysql://x"}, "DATABASE_URL", id="database-url"),
    ],
)
def test_bad_overrides_name_the_variable(overrides: dict[str, Any], variable: str) -> None:
    with pytest.raises(SettingsError, match=f"^invalid setting {variable}: [^\n]+$"):
        load_settings(**overrides)


def test_settings_error_hides_the_validation_error() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(port=0)
    # `from None`: the startup failure is the one line, not a pydantic traceback.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_scan_roots_error_stays_one_line_with_a_newline_in_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One root per line, as someone might write it in a compose file: the second is relative.
    message = fails(monkeypatch, "SCAN_ROOTS", "backups/a\nbackups/b")
    assert message.startswith("invalid setting SCAN_ROOTS: ")
    assert "\n" not in message


def test_metrics_token_is_read_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_TOKEN", "s3cret-token")
    settings = load_settings()
    assert settings.metrics_token is not None
    assert settings.metrics_token.get_secret_value() == "s3cret-token"
    assert "s3cret-token" not in repr(settings)


def test_api_token_is_read_never_shown_and_must_be_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", "a-long-enough-bootstrap-token")
    settings = load_settings()
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "a-long-enough-bootstrap-token"
    assert "a-long-enough" not in repr(settings)
    monkeypatch.setenv("API_TOKEN", "short")
    with pytest.raises(SettingsError, match=r"^invalid setting API_TOKEN: .*at least 16"):
        load_settings()


def test_ping_key_is_read_never_shown_and_must_be_key_shaped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PING_KEY", "hc-project_key-0123")
    settings = load_settings()
    assert settings.ping_key is not None
    assert settings.ping_key.get_secret_value() == "hc-project_key-0123"
    assert "hc-project" not in repr(settings)
    for bad in ("short", "x" * 65, "with space 0123456789", "ключ-проекта-0123456789"):
        monkeypatch.setenv("PING_KEY", bad)
        with pytest.raises(SettingsError, match=r"^invalid setting PING_KEY: .*16 to 64"):
            load_settings()


def test_public_url_loses_its_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLIC_URL", "https://backups.example.com/monitor/")
    assert load_settings().public_url == "https://backups.example.com/monitor"


def test_the_command_lines_help_says_the_settings_real_defaults():
    defaults = Settings(_env_file=None)
    assert (defaults.host, defaults.port) == (DEFAULT_HOST, DEFAULT_PORT)
