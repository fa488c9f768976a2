"""Running a backup tool (restic, borg) for a source: one process at a time per call, on the
event loop, never blocking it.

Invariants: the tool runs in a session (and process group) of its own, with stdin from
/dev/null and a minimal environment (PATH, HOME, LANG=C.UTF-8, TZ=UTC, then what the caller
gives: the declared `env:` expanded, the password variables); its output is read with a size
cap. Cancelled (the source's time is up) or failed while reading, the whole group is killed
(SIGTERM, SIGKILL after GRACE_SECONDS) and reaped before the call returns: nothing is left
running. A failure is a SourceError with the tool's own last lines, every secret value replaced
by `***`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.scanner.sources.base import KnownSizes, Listing, SourceError

logger = logging.getLogger(__name__)

GRACE_SECONDS = 2.0  # between SIGTERM and SIGKILL
MAX_STDOUT = 256 * 1024 * 1024  # a repository of 100 000 snapshots answers ~50 MB of JSON
MAX_STDERR = 64 * 1024  # the tail is kept: the error is at the end
ERROR_LINES = 4  # the tool's last meaningful lines shown in a message (restic: 4 on a lock)
_CHUNK = 64 * 1024
SCRUBBED = "***"
# Lines of a tool's stderr that say nothing about what failed.
_NOISE = ("created new cache", "\r", "Warning: Password input may be echoed")


@dataclass(frozen=True, slots=True)
class RepositoryCheck:
    """A backup tool's check of its own repository (restic check, borg check): whether it
    passed, the tool's own error lines (trimmed, secrets scrubbed) or what kept it from
    running, and how long it took. `damaged`: the tool found the repository damaged (not ok
    for another reason, such as its lock held by a backup, a wrong password or the time being
    up, is not damage: check again later)."""

    ok: bool
    detail: str
    seconds: float
    damaged: bool = False


@dataclass(frozen=True, slots=True)
class Finished:
    status: int
    stdout: bytes
    stderr: str


class _TooLarge(Exception):
    pass


def base_environment() -> dict[str, str]:
    """What every tool gets from the service's environment: PATH and HOME (where the tools keep
    their caches and, for borg, what they know of repositories), in a fixed locale and zone."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8", "TZ": "UTC"}
    if "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    return env


def scrub(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret value replaced by `***` (the longest first)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, SCRUBBED)
    return text


def last_lines(stderr: str, count: int = ERROR_LINES) -> str:
    """The tool's message: its last meaningful lines (no blanks, no progress noise)."""
    lines = [line.strip() for line in stderr.splitlines()]
    kept = [line for line in lines if line and not line.startswith(_NOISE) and
            "GetPassWarning" not in line]  # fmt: skip
    return " ".join(kept[-count:])


async def run(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    max_stdout: int = MAX_STDOUT,
) -> Finished:
    """Run a tool to its end; its status and output. SourceError when it cannot be started or
    answers more than `max_stdout` bytes. Cancelled, it kills and reaps the process group first.
    `env` is the whole environment (see base_environment)."""
    tool = os.path.basename(argv[0])
    logger.debug("tool run", extra={"tool": tool, "arguments": list(argv[1:])})
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
        )
    except FileNotFoundError:
        raise SourceError(f"{tool} is not installed (PATH={env.get('PATH', '')})") from None
    except PermissionError as exc:
        raise SourceError(f"{tool} cannot be run: {exc.strerror}") from None
    assert process.stdout is not None
    assert process.stderr is not None
    readers = (
        asyncio.create_task(_read_all(process.stdout, max_stdout)),
        asyncio.create_task(_read_tail(process.stderr, MAX_STDERR)),
    )
    try:
        stdout, stderr = await asyncio.gather(*readers)
        status = await process.wait()
    except BaseException as exc:
        for reader in readers:  # stopped first: the pipes are then drained by _kill alone
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await _kill(process)
        if isinstance(exc, _TooLarge):
            raise SourceError(
                f"{tool} answered more than {max_stdout // (1024 * 1024)} MB; "
                "is this the repository you meant?"
            ) from None
        raise
    return Finished(status, stdout, stderr.decode("utf-8", "replace"))


