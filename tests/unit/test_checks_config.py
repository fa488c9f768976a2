"""The git hook (.pre-commit-config.yaml) and `make lint` (which `make test` runs) check the same
things, with the tools pinned in uv.lock and nothing downloaded."""

from __future__ import annotations

import re
import shlex

import yaml

from tests.support import REPO


def hook_commands() -> set[tuple[str, ...]]:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    # A remote hook repository would be cloned (and its tool installed) from the network.
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    commands = set()
    for hook in config["repos"][0]["hooks"]:
        assert hook["language"] == "system", hook["id"]
        program, *args = shlex.split(hook["entry"])
        assert program.startswith(".venv/bin/"), hook["id"]
        commands.add(command_of(program.removeprefix(".venv/bin/"), args))
    return commands


def lint_commands() -> set[tuple[str, ...]]:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None
    commands = set()
    for line in recipe[1].splitlines():
        program, *args = shlex.split(line.strip())
        commands.add(command_of(program.removeprefix("$(BIN)/"), args))
    return commands


def command_of(program: str, args: list[str]) -> tuple[str, ...]:
    """What a command runs: the tool, with its subcommand (`ruff format`) or script."""
    if program in ("ruff", "python") and args:
        return (program, args[0])
    return (program,)


def test_the_git_hook_and_make_lint_run_the_same_checks():
    assert hook_commands() == lint_commands()
    assert ("python", ".ci/squawk_migrations.py") in lint_commands()
