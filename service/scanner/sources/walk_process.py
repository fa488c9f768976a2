"""Local walks in walker processes: a big scan's directories listed beside the event loop, on
every core, instead of in a thread that shares the service's GIL.

A walk in a thread costs the event loop twice: its Python per-file loop holds the GIL the loop
needs, and every lstat gives it up, so the walk and the judging and writing take turns instead
of overlapping (py-spy of a 200 000-file rescan: 86 % in the walking thread). A walker process
has its own interpreter: it walks and orders and fingerprints each listing (LocalSource.walk
and walker.finish, the same code as a thread), and sends it back as one compact frame; the
service decodes it in one C call (marshal).

`WalkerPool` keeps up to `size` walker processes for one scan (`python -m` this module; each
serves request after request until its input ends). `list_in_processes` splits a run of local
sources into `size` contiguous parts, walks each in a process of its own, and yields the
results in the sources' order, each source under its own time limit as in a thread
(walker.list_sources): a walk that hangs (a dead NFS mount) is reported as timed out, its
process killed and its path registered as blocked until the process has ended, and the
sources after it are walked by a new process.

Frames, both ways: a 4-byte little-endian length, then a `marshal` payload. The request: a list
of (path, pattern, exclude, recursive, scan_roots), one per source. Each answer, in order:
("ok", entries, warnings, skipped, undated, fingerprint), ("error", message) for a SourceError,
or ("bug", message, traceback) for anything else (logged by the service).

May import the standard library and this package's base, local and walker modules; the child
imports nothing else (it starts in a few tens of milliseconds: no pydantic, no database).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import marshal
import os
import signal
import struct
import sys
import threading
import time
import traceback
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from service.scanner.sources.base import Listing, SourceError
from service.scanner.sources.local import LocalSource
from service.scanner.sources.walker import (
    finish,
    list_sources,
    new_token,
    register_hung,
    still_blocked,
    timeout_error,
    unregister_hung,
)

logger = logging.getLogger(__name__)

COMMAND = (sys.executable, "-m", "service.scanner.sources.walk_process")
_HEADER = struct.Struct("<I")
# Scans of fewer jobs walk their local sources in a thread: starting a process costs more than
# walking a few directories.
MIN_SOURCES = 64
# Walker processes of a scan: one per core, and never more than 4. With 2 cores, 2 walkers and
# the service's own loop share them; the walks of a rescan, the biggest part of its work, are
# then spread over both.
WALKER_PROCESSES = max(1, min(4, len(os.sched_getaffinity(0))))
AHEAD = 32  # listings a walker process may have ready before they are taken


def _frame(payload: Any) -> bytes:
    data = marshal.dumps(payload)
    return _HEADER.pack(len(data)) + data


class WalkerDied(Exception):
    """A walker process ended before answering for every source it was given."""


class Walker:
    """One walker process, spoken to over its pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def send(self, sources: Sequence[LocalSource]) -> None:
        assert self.process.stdin is not None
        request = [
            (s.path, s.pattern, s.exclude, s.recursive, tuple(map(str, s.scan_roots)))
            for s in sources
        ]
        self.process.stdin.write(_frame(request))
        await self.process.stdin.drain()

    async def result(self, label: str) -> Listing | SourceError:
        """The next source's result (in the order sent)."""
        assert self.process.stdout is not None
        try:
            header = await self.process.stdout.readexactly(_HEADER.size)
            payload = await self.process.stdout.readexactly(*_HEADER.unpack(header))
            # Our own child's frames, over its pipes: nothing else writes them.
            answer = marshal.loads(payload)  # noqa: S302
        except asyncio.IncompleteReadError:
            code = await self.process.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            raise WalkerDied(f"the walker process ended ({how})") from None
        if answer[0] == "ok":
            _, entries, warnings, skipped, undated, fingerprint = answer
            return Listing(entries, warnings, skipped, undated, fingerprint)
        if answer[0] == "bug":
            logger.error("listing failed", extra={"source": label, "traceback": answer[2]})
        return SourceError(answer[1])

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()


