"""The command line starts fast (issue 16): `--help` imports none of the heavy packages, and a
command on a database already at head does not import alembic to find that out (one version
query, the head read from the migrations' file names). Each case runs in a fresh process,
which is the only place `sys.modules` tells what a command imported."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from service.db import migrate

from tests.support import in_thread

HEAVY = ("sqlalchemy", "aiohttp", "alembic", "pydantic", "apprise", "botocore", "aiobotocore")
# Runs the command line in-process, then prints which heavy packages it imported.
PROBE = """
import json, sys
from service.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(HEAVY)))
print(json.dumps({"code": code, "heavy": heavy}))
"""


def probe(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, object]:
    command = [sys.executable, "-c", PROBE.replace("HEAVY", repr(json.dumps(HEAVY))), *args]
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["scan", "--help"],
        ["check", "--help"],
        ["jobs", "apply", "--help"],
        ["jobs", "export", "--help"],
        ["import", "healthchecks", "--help"],
    ],
)
def test_help_imports_no_heavy_package(args, base_env, tmp_path):
    assert probe(args, base_env, tmp_path) == {"code": 0, "heavy": []}


def test_head_revision_from_the_file_names_is_alembics_head():
    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    assert migrate.head_revision() == script.get_current_head()
    for revision in script.walk_revisions():
        assert revision.path is not None
        assert Path(revision.path).name.startswith(f"{revision.revision}_"), revision.path
    names = [path.name for path in (migrate.script_location() / "versions").glob("*.py")]
    assert len([name for name in names if re.match(r"^\d{4}_", name)]) == len(
        list(script.walk_revisions())
    )


def test_a_scan_at_head_does_not_import_alembic(database_url, base_env, tmp_path):
    env = dict(base_env, DATABASE_URL=database_url, AUTO_MIGRATE="true", LOG_LEVEL="WARNING")
    assert probe(["scan", "--format", "json"], env, tmp_path) == {
        "code": 3,  # no job declared: UNKNOWN
        "heavy": ["pydantic", "sqlalchemy"],
    }


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_database_behind_head_is_still_migrated(kind, request, tmp_path):
    """Not at head (one revision behind, or a new SQLite file): alembic runs, to head."""
    previous = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_revision(
        migrate.head_revision()
    )
    assert previous is not None and isinstance(previous.down_revision, str)
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"
        assert not migrate.at_head(url)
        assert not (tmp_path / "new.db").exists(), "the check created the SQLite file"
    else:
        url = request.getfixturevalue("pg_url")
        assert migrate.at_head(url)
        in_thread(lambda: migrate.downgrade(url, str(previous.down_revision)))
        assert not migrate.at_head(url)
    in_thread(lambda: migrate.upgrade(url))
    assert migrate.at_head(url)