async def _read_all(stream: asyncio.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_tail(stream: asyncio.StreamReader, limit: int) -> bytes:
    tail = b""
    while chunk := await stream.read(_CHUNK):
        tail = (tail + chunk)[-limit:]
    return tail


async def _kill(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to the whole group, SIGKILL after the grace time, the leader reaped. The group
    is killed even when the leader has ended: its children (ssh for an sftp: repository) may
    not have."""
    group = process.pid  # start_new_session: the leader's pid is the group's id
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.shield(asyncio.wait_for(process.wait(), GRACE_SECONDS))
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(process.wait())
    # The pipes: read to their end (the group is dead: at once), or closed when a process that
    # left the group still holds them. Unread, a pipe paused by flow control would never see
    # its end and would stay open.
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.shield(asyncio.wait_for(_drain(stream), GRACE_SECONDS))
    transport = getattr(process, "_transport", None)  # asyncio's Process has no close()
    if transport is not None:
        transport.close()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(_CHUNK):
        pass


def failure(
    tool: str,
    finished: Finished,
    where: str,
    secrets: Sequence[str],
    advice: Callable[[str], str | None],
) -> SourceError:
    """The SourceError for a tool that failed: where, the tool's own words (scrubbed), and what
    to check (`advice` reads the message; None: nothing to add)."""
    said = scrub(last_lines(finished.stderr), secrets) or f"exit status {finished.status}"
    hint = advice(said)
    return SourceError(f"{tool} failed on {where}: {said}" + (f" ({hint})" if hint else ""))


# Sizing, once per artifact ---------------------------------------------------------------------

# A snapshot's or an archive's size costs a run of the tool (restic stats, borg info): sizes not
# yet stored are computed newest first, and at most this long per listing, so that the first
# listing of a repository with thousands of snapshots ends in time; the rest are sized by the
# next listings (the listing says so and is incomplete meanwhile: nothing is marked gone).
SIZE_BUDGET_SECONDS = 60.0


def size_budget(timeout: float | None) -> float:
    """Seconds a listing may spend sizing: SIZE_BUDGET_SECONDS, or half the source's own
    timeout when that is shorter."""
    return SIZE_BUDGET_SECONDS if timeout is None else min(SIZE_BUDGET_SECONDS, timeout / 2)


async def size_newest_first(
    names: Sequence[str],
    size_of: Callable[[str], Awaitable[int]],
    *,
    budget: float,
    concurrency: int,
) -> dict[str, int]:
    """The sizes of `names` (newest first), computed `concurrency` at a time; no new one is
    started once `budget` seconds have passed (but each worker sizes at least one, so that
    every listing makes progress). A failure stops them all (and is raised)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    sizes: dict[str, int] = {}
    queue = iter(names)

    async def worker() -> None:
        for number, name in enumerate(queue):
            if number and loop.time() >= deadline:  # each worker sizes one: progress, always
                return
            sizes[name] = await size_of(name)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, min(concurrency, len(names))))]
    try:
        await asyncio.gather(*workers)
    except BaseException:  # the first failure, or cancelled: the others stop (and kill) too
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    return sizes


@dataclass(frozen=True, slots=True)
class Immutable:
    """A snapshot or an archive as its tool lists it: its identity, time, what the listing
    tells of it (`details`: a sizing run may add to it)."""

    path: str
    time_us: int
    details: dict[str, Any]