class WalkerPool:
    """Up to `size` walker processes for one scan, started when first needed; `aclose` ends
    them (the idle ones at the end of their input, the others killed)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._idle: list[Walker] = []
        self._busy: set[Walker] = set()
        self._ending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start the pool's processes now (they start up while the caller goes on); one that
        cannot be started is tried again when needed."""
        for _ in range(self.size - len(self._idle) - len(self._busy)):
            try:
                self._idle.append(await self._start())
            except OSError as exc:
                logger.warning("cannot start a walker process: %s", exc)
                return

    async def take(self) -> Walker:
        walker = self._idle.pop() if self._idle else await self._start()
        self._busy.add(walker)
        return walker

    async def _start(self) -> Walker:
        process = await asyncio.create_subprocess_exec(
            *COMMAND, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        return Walker(process)

    def give_back(self, walker: Walker) -> None:
        self._busy.discard(walker)
        self._idle.append(walker)

    def discard(self, walker: Walker, then: Callable[[], None] | None = None) -> None:
        """Kill the process; `then` runs once it has ended (a walk stuck in the kernel ends
        when the kernel lets it: until then its path stays registered as blocked)."""
        self._busy.discard(walker)
        walker.kill()

        async def reap() -> None:
            try:
                await walker.process.wait()
            finally:
                if then is not None:
                    then()

        task = asyncio.create_task(reap())
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def aclose(self) -> None:
        for walker in self._idle:
            assert walker.process.stdin is not None
            walker.process.stdin.close()  # it ends at the end of its input
        for walker in list(self._busy):
            self.discard(walker)
        waits = [walker.process.wait() for walker in self._idle]
        self._idle.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.gather(*waits, *self._ending, return_exceptions=True)


async def list_in_processes(
    sources: Sequence[LocalSource], limit: float, pool: WalkerPool
) -> AsyncGenerator[Listing | SourceError, None]:
    """One result per source, in order, as walker.list_sources gives them: the sources dealt
    into the pool's size of parts (source i to part i mod size, so that the parts' walks keep
    pace with each other as the results are taken in order), each walked by a process of its
    own."""
    parts = [sources[first :: pool.size] for first in range(min(pool.size, len(sources)))]
    # Each part walks at most AHEAD listings ahead of our caller (then its process waits on a
    # full pipe): a run of big jobs is never all in memory at once.
    queues: list[asyncio.Queue[Listing | SourceError | _Failed]] = [
        asyncio.Queue(maxsize=AHEAD) for _ in parts
    ]

    async def walk(part: Sequence[LocalSource], queue: asyncio.Queue[Any]) -> None:
        try:
            async with contextlib.aclosing(_walk_part(part, limit, pool)) as results:
                async for result in results:
                    await queue.put(result)
        except Exception as exc:  # a bug: raised to our caller in its turn
            await queue.put(_Failed(exc))

    tasks = [asyncio.create_task(walk(p, q)) for p, q in zip(parts, queues, strict=True)]
    try:
        for index in range(len(sources)):
            result = await queues[index % len(parts)].get()
            if isinstance(result, _Failed):
                raise result.error
            yield result
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


async def _walk_part(
    sources: Sequence[LocalSource], limit: float, pool: WalkerPool
) -> AsyncGenerator[Listing | SourceError, None]:
    index = 0
    while index < len(sources):
        rest = sources[index:]
        try:
            walker = await pool.take()
        except OSError as exc:  # no process to be had (EAGAIN, ENOMEM): a thread walks them
            logger.warning("cannot start a walker process: %s; walking in a thread", exc)
            async for result in list_sources(rest, limit):
                yield result
            return
        blocked = [still_blocked(source.label) for source in rest]
        ended = False  # the process was killed or died: not given back
        try:
            await walker.send([s for s, b in zip(rest, blocked, strict=True) if b is None])
            for source, block in zip(rest, blocked, strict=True):
                index += 1
                if block is not None:
                    yield block
                    continue
                started = time.monotonic()
                try:
                    async with asyncio.timeout(limit):
                        result = await walker.result(source.label)
                except TimeoutError:
                    token = new_token()
                    register_hung(source.label, token, started)
                    ended = True
                    pool.discard(walker, functools.partial(unregister_hung, source.label, token))
                    yield timeout_error(source, limit)
                    break
                except WalkerDied as exc:
                    ended = True
                    pool.discard(walker)
                    logger.error("walker process died", extra={"source": source.label})
                    yield SourceError(f"internal error listing {source.label}: {exc}")
                    break
                yield result
        except BaseException:
            if not ended:  # our caller stopped listening mid-part: the answers are unwanted
                ended = True
                pool.discard(walker)
            raise
        finally:
            if not ended:
                pool.give_back(walker)


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """The walker process: walk each request's sources in order, one answer each, until the
    input ends."""
    never = threading.Event()  # a walk is stopped by killing the process
    while header := requests.read(_HEADER.size):
        request = marshal.loads(requests.read(*_HEADER.unpack(header)))  # noqa: S302 (the service's)
        for path, pattern, exclude, recursive, roots in request:
            source = LocalSource(
                path, pattern, recursive=recursive, exclude=exclude,
                scan_roots=[Path(root) for root in roots],
            )  # fmt: skip
            answers.write(_frame(_walked(source, never)))
            answers.flush()


def _walked(source: LocalSource, never: threading.Event) -> tuple[Any, ...]:
    try:
        listing = finish(source.walk(never))
    except SourceError as exc:
        return ("error", str(exc))
    except Exception as exc:  # a bug or an unexpected OS error: this source only
        message = f"internal error listing {source.label}: {type(exc).__name__}: {exc}"
        return ("bug", message, traceback.format_exc())
    return ("ok", listing.entries, listing.warnings, listing.skipped, listing.undated,
            listing.fingerprint)  # fmt: skip


if __name__ == "__main__":
    # Ctrl-C in a terminal reaches the whole process group: the service decides, and ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(sys.stdin.buffer, sys.stdout.buffer)
