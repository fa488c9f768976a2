"""restic repositories: an artifact is a snapshot (its full id), dated by the snapshot's time,
sized by its restore size (`restic stats --mode restore-size`, computed once: a snapshot never
changes, so a size already stored is read back through `known`, never computed again).

One listing is one `restic snapshots --json` (with the declared host, tags and paths filters),
plus one `restic stats` per snapshot whose size is not stored yet (newest first, a few at a
time, within process.size_budget).

The repository, password and backend credentials reach restic through its environment only
(RESTIC_REPOSITORY, RESTIC_PASSWORD or RESTIC_PASSWORD_FILE, the declared `env:`), never its
command line. restic keeps its cache where it would for the service's user (~/.cache/restic,
or the declared RESTIC_CACHE_DIR): without it every `stats` run of a remote repository would
download the index again; with a local repository it costs a few files.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from service.core.jobspec import ResticSource
from service.scanner.sources import process
from service.scanner.sources.base import KnownSizes, Listing, SourceError, nothing_known
from service.scanner.sources.secrets import environment, expand, read_secret_file

STATS_CONCURRENCY = 3
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# RFC 3339 as restic writes it: nanoseconds, an offset or Z.
_SUBSET = re.compile(r"\d+(\.\d+)?%|\d+/\d+")  # restic check --read-data-subset
_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: str
    time_us: int
    details: dict[str, Any]


def time_us(text: object) -> int:
    """Microseconds since the epoch of a restic time (nanoseconds are cut, not rounded: a
    snapshot is never dated after it was taken)."""
    found = _TIME.match(text) if isinstance(text, str) else None
    if found is None:
        raise ValueError(f"not a restic time: {str(text)[:60]!r}")
    whole, fraction, zone = found.groups()
    moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    micros = int((fraction or "0").ljust(9, "0")[:6])
    return (moment - _EPOCH) // timedelta(microseconds=1) + micros


def parse_snapshots(data: bytes) -> list[Snapshot]:
    """`restic snapshots --json`'s answer; SourceError when it is not one."""
    try:
        answer = json.loads(data)
        if answer is None:  # restic 0.9 answers null for no snapshot
            return []
        if not isinstance(answer, list):
            raise ValueError("not a list")
        return [_snapshot(item) for item in answer]
    except (ValueError, TypeError, KeyError) as exc:
        raise SourceError(
            f"restic snapshots answered something that is not a list of snapshots ({exc}); "
            "is this restic's own binary, of version 0.10 or later?"
        ) from None


def _snapshot(item: Any) -> Snapshot:
    if not isinstance(item, dict):
        raise ValueError("a snapshot is not an object")
    snapshot_id = item["id"]
    if not isinstance(snapshot_id, str) or not re.fullmatch(r"[0-9a-f]{64}", snapshot_id):
        raise ValueError(f"bad snapshot id {str(snapshot_id)[:80]!r}")
    details = {
        "short_id": item.get("short_id") or snapshot_id[:8],
        "hostname": item.get("hostname"),
        "username": item.get("username"),
        "tags": list(item.get("tags") or []),
        "paths": list(item.get("paths") or []),
    }
    return Snapshot(snapshot_id, time_us(item["time"]), details)


def parse_restore_size(data: bytes) -> int:
    """`restic stats --json --mode restore-size`'s total_size."""
    try:
        size = json.loads(data)["total_size"]
    except (ValueError, TypeError, KeyError):
        size = None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise SourceError("restic stats answered no total_size; is this restic's own binary?")
    return size


def advice(message: str) -> str | None:
    """What to check, from restic's own words (0.14 says it only in words; later versions also
    by exit status, which the words cover too)."""
    lowered = message.lower()
    if "wrong password" in lowered or "no key found" in lowered:
        return "check password or password_file: it does not open this repository"
    if "already locked" in lowered or "unable to create lock" in lowered:
        return (
            "another restic command holds the repository's lock (a prune, check or backup); "
            "a stale lock is removed with `restic unlock`"
        )
    if "is there a repository" in lowered or "does not exist" in lowered:
        return "check repository: is there a restic repository there, and can the service reach it?"
    if ("config" in lowered and "version" in lowered) or "unsupported repository" in lowered:
        return "the repository's format is newer than this restic: upgrade restic"
    if "password" in lowered:
        return "check password or password_file"
    return None


