"""Checksum sidecars: the files written next to a backup with its digest (pure: no I/O).

Looked for, in this order: FILE.sha256, FILE.sha512, FILE.md5 (one digest, alone or with the
file's name, GNU `sha256sum` or BSD `sha256 -r`/`shasum --tag` style), then SHA256SUMS,
SHA512SUMS, MD5SUMS in the same directory (one line per file, as sha256sum writes them; a PGP
clear-signed one is read too, its signature is not checked).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Algorithm = Literal["sha256", "sha512", "md5"]
MAX_SIDECAR_BYTES = 4 * 1024 * 1024  # a SUMS file of ~40 000 lines; larger: not a sidecar

_ALGORITHMS: tuple[Algorithm, ...] = ("sha256", "sha512", "md5")
_HEX_LENGTH = {"sha256": 64, "sha512": 128, "md5": 32}
_SUMS = {"SHA256SUMS": "sha256", "SHA512SUMS": "sha512", "MD5SUMS": "md5"}
# GNU: "<hex>  name" or "<hex> *name" (binary mode); a line starting with "\" has escaped
# backslashes and newlines in the name.
_GNU = re.compile(r"^(\\?)([0-9a-fA-F]+)(?:\s[ *]?(.*))?$")
# BSD / shasum --tag: "SHA256 (name) = <hex>"; openssl dgst: "SHA2-256(name)= <hex>"
_BSD = re.compile(
    r"^(SHA256|SHA512|MD5|SHA2-256|SHA2-512) ?\((.*)\) ?= ?([0-9a-fA-F]+)$", re.IGNORECASE
)


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


def _split(name: str) -> tuple[str, str]:
    directory, _, base = name.rpartition("/")
    return (directory + "/" if directory else ""), base


def sidecar_names(name: str) -> tuple[str, ...]:
    """The sidecar names to look for, in order, for artifact `name` (a path relative to the
    source root, "/"-separated: the SUMS files are in its directory)."""
    directory, _ = _split(name)
    return (*(f"{name}.{algorithm}" for algorithm in _ALGORITHMS),
            *(directory + sums for sums in _SUMS))  # fmt: skip


def is_sidecar(name: str) -> bool:
    """Whether `name` is itself a sidecar (FILE.sha256, SHA256SUMS, ...): not an artifact to
    verify."""
    _, base = _split(name)
    return base in _SUMS or base.lower().endswith(tuple(f".{a}" for a in _ALGORITHMS))


def _algorithm_of(sidecar_name: str) -> tuple[Algorithm, bool]:
    """The sidecar's algorithm, and whether it is a SUMS file (many names) or a FILE.ext one."""
    _, base = _split(sidecar_name)
    if base in _SUMS:
        return _ALGORITHMS[list(_SUMS).index(base)], True
    for algorithm in _ALGORITHMS:
        if base.lower().endswith("." + algorithm):
            return algorithm, False
    raise ValueError(f"{sidecar_name!r} is not a sidecar name (see sidecar_names)")


def _lines(sidecar_name: str, content: bytes) -> list[str]:
    if len(content) > MAX_SIDECAR_BYTES:
        raise SidecarError(
            f"{sidecar_name} is {len(content)} bytes: too large for a checksum file "
            f"(at most {MAX_SIDECAR_BYTES}); is it one?"
        )
    if b"\0" in content:
        raise SidecarError(f"{sidecar_name} is a binary file, not a checksum file")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = content.decode("latin-1")  # names in a legacy encoding: the digests are ASCII
    lines = text.removeprefix("\ufeff").splitlines()
    if lines and lines[0].strip() == "-----BEGIN PGP SIGNED MESSAGE-----":
        lines = _unarmor(lines)
    return [line.rstrip("\r") for line in lines if line.strip() and not line.startswith("#")]


def _unarmor(lines: list[str]) -> list[str]:
    """The signed text of a PGP clear-signed message (the signature is not checked here)."""
    try:
        body_start = lines.index("", 1) + 1  # the armor headers ("Hash: SHA512") end at a blank
    except ValueError:
        return []
    body = []
    for line in lines[body_start:]:
        if line.strip() == "-----BEGIN PGP SIGNATURE-----":
            break
        body.append(line[2:] if line.startswith("- ") else line)  # dash-escaped lines
    return body


def _parse_line(line: str) -> tuple[str | None, str, str | None] | None:
    """(algorithm named in the line or None, hex digest, file name or None), or None."""
    found = _BSD.match(line.strip())
    if found is not None:
        return found.group(1).lower().replace("2-", ""), found.group(3), found.group(2)
    found = _GNU.match(line.strip())
    if found is None:
        return None
    escaped, digest, name = found.groups()
    if name is not None and escaped:
        name = name.replace("\\n", "\n").replace("\\\\", "\\")
    return None, digest, name


def _same_file(listed: str, artifact_name: str, relative_to: str) -> bool:
    """Whether a name in a sidecar is the artifact (by its name in the sidecar's directory)."""
    listed = listed.removeprefix("./")
    _, base = _split(artifact_name)
    relative = artifact_name[len(relative_to) :] if artifact_name.startswith(relative_to) else base
    return listed in (base, relative)


def parse_sidecar(sidecar_name: str, content: bytes, artifact_name: str) -> Expected:
    """The digest `sidecar_name` (one of sidecar_names(artifact_name)) gives for the artifact.
    SidecarError when the content is not a checksum file of that kind; NoSidecarEntry when a
    SUMS file does not list the artifact."""
    algorithm, is_sums = _algorithm_of(sidecar_name)
    lines = _lines(sidecar_name, content)
    length = _HEX_LENGTH[algorithm]
    directory, _ = _split(sidecar_name)
    _, base = _split(artifact_name)
    example = f"'<{length} hex digits>  {base}'"
    if not lines:
        raise SidecarError(f"{sidecar_name} is empty: no {algorithm} digest in it")
    entries = []
    for number, line in enumerate(lines, 1):
        parsed = _parse_line(line)
        if parsed is None or (parsed[0] is not None and parsed[0] != algorithm):
            raise SidecarError(
                f"{sidecar_name} is not a {algorithm} checksum file: line {number} reads "
                f"{line[:60]!r}; expected {example}"
            )
        _, digest, name = parsed
        if len(digest) != length:
            kind = {32: "an md5", 64: "a sha256", 128: "a sha512", 40: "a sha1"}.get(
                len(digest), f"a {len(digest)}-digit"
            )
            raise SidecarError(
                f"{sidecar_name} holds {kind} digest on line {number}, not a {algorithm} one "
                f"({length} hex digits): is it a sidecar of another kind?"
            )
        entries.append((digest.lower(), name))
    if not is_sums and len(entries) == 1:
        # FILE.sha256 is about FILE whatever name it gives (written before a rename, or with a
        # path): the one digest in it is FILE's
        return Expected(algorithm, entries[0][0], sidecar_name)
    found = [digest for digest, name in entries
             if name is not None and _same_file(name, artifact_name, directory)]  # fmt: skip
    if not found:
        if is_sums:
            raise NoSidecarEntry(f"{sidecar_name} does not list {base}")
        raise SidecarError(
            f"{sidecar_name} lists {len(entries)} digests and none for {base}; expected {example}"
        )
    if len(set(found)) > 1:
        raise SidecarError(f"{sidecar_name} lists {base} {len(found)} times with different digests")
    return Expected(algorithm, found[0], sidecar_name)
