"""Local walks in walker processes: a big scan's directories listed beside the event loop, on
every core, instead of in a thread that shares the service's GIL.

A walk in a thread costs the event loop twice: its Python per-file loop holds the GIL the loop
needs, and every lstat gives it up, so the walk and the judging and writing take turns instead
of overlapping (py-spy of a 200 000-file rescan: 86 % in the walking thread). A walker process
has its own interpreter (walk_child: it walks, orders and fingerprints each listing with the
code a thread runs, and sends it back as one compact frame); the service decodes it in one C
call (marshal).

`WalkerPool` keeps up to `size` walker processes for one scan (`python -m walk_child`, through
service.children; each serves request after request until its input ends).
`list_in_processes` deals a run of local sources into `size` parts, walks each in a process of
its own, and yields the results in the sources' order, each source under its own time limit as
in a thread (walker.list_sources): a walk that hangs (a dead NFS mount) is reported as timed
out, and its process abandoned like a hung thread: its path is reported at once as still
blocked until the process answers for it (then it is killed), and the sources after it are
walked by a new process. A walker that dies fails the source it was walking; walkers that end
without a word (the module cannot be imported, no process can be started) leave the walk to a
thread.

May import the standard library, service.children and this package's base, local, walker and
walk_child modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import os
import time
from array import array
from collections.abc import AsyncGenerator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from service.children import python_module
from service.scanner.sources import walk_child
from service.scanner.sources.base import Listing, SourceError
from service.scanner.sources.local import LocalSource
from service.scanner.sources.walk_child import HEADER, frame
from service.scanner.sources.walker import (
    list_sources,
    new_token,
    register_hung,
    still_blocked,
    timeout_error,
    unregister_hung,
)

logger = logging.getLogger(__name__)

# Scans of fewer jobs walk their local sources in a thread: starting a process costs more than
# walking a few directories.
MIN_SOURCES = 64
# Walker processes of a scan: one per core it may run on, and never more than 4. With 2 cores,
# 2 walkers and the service's own loop share them; the walks of a rescan, the biggest part of
# its work, are then spread over both.
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
WALKER_PROCESSES = max(1, min(4, _CPUS or 1))
AHEAD = 32  # listings a walker process may have ready before they are taken
# Walker processes in a row that end without an answer before a thread walks instead: the
# module cannot be imported, the system kills them (memory), they cannot be started.
START_ATTEMPTS = 2


class WalkerDied(Exception):
    """A walker process ended (or could not be spoken to) before answering for every source
    it was given."""


class Walker:
    """One walker process, spoken to over its pipes. Its answers are read by a task of its own
    into `answers` (at most AHEAD, then the process waits on a full pipe), so that a caller who
    stops waiting for one never leaves half a frame behind."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.answers: asyncio.Queue[tuple[Any, ...] | WalkerDied] = asyncio.Queue(AHEAD)
        self.reader = asyncio.create_task(self._read())
        self.answered = False  # it has answered for a source
        self.abandoned: asyncio.Task[None] | None = None  # see WalkerPool.abandon

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and not self.reader.done()

    async def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            while True:
                header = await stdout.readexactly(HEADER.size)
                payload = await stdout.readexactly(*HEADER.unpack(header))
                # Our own child's frames, over its pipes: nothing else writes them.
                await self.answers.put(marshal.loads(payload))  # noqa: S302
        except (asyncio.IncompleteReadError, ConnectionError):
            code = await self.process.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            await self.answers.put(WalkerDied(f"the walker process ended ({how})"))

    async def send(self, sources: Sequence[LocalSource]) -> None:
        """Ask for these sources' listings, in this order (WalkerDied: it is gone)."""
        stdin = self.process.stdin
        assert stdin is not None
        request = [
            (s.path, s.pattern, s.exclude, s.recursive, tuple(map(str, s.scan_roots)), s.synced)
            for s in sources
        ]
        try:
            stdin.write(frame(request))
            await stdin.drain()
        except (ConnectionError, RuntimeError) as exc:  # RuntimeError: uvloop's closed pipe
            raise WalkerDied(f"the walker process is gone ({exc})") from None

    async def result(self, label: str, limit: float) -> Listing | SourceError:
        """The next source's result, within `limit` seconds (TimeoutError)."""
        try:
            async with asyncio.timeout(limit):
                answer = await self.answers.get()
        except TimeoutError:
            if self.answers.empty():
                raise
            answer = self.answers.get_nowait()  # it came in the very turn the time ran out
        if isinstance(answer, WalkerDied):
            raise answer
        self.answered = True
        if answer[0] == "ok":
            _, entries, warnings, skipped, undated, fingerprint = answer
            return Listing(entries, warnings, skipped, undated, fingerprint)
        if answer[0] == "same":
            _, newest, times, skipped, undated, fingerprint = answer
            every = array("q")
            every.frombytes(times)
            return Listing.summary(newest, every, fingerprint, skipped, undated)
        if answer[0] == "bug":  # logged as a bug in a walking thread is (walker._walk_one)
            logger.error("listing failed: %s", answer[2].rstrip(), extra={"source": label})
        return SourceError(answer[1])

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    async def ended(self) -> None:
        """Wait for the process to end, and for its reader."""
        try:
            await self.process.wait()
        finally:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)