async def check_repository(
    source: ResticSource,
    *,
    read_data_subset: str | None = None,
    timeout: float,  # noqa: ASYNC109 (out of time: a result, not an error)
) -> process.RepositoryCheck:
    """`restic check` of the source's repository (with `--read-data-subset=N%` or `n/t` when
    given: reads and verifies that share of the pack files). Not ok with restic's own error
    lines when it finds damage (`damaged`), cannot open the repository or takes longer than
    `timeout`. restic 0.14's check holds the repository's exclusive lock while it runs (a
    backup starting meanwhile fails on the lock): later versions take a shared one."""
    if read_data_subset is not None and not _SUBSET.fullmatch(read_data_subset):
        raise ValueError(
            f"read_data_subset is a percentage (5%) or a part (1/7), not {read_data_subset!r}"
        )
    subset = [f"--read-data-subset={read_data_subset}"] if read_data_subset else []
    listing = ResticListing(source, nothing_known)
    return await process.check_repository(
        ["restic", "check", *subset], listing._environment, where=listing.label, advice=advice,
        damage=lambda finished: "repository contains errors" in finished.stderr, timeout=timeout,
    )  # fmt: skip


class ResticListing:
    """A restic repository as a RemoteSource."""

    kind = "restic"

    def __init__(self, spec: ResticSource, known: KnownSizes) -> None:
        self.spec = spec
        self.known = known
        self.label = spec.location()
        self.timeout: float | None = spec.timeout

    async def list(self) -> Listing:
        env, secrets = await self._environment()
        filters: builtins.list[str] = []
        if self.spec.host is not None:
            filters += ["--host", self.spec.host]
        if self.spec.tags:
            filters += ["--tag", ",".join(self.spec.tags)]  # one --tag: all of them
        for path in self.spec.paths:
            filters += ["--path", path]
        answer = await self._restic(["snapshots", "--json", *filters], env, secrets)
        snapshots = [
            process.Immutable(snapshot.id, snapshot.time_us, snapshot.details)
            for snapshot in parse_snapshots(answer)
        ]

        async def restore_size(snapshot: process.Immutable) -> int:
            stats = ["stats", "--json", "--mode", "restore-size", snapshot.path]
            return parse_restore_size(await self._restic(stats, env, secrets))

        return await process.sized_listing(
            snapshots, self.known, restore_size, source_timeout=self.timeout,
            concurrency=STATS_CONCURRENCY, noun="snapshot", how="restic stats",
        )  # fmt: skip

    async def _environment(self) -> tuple[dict[str, str], builtins.list[str]]:
        """restic's environment, and the secret values to keep out of messages."""
        spec = self.spec
        env = process.base_environment()
        declared = environment(spec.env)
        env.update(declared)
        secrets = [value for name, value in declared.items() if spec.env[name] != value]
        env["RESTIC_REPOSITORY"] = spec.repository
        for name in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND"):
            env.pop(name, None)
        if spec.password is not None:
            password = expand(spec.password, "password")
            if not password:
                raise SourceError("password: the environment variable is empty")
            env["RESTIC_PASSWORD"] = password
            secrets.append(password)
        elif spec.password_file is not None:
            # read here too: to say what is wrong with the file, and to keep its content out
            # of messages; restic reads it itself (its own rules for whitespace)
            path = spec.password_file
            secrets.append(await asyncio.to_thread(read_secret_file, path, "password_file"))
            env["RESTIC_PASSWORD_FILE"] = path
        return env, secrets

    async def _restic(
        self, args: builtins.list[str], env: dict[str, str], secrets: builtins.list[str]
    ) -> bytes:
        finished = await process.run(["restic", *args], env)
        if finished.status != 0:
            raise process.failure(f"restic {args[0]}", finished, self.label, secrets, advice)
        return finished.stdout