async def sized_listing(
    artifacts: Sequence[Immutable],
    known: KnownSizes,
    size_of: Callable[[Immutable], Awaitable[int]],
    *,
    source_timeout: float | None,
    concurrency: int,
    noun: str,
    how: str,
) -> Listing:
    """The listing of artifacts that never change: a size stored already is read back, the
    others are computed newest first within the sizing budget (size_newest_first); those left
    unsized are left out, with a warning (the listing is incomplete: nothing is marked gone).
    `noun` ("snapshot") and `how` ("restic stats") word the warning."""
    stored = await known() if artifacts else {}
    sizes = {a.path: stored[a.path] for a in artifacts if a.path in stored}
    by_path = {a.path: a for a in artifacts}
    unsized = [a.path for a in sorted(artifacts, key=lambda a: a.time_us, reverse=True)
               if a.path not in sizes]  # fmt: skip
    if unsized:
        sizes.update(
            await size_newest_first(
                unsized, lambda path: size_of(by_path[path]), budget=size_budget(source_timeout),
                concurrency=concurrency,
            )
        )  # fmt: skip
    listing = Listing()
    for artifact in artifacts:
        size = sizes.get(artifact.path)
        if size is not None:
            listing.entries.append((artifact.path, size, artifact.time_us))
            listing.details[artifact.path] = artifact.details
    left = len(artifacts) - len(listing.entries)
    if left:
        listing.warnings.append(
            f"{left} older {noun}{'s are' if left > 1 else ' is'} not sized yet "
            f"({how}, newest first, a minute per scan): the next scans size them"
        )
    return listing


# Repository checks -----------------------------------------------------------------------------

CHECK_LINES = 5  # a check's error lines shown: the first ones (what) and its last (the verdict)
_CHECK_LINE_CHARS = 240
# Lines of a check's report that list objects one by one (borg's index comparison).
_CHECK_NOISE = ("ID: ", "committed index:", "rebuilt index:")


def check_lines(stderr: str, secrets: Sequence[str]) -> str:
    """A check's own error lines, trimmed: the first CHECK_LINES - 1 meaningful ones and the
    last (the verdict), each at most _CHECK_LINE_CHARS long, secrets scrubbed."""
    lines = [line.strip() for line in stderr.splitlines()]
    kept = [line for line in lines if line and not line.startswith((*_NOISE, *_CHECK_NOISE))
            and "GetPassWarning" not in line and not line.startswith("[")]  # fmt: skip
    if len(kept) > CHECK_LINES:
        kept = [*kept[: CHECK_LINES - 1], "...", kept[-1]]
    shown = [line if len(line) <= _CHECK_LINE_CHARS else line[: _CHECK_LINE_CHARS - 1] + "…"
             for line in kept]  # fmt: skip
    return scrub(" / ".join(shown), secrets)


async def check_repository(
    argv: Sequence[str],
    environment: Callable[[], Awaitable[tuple[dict[str, str], list[str]]]],
    *,
    where: str,
    advice: Callable[[str], str | None],
    damage: Callable[[Finished], bool],
    timeout: float,  # noqa: ASYNC109 (out of time: a result, not an error)
) -> RepositoryCheck:
    """Run a tool's repository check (`argv`) with `environment()`'s env and secrets, at most
    `timeout` seconds (then killed). `damage` tells from the finished run whether the tool found
    the repository damaged (rather than failing to check it)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    what = " ".join(os.path.basename(arg) if n == 0 else arg for n, arg in enumerate(argv[:2]))
    secrets: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            env, secrets = await environment()
            finished = await run(argv, env)
    except TimeoutError:
        return RepositoryCheck(
            False,
            f"{what} of {where} did not finish within {timeout:g} s: it was stopped (a larger "
            "repository needs a longer timeout)",
            loop.time() - started,
        )
    except SourceError as exc:
        return RepositoryCheck(False, scrub(str(exc), secrets), loop.time() - started)
    seconds = loop.time() - started
    if finished.status == 0:
        return RepositoryCheck(True, f"{what} of {where} found no errors", seconds)
    said = check_lines(finished.stderr, secrets) or f"exit status {finished.status}"
    if damage(finished):
        return RepositoryCheck(False, f"{what} found {where} damaged: {said}", seconds, True)
    hint = advice(said)
    return RepositoryCheck(
        False, f"{what} could not check {where}: {said}" + (f" ({hint})" if hint else ""), seconds
    )