class WalkerPool:
    """Up to `size` walker processes for one scan (`start` them early); `aclose` ends them: the
    idle ones at the end of their input, those still walking killed. A walker whose walk timed
    out is abandoned instead, as a walking thread is: its path stays blocked until it answers
    (see walker.still_blocked), then it is killed; it may outlive the pool."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._idle: list[Walker] = []
        self._busy: set[Walker] = set()
        self._ending: set[asyncio.Task[None]] = set()
        self.warned = False  # that a thread walks instead

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
        """An idle walker that is still alive, or a new one (OSError: none can be started)."""
        while self._idle:
            walker = self._idle.pop()
            if walker.alive:
                self._busy.add(walker)
                return walker
            self.discard(walker)
        walker = await self._start()
        self._busy.add(walker)
        return walker

    async def _start(self) -> Walker:
        command, env = python_module(walk_child.__name__)
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
        )
        return Walker(process)

    def give_back(self, walker: Walker) -> None:
        self._busy.discard(walker)
        self._idle.append(walker)

    def discard(self, walker: Walker) -> None:
        """Kill the process (and reap it in the background)."""
        self._busy.discard(walker)
        walker.kill()
        self._track(walker.ended())

    def abandon(self, walker: Walker, label: str, started: float) -> None:
        """The walker's walk of `label` (begun at `started`) timed out: `label` is blocked
        until the walker answers for it or ends; then it is killed."""
        self._busy.discard(walker)
        token = new_token()
        register_hung(label, token, started)

        async def wait_then_kill() -> None:
            try:
                await walker.answers.get()  # the hung walk's answer, or the process's end
            finally:
                unregister_hung(label, token)
                walker.kill()
                with contextlib.suppress(TimeoutError):  # still stuck in the kernel: let it be
                    async with asyncio.timeout(5):
                        await walker.ended()

        walker.abandoned = asyncio.create_task(wait_then_kill())

    def _track(self, ending: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(ending)
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def aclose(self) -> None:
        for walker in self._idle:
            assert walker.process.stdin is not None
            walker.process.stdin.close()  # it ends at the end of its input
            self._track(walker.ended())
        self._idle.clear()
        for walker in list(self._busy):
            self.discard(walker)
        try:
            async with asyncio.timeout(5):
                await asyncio.gather(*self._ending, return_exceptions=True)
        except TimeoutError:  # stuck in the kernel: killed, reaped whenever it ends
            for task in self._ending:
                task.cancel()


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
    index, failures = 0, 0  # failures: walkers in a row that ended without an answer
    while index < len(sources):
        rest = sources[index:]
        if failures >= START_ATTEMPTS:
            if not pool.warned:
                pool.warned = True
                logger.warning("walker processes end without an answer: walking in a thread")
            async with contextlib.aclosing(list_sources(rest, limit)) as walked:
                async for result in walked:
                    yield result
            return
        blocked = [still_blocked(source.label) for source in rest]
        if all(block is not None for block in blocked):
            for block in blocked:
                yield block  # type: ignore[misc]
            return
        walker: Walker | None = None
        try:
            walker = await pool.take()
            await walker.send([s for s, b in zip(rest, blocked, strict=True) if b is None])
        except (OSError, WalkerDied) as exc:  # none can be started, or it is already gone
            logger.warning("cannot use a walker process: %s", exc)
            if walker is not None:
                pool.discard(walker)
            failures += 1
            continue
        done = False  # the walker was discarded or abandoned
        complete = False  # it answered for every source sent
        try:
            for source, block in zip(rest, blocked, strict=True):
                if block is not None:
                    index += 1
                    yield block
                    continue
                started = time.monotonic()
                try:
                    result = await walker.result(source.label, limit)
                except TimeoutError:
                    done = True
                    pool.abandon(walker, source.label, started)
                    index += 1
                    yield timeout_error(source, limit)
                    break
                except WalkerDied as exc:
                    done = True
                    pool.discard(walker)
                    if walker.answered:  # it died on this source
                        index += 1
                        logger.error("walker process died", extra={"source": source.label})
                        yield SourceError(f"internal error listing {source.label}: {exc}")
                    else:  # it never answered: as if it could not start
                        logger.warning("walker process ended without an answer: %s", exc)
                        failures += 1
                    break
                failures = 0
                index += 1
                yield result
            else:
                complete = True
        finally:
            if not done and complete:
                pool.give_back(walker)
            elif not done:  # our caller stopped listening mid-part: the answers are unwanted
                pool.discard(walker)
