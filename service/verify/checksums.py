"""Checksum sidecars: the files written next to a backup with its digest (pure: no I/O).

Looked for, in this order: FILE.sha256, FILE.sha512, FILE.md5 (one digest, with or without the
file's name, GNU or BSD style), then SHA256SUMS, SHA512SUMS, MD5SUMS in the same directory (one
line per file, as sha256sum writes them; a PGP clear-signed one is read too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Algorithm = Literal["sha256", "sha512", "md5"]
MAX_SIDECAR_BYTES = 4 * 1024 * 1024  # a SUMS file of ~40 000 lines; larger: not a sidecar


@dataclass(frozen=True, slots=True)
class Expected:
    """What a sidecar says the artifact's digest is."""

    algorithm: Algorithm
    hexdigest: str  # lowercase
    source: str  # the sidecar's name, as given to parse_sidecar (shown in messages)


class SidecarError(Exception):
    """A sidecar that cannot be read as a checksum file (foreign format, wrong digest length,
    binary, too large): a distinct result, never a mismatch. The message is a sentence."""


class NoSidecarEntry(Exception):
    """A SUMS file that does not list the artifact (the same as no sidecar: look further)."""


def sidecar_names(name: str) -> tuple[str, ...]:
    """The sidecar names to look for, in order, for artifact `name` (a path relative to the
    source root, "/"-separated: the SUMS files are in its directory)."""
    raise NotImplementedError


def is_sidecar(name: str) -> bool:
    """Whether `name` is itself a sidecar (FILE.sha256, SHA256SUMS, ...): not an artifact to
    verify."""
    raise NotImplementedError


def parse_sidecar(sidecar_name: str, content: bytes, artifact_name: str) -> Expected:
    """The digest `sidecar_name` (one of sidecar_names(artifact_name)) gives for the artifact.
    SidecarError when the content is not a checksum file of that kind; NoSidecarEntry when a
    SUMS file does not list the artifact."""
    raise NotImplementedError
