"""Python processes of the service's own (the walker and the verification processes): started
with the service's interpreter, on the service's own code, whatever the working directory holds.

May import the standard library only."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The directory the running service's package was imported from.
_ROOT = str(Path(__file__).resolve().parents[1])


def python_module(module: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment of `python -m module` as this process imports it: -P keeps
    the working directory off sys.path (a `service/` there, another application's or an older
    checkout, would be run instead), PYTHONPATH leads with where this service comes from."""
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": f"{_ROOT}{os.pathsep}{path}" if path else _ROOT}
    return [sys.executable, "-P", "-m", module], env
