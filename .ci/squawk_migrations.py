"""Squawk, the PostgreSQL migration linter, on the SQL of every migration.

Each revision's SQL is what a DBA would run: `alembic upgrade <previous>:<revision> --sql` for
PostgreSQL (offline mode, run in-process: one alembic import for all of them), one file per
migration named after it. Squawk reads them with the repository's `.squawk.toml`; a finding
passes only when .ci/squawk_accepted.toml accepts that rule for that revision, with a
reason. An accepted finding that no longer occurs fails too, so the list stays true.

    .venv/bin/python .ci/squawk_migrations.py               # what `make lint`/`make test` run
    .venv/bin/python .ci/squawk_migrations.py --keep sql/   # and keep the SQL to read it

Exit status: 0 clean, 1 findings (or stale acceptances), 2 the check itself could not run.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ACCEPTED = Path(__file__).resolve().with_name("squawk_accepted.toml")
SQUAWK = Path(sys.executable).with_name("squawk")
# Offline mode never connects: the URL only chooses the dialect.
OFFLINE_URL = "postgresql+asyncpg://offline@localhost/offline"


@dataclass(frozen=True)
class Migration:
    revision: str
    previous: str | None
    path: Path  # the migration's .py file


def migrations(script_location: Path) -> list[Migration]:
    """Every migration present, oldest first (parallel branches included, each after its parent)."""
    from alembic.script import ScriptDirectory

    from service.db import migrate

    config = migrate.alembic_config(OFFLINE_URL)
    config.set_main_option("script_location", str(script_location))
    found = []
    for script in reversed(list(ScriptDirectory.from_config(config).walk_revisions())):
        previous = script.down_revision
        if isinstance(previous, tuple | list):
            # A merge point has no SQL of its own, and `a:b` ranges take a single start.
            continue
        found.append(Migration(script.revision, previous, Path(script.path)))
    return found


def offline_sql(script_location: Path, migration: Migration) -> str:
    """The PostgreSQL SQL of one migration, as `alembic upgrade prev:rev --sql` prints it."""
    from alembic import command
    from service.db import migrate

    config = migrate.alembic_config(OFFLINE_URL)
    config.set_main_option("script_location", str(script_location))
    buffer = io.StringIO()
    config.output_buffer = buffer
    target = migration.revision
    if migration.previous is not None:
        target = f"{migration.previous}:{migration.revision}"
    command.upgrade(config, target, sql=True)
    return buffer.getvalue()


def load_accepted(path: Path) -> dict[str, dict[str, str]]:
    """{revision: {rule: reason}}; a reason is required."""
    with path.open("rb") as file:
        data: dict[str, Any] = tomllib.load(file)
    accepted: dict[str, dict[str, str]] = {}
    for revision, rules in data.items():
        if not isinstance(rules, dict):
            raise ValueError(f"{path.name}: [{revision}] must be a table of rule = reason")
        for rule, reason in rules.items():
            if not isinstance(reason, str) or not reason.strip():
                raise ValueError(f"{path.name}: [{revision}] {rule} needs a reason (a string)")
        accepted[revision] = dict(rules)
    return accepted


def squawk(files: list[Path], config: Path) -> list[dict[str, Any]]:
    """Squawk's findings on the files (its JSON report)."""
    result = subprocess.run(
        [str(SQUAWK), "--config", str(config), "--reporter", "json", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        findings: list[dict[str, Any]] = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"squawk failed ({result.returncode}): {result.stderr.strip()}") from exc
    return findings


def check(script_location: Path, accepted_path: Path, keep: Path | None) -> int:
    accepted = load_accepted(accepted_path)
    found = migrations(script_location)
    with tempfile.TemporaryDirectory(prefix="squawk-") as scratch:
        directory = keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        sql_files: dict[str, Migration] = {}
        for migration in found:
            sql_file = directory / f"{migration.path.stem}.sql"
            sql_file.write_text(offline_sql(script_location, migration), encoding="utf-8")
            sql_files[sql_file.name] = migration
        findings = squawk([directory / name for name in sql_files], REPO / ".squawk.toml")
        lines = {
            name: (directory / name).read_text(encoding="utf-8").splitlines() for name in sql_files
        }

    failures = 0
    seen: set[tuple[str, str]] = set()
    for finding in findings:
        migration = sql_files[Path(finding["file"]).name]
        rule = finding["rule_name"]
        seen.add((migration.revision, rule))
        if rule in accepted.get(migration.revision, {}):
            continue
        failures += 1
        sql_lines = lines[Path(finding["file"]).name]
        statement = sql_lines[finding["line"]].strip() if finding["line"] < len(sql_lines) else ""
        print(f"{shown(migration.path)} ({migration.revision}): {rule}: {finding['message']}")
        print(f"    SQL: {statement}")
        if finding.get("help"):
            print(f"    help: {finding['help']}")
    present = {migration.revision for migration in found}
    for revision, rules in accepted.items():
        for rule in rules:
            if revision in present and (revision, rule) in seen:
                continue
            failures += 1
            print(
                f"{accepted_path.name}: [{revision}] {rule} is accepted but squawk no longer "
                "finds it there: remove the entry"
            )
    print(
        f"squawk: {len(found)} migrations, {len(findings)} findings, {failures} to fix"
        f" (accepted: {shown(accepted_path)})" + (", see README, Migrations" if failures else "")
    )
    return 1 if failures else 0


def shown(path: Path) -> Path:
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep", type=Path, help="write the SQL files to this directory")
    parser.add_argument(
        "--script-location",
        type=Path,
        default=REPO / "alembic",
        help="the alembic directory (default: the repository's)",
    )
    parser.add_argument("--accepted", type=Path, default=ACCEPTED, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        return check(args.script_location, args.accepted, args.keep)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"squawk_migrations: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
