"""Secrets given as files, through the real command (what the Kubernetes init container, the
compose file and the systemd unit run): `db upgrade` with DATABASE_URL_FILE."""

from __future__ import annotations

import os

from sqlalchemy.engine import make_url

from tests.support import cli


async def test_db_upgrade_reads_the_database_url_from_its_file(base_env, database_url, tmp_path):
    secret = tmp_path / "database_url"
    secret.write_text(database_url + "\n")
    image_default = tmp_path / "image-default.db"
    result = await cli(
        "db", "upgrade",
        env=base_env, database_url=f"sqlite+aiosqlite:///{image_default}", cwd=tmp_path,
        DATABASE_URL_FILE=str(secret),
    )  # fmt: skip
    assert result.code == 0, result
    shown = make_url(database_url).render_as_string(hide_password=True)
    assert result.out == f"database {shown} is at the latest schema\n"
    assert image_default.name not in os.listdir(tmp_path), "the variable was used, not the file"


async def test_an_unreadable_secret_file_stops_the_command_in_one_line(base_env, tmp_path):
    missing_file = tmp_path / "nowhere" / "api_token"
    result = await cli(
        "db", "upgrade",
        env=base_env, database_url=None, cwd=tmp_path, API_TOKEN_FILE=str(missing_file),
    )  # fmt: skip
    assert result.code == 2, result
    assert result.err == (
        f"backup-monitor: invalid setting API_TOKEN_FILE: cannot read '{missing_file}': "
        "No such file or directory\n"
    )
    assert "backup-monitor.db" not in os.listdir(tmp_path)
