"""borg repositories: an artifact is an archive (its name), dated by the archive's time, sized
by its original size (`borg info --json REPO::NAME`, computed once: an archive never changes,
so a size already stored is read back through `known`, never computed again).

One listing is one `borg list --json` (with `--glob-archives` when `archives` is declared),
plus one `borg info` per archive whose size is not stored yet (newest first, one at a time:
borg locks its cache, within process.size_budget).

The repository (BORG_REPO), the passphrase (BORG_PASSPHRASE) and the declared `env:` reach
borg through its environment only. borg never asks anything: stdin is /dev/null, and a
relocated or unknown unencrypted repository is refused (BORG_RELOCATED_REPO_ACCESS_IS_OK=no,
BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=no, unless `env:` says yes). borg 1.x writes times
in the local zone without an offset: it runs with TZ=UTC, so they are UTC.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from service.core.jobspec import BorgSource
from service.scanner.sources import process
from service.scanner.sources.base import KnownSizes, Listing, SourceError, nothing_known
from service.scanner.sources.secrets import environment, resolve

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INFO_CONCURRENCY = 1  # borg info locks the repository's cache: one at a time


@dataclass(frozen=True, slots=True)
class Archive:
    name: str
    time_us: int
    id: str


def time_us(text: object) -> int:
    """Microseconds since the epoch of a borg time (naive: UTC, since borg runs with TZ=UTC)."""
    if not isinstance(text, str):
        raise ValueError(f"not a borg time: {text!r}")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def parse_archives(data: bytes) -> list[Archive]:
    """`borg list --json`'s archives; SourceError when the answer is not that."""
    try:
        answer = json.loads(data)
        items = answer["archives"]
        if not isinstance(items, list):
            raise ValueError("archives is not a list")
        return [_archive(item) for item in items]
    except (ValueError, TypeError, KeyError) as exc:
        raise SourceError(
            f"borg list answered something that is not a list of archives ({exc}); "
            "is this borg's own binary, of version 1.1 or later?"
        ) from None


def _archive(item: Any) -> Archive:
    name = item["name"]
    if not isinstance(name, str) or not name:
        raise ValueError("an archive without a name")
    return Archive(name, time_us(item.get("time") or item["start"]), str(item.get("id", "")))


def parse_info(data: bytes, name: str) -> tuple[int, dict[str, Any]]:
    """`borg info --json REPO::NAME`: the archive's original size and its details."""
    try:
        (archive,) = [a for a in json.loads(data)["archives"] if a["name"] == name]
        stats = archive["stats"]
        size = stats["original_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("original_size is not a size")
        details = {
            "id": archive.get("id"),
            "hostname": archive.get("hostname"),
            "compressed_size": stats.get("compressed_size"),
            "deduplicated_size": stats.get("deduplicated_size"),
            "nfiles": stats.get("nfiles"),
        }
    except (ValueError, TypeError, KeyError) as exc:
        raise SourceError(
            f"borg info answered no size for archive {name} ({exc}); is this borg's own binary?"
        ) from None
    return size, details


def advice(message: str) -> str | None:
    """What to check, from borg's own words."""
    lowered = message.lower()
    if "passphrase" in lowered and "incorrect" in lowered:
        return "check passphrase or passphrase_file: it does not open this repository"
    if "can not acquire a passphrase" in lowered:
        return "the repository is encrypted: give passphrase or passphrase_file"
    if "lock" in lowered and ("failed" in lowered or "timeout" in lowered):
        return (
            "another borg command holds the repository's lock (a create, prune or compact); "
            "a stale lock is removed with `borg break-lock`"
        )
    if "does not exist" in lowered or "is not a valid repository" in lowered:
        return "check repository: is there a borg repository there, and can the service reach it?"
    if "unknown unencrypted repository" in lowered:
        return (
            "an unencrypted repository this service has never opened: if it is yours, declare "
            "env BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes' once"
        )
    if "relocated" in lowered:
        return (
            "the repository moved since this service last opened it: if that is expected, "
            "declare env BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes' once"
        )
    if "unsupported repository version" in lowered or "newer version" in lowered:
        return "the repository's format is newer than this borg: upgrade borg"
    if "connection closed by remote host" in lowered or "remote: " in lowered:
        return "check the ssh connection (host, key, BORG_RSH in env)"
    return None


async def check_repository(
    source: BorgSource,
    *,
    timeout: float,  # noqa: ASYNC109 (out of time: a result, not an error)
) -> process.RepositoryCheck:
    """`borg check --repository-only` of the source's repository (every segment entry's CRC, the
    index against the segments; no passphrase needed). Not ok with borg's own error lines when
    it finds damage (`damaged`), cannot open the repository or takes longer than `timeout`. It
    holds the repository's lock while it runs."""
    listing = BorgListing(source, nothing_known)
    return await process.check_repository(
        ["borg", "check", "--repository-only"], listing._environment, where=listing.label,
        advice=advice, damage=_damaged, timeout=timeout,
    )  # fmt: skip


def _damaged(finished: process.Finished) -> bool:
    said = finished.stderr.lower()
    return "errors found" in said or "integrity error" in said


class BorgListing:
    """A borg repository as a RemoteSource."""

    kind = "borg"

    def __init__(self, spec: BorgSource, known: KnownSizes) -> None:
        self.spec = spec
        self.known = known
        self.label = spec.location()
        self.timeout: float | None = spec.timeout

    async def list(self) -> Listing:
        env, secrets = await self._environment()
        glob = ["--glob-archives", self.spec.archives] if self.spec.archives else []
        archives = [
            process.Immutable(archive.name, archive.time_us, {"id": archive.id})
            for archive in parse_archives(await self._borg(["list", "--json", *glob], env, secrets))
        ]

        async def original_size(archive: process.Immutable) -> int:
            answer = await self._borg(["info", "--json", f"::{archive.path}"], env, secrets)
            size, details = parse_info(answer, archive.path)
            archive.details.update(details)
            return size

        return await process.sized_listing(
            archives, self.known, original_size, source_timeout=self.timeout,
            concurrency=INFO_CONCURRENCY, noun="archive", how="borg info",
        )  # fmt: skip

    async def _environment(self) -> tuple[dict[str, str], builtins.list[str]]:
        """borg's environment, and the secret values to keep out of messages."""
        spec = self.spec
        env = process.base_environment()
        env["BORG_RELOCATED_REPO_ACCESS_IS_OK"] = "no"
        env["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] = "no"
        env["BORG_DISPLAY_PASSPHRASE"] = "no"  # noqa: S105 (a setting)
        declared = environment(spec.env)
        env.update(declared)
        secrets = [value for name, value in declared.items() if spec.env[name] != value]
        env["BORG_REPO"] = spec.repository
        for name in ("BORG_PASSPHRASE", "BORG_PASSCOMMAND", "BORG_PASSPHRASE_FD"):
            if name not in declared:
                env.pop(name, None)
        passphrase = await asyncio.to_thread(
            resolve, spec.passphrase, spec.passphrase_file,
            "passphrase" if spec.passphrase is not None else "passphrase_file",
        )  # fmt: skip
        if passphrase is not None:
            env["BORG_PASSPHRASE"] = passphrase
            secrets.append(passphrase)
        return env, secrets

    async def _borg(
        self, args: builtins.list[str], env: dict[str, str], secrets: builtins.list[str]
    ) -> bytes:
        finished = await process.run(["borg", *args], env)
        if finished.status not in (0, 1):  # 1: a warning; the answer is whole
            raise process.failure(f"borg {args[0]}", finished, self.label, secrets, advice)
        return finished.stdout
