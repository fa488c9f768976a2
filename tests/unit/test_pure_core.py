"""The pure core imports nothing that does I/O: no database, no HTTP, no filesystem walking.

Each module is imported alone in a fresh interpreter (an import made earlier in this process,
or by another test, would hide one), and the modules it loaded are checked. A failure names the
forbidden modules that came in; `python -X importtime -c "import MODULE"` shows through which
import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# The pure core: every module of service.core (the job declaration and its units, the judgement
# of a job, the shared words), and notify's pure rules (the notices and when they are owed, the
# silence windows). Pydantic and cronsim are allowed (they compute).
CORE_DIR = Path(__file__).resolve().parents[2] / "service" / "core"
PURE_CORE = (
    "service.core",
    *sorted(f"service.core.{path.stem}" for path in CORE_DIR.glob("[!_]*.py")),
    "service.notify.notice",
    "service.notify.events",
    "service.notify.silences",
)

# Third-party packages that talk to a database, the network or a mail server, or schedule work.
FORBIDDEN_PACKAGES = frozenset({
    "sqlalchemy", "aiohttp", "asyncpg", "aiosqlite", "alembic", "apscheduler", "aiosmtplib",
    "apprise", "watchfiles",
})  # fmt: skip
# This service's own I/O layers: the database, the SQL, the sources that walk the filesystem, the
# runtime and the HTTP surfaces.
FORBIDDEN_OWN = (
    "service.db", "service.store", "service.scanner.sources", "service.runtime", "service.http",
)  # fmt: skip

_LIST_MODULES = "import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"


def forbidden(loaded: list[str]) -> list[str]:
    """The forbidden packages and own modules among `loaded` (a package once, not each of its
    submodules)."""
    packages = {name.partition(".")[0] for name in loaded} & FORBIDDEN_PACKAGES
    own = {
        name
        for name in loaded
        if any(name == layer or name.startswith(layer + ".") for layer in FORBIDDEN_OWN)
    }
    return sorted(packages | own)


def modules_loaded_by(module: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _LIST_MODULES.format(module=module)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout)
    return loaded


@pytest.mark.parametrize("module", PURE_CORE)
def test_a_pure_module_imports_no_io_library(module):
    loaded = modules_loaded_by(module)
    assert module in loaded
    io = forbidden(loaded)
    assert not io, f"{module} loads {', '.join(io)}"


def test_the_check_sees_an_io_import():
    """The check itself: a module known to use the database is caught."""
    assert "sqlalchemy" in {
        name.partition(".")[0] for name in forbidden(modules_loaded_by("service.db.models"))
    }
