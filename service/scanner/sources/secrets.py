"""Secrets of a source, resolved when it is listed: a declaration holds `${VARIABLE}` (read from
the service's environment now) or a `*_file` path (read now), never the value (see
service.core.jobspec.SecretRef). A secret that cannot be had is a SourceError that names where it
was looked for, never what it is; the value lives only in the adapter's call."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from service.config.settingfile import UnreadableFile, read_setting_file
from service.scanner.sources.base import SourceError

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_SECRET_BYTES = 64 * 1024


def expand(text: str, what: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with every `${VARIABLE}` replaced by the variable's value; SourceError naming
    `what` and the variable when one is not set."""
    env = os.environ if environ is None else environ

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise SourceError(f"{what}: environment variable {name} is not set for the service")
        return env[name]

    return _REFERENCE.sub(value, text)


def read_secret_file(path: str, what: str) -> str:
    """The secret in a file (its first line, without the line break, as restic and borg read
    a password file); SourceError saying why it cannot be read."""
    try:
        data = read_setting_file(path, MAX_SECRET_BYTES)
    except UnreadableFile as exc:
        raise SourceError(f"{what}: {path}: {exc}") from None
    except OSError as exc:
        raise SourceError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    text = data.decode("utf-8", "replace")
    return text.splitlines()[0] if text else ""


def resolve(
    reference: str | None, file: str | None, what: str, environ: Mapping[str, str] | None = None
) -> str | None:
    """The secret given by a `${VARIABLE}` reference or a file (None when neither is given)."""
    if reference is not None:
        return expand(reference, what, environ)
    if file is not None:
        return read_secret_file(file, what)
    return None


def environment(
    declared: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A tool's declared environment (`env:`), every `${VARIABLE}` expanded."""
    return {name: expand(text, f"env {name}", environ) for name, text in declared.items()}
