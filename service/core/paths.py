"""Where a path lies, symlinks resolved: the one test the declarations (a source inside
SCAN_ROOTS) and the walker (a symlink inside its source) share. Standard library only: the
walker processes import it without the declarations' pydantic."""

from __future__ import annotations

import os
from collections.abc import Sequence

TYPE_CHECKING = False  # typing: a sixth of a walker process's start-up
if TYPE_CHECKING:  # not imported: pathlib is a tenth of a walker process's start-up
    from pathlib import Path


def path_within_roots(path: str, roots: Sequence[str | Path]) -> bool:
    """True when `path`, symlinks and `..` resolved, lies inside one of `roots`."""
    real = os.path.realpath(path)
    return any(real == str(root) or real.startswith(str(root).rstrip("/") + "/") for root in roots)
