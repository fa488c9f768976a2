"""The scanner's modules import what their docstrings allow, and no more (their own imports,
read from the source: what each module itself depends on)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import service

SCANNER = Path(service.__file__).parent / "scanner"
STDLIB = sys.stdlib_module_names

# Per module: the project and third-party modules it may import (a name, or a package prefix).
ALLOWED = {
    "state.py": {
        "service.core.jobspec",
        "service.core.kinds",
        "service.core.rules",
        "service.notify.events",
        "service.scanner.sources.base",
    },
    "inventory.py": {"service.scanner.sources.base"},
    "judge.py": {
        "service.core.jobspec",
        "service.core.rules",
        "service.scanner.state",
        "service.notify.events",
    },
    "pipeline.py": {
        "pydantic",
        "service.core.jobspec",
        "service.db.errors",
        "service.scanner.sources",
        "service.scanner.state",
    },
}
# Never in any of them: the database, the HTTP stack.
FORBIDDEN = (
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "aiohttp",
    "service.db.models",
    "service.db.engine",
)


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def allowed(module: str, names: set[str]) -> bool:
    top = module.split(".")[0]
    if top in STDLIB or module == "__future__":
        return True
    return any(module == name or module.startswith(name + ".") for name in names)


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_the_module_imports_only_what_its_layer_allows(name: str) -> None:
    modules = imports_of(SCANNER / name)
    assert not [m for m in modules if m.startswith(FORBIDDEN)], modules
    assert [m for m in sorted(modules) if not allowed(m, ALLOWED[name])] == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from sqlalchemy import select\nimport service.db.models\n")
    assert imports_of(bad) == {"sqlalchemy", "service.db.models"}
    assert not allowed("sqlalchemy", ALLOWED["judge.py"])
