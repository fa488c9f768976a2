"""Local walks in walker processes (service/scanner/sources/walk_process.py): the same listings
as a walk in a thread, in order, each source under its own time limit, with real processes (a
stopped process is a walk that hangs, a killed one a walker that dies)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from service.children import python_module
from service.scanner.sources import (
    Listing,
    LocalSource,
    SourceError,
    list_sources,
    walk_child,
    walker,
)
from service.scanner.sources.fingerprint import listing_digest
from service.scanner.sources.walk_process import Walker, WalkerPool, list_in_processes


def write(path: Path, size: int, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))


def awkward_tree(root: Path) -> list[LocalSource]:
    """Sources over what a walk must get right: a 0-byte file, names that are not UTF-8 (one
    escaping like a real name), symlinks (loops, out of the source, dangling, inside), a
    directory loop, a subdirectory, a date no datetime holds, temporary files, a root that is
    missing, a file as a root, a root outside SCAN_ROOTS."""
    now = time.time()
    backups = root / "awkward"
    write(root / "outside" / "secret.tar", 9, now)
    write(backups / "good.tar", 100, now - 7200)
    write(backups / "empty.tar", 0, now - 3600)
    write(backups / "partial.tar.tmp", 5, now)
    write(backups / "a\\xff.tar", 7, now - 60)
    for raw in (b"caf\xe9-\xff.tar", b"a\xff.tar"):
        with open(os.path.join(os.fsencode(backups), raw), "wb") as handle:
            handle.write(b"12345")
    os.symlink("loop-b.tar", backups / "loop-a.tar")
    os.symlink("loop-a.tar", backups / "loop-b.tar")
    os.symlink(root / "outside" / "secret.tar", backups / "escape.tar")
    os.symlink("good.tar", backups / "inside-link.tar")
    os.symlink("/nonexistent/target", backups / "dangling.tar")
    write(backups / "sub" / "deep.tar", 50, now - 10800)
    os.symlink("..", backups / "sub" / "up")
    write(backups / "future.tar", 1, 0)
    os.utime(backups / "future.tar", ns=(0, 10**20))  # far ahead, as far as the filesystem keeps
    many = [LocalSource(str(root / f"many-{i}"), "*.gz") for i in range(3)]
    for i in range(3):
        for k in range(i + 2):
            write(root / f"many-{i}" / f"dump-{k}.gz", k + 1, now - k * 86400)
    return [
        LocalSource(str(backups), "*.tar", recursive=True),
        LocalSource(str(backups), "*.tar"),
        LocalSource(str(backups), "*", exclude=["*.tmp"]),
        *many,
        LocalSource(str(root / "missing"), "*"),
        LocalSource(str(backups / "good.tar"), "*"),
        LocalSource(str(backups), "*", scan_roots=[root / "outside"]),
    ]


async def in_thread(sources: Sequence[LocalSource]) -> list[Listing | SourceError]:
    return [result async for result in list_sources(sources, 30)]


async def in_processes(
    sources: Sequence[LocalSource], pool: WalkerPool, limit: float = 30
) -> list[Listing | SourceError]:
    return [result async for result in list_in_processes(sources, limit, pool)]


def same(result: Listing | SourceError) -> object:
    if isinstance(result, Listing):
        return tuple(getattr(result, field) for field in Listing.__slots__)
    return ("error", str(result))


async def test_the_listings_are_those_of_a_walk_in_a_thread(tmp_path):
    sources = awkward_tree(tmp_path)
    expected = [same(result) for result in await in_thread(sources)]
    for size in (1, 2, 3):
        pool = WalkerPool(size)
        try:
            got = [same(result) for result in await in_processes(sources, pool)]
            again = [same(result) for result in await in_processes(sources, pool)]  # reused
        finally:
            await pool.aclose()
        assert got == expected
        assert again == expected
    listed = await in_thread(sources[:1])
    assert isinstance(listed[0], Listing)
    assert "caf\\xe9-\\xff.tar" in [entry[0] for entry in listed[0].entries]
    assert isinstance((await in_thread(sources[-3:-2]))[0], SourceError)  # the test means it


async def test_a_listing_still_the_one_synced_is_sent_as_a_summary(tmp_path):
    # The walker process sends the newest entries, the count and every time instead of every
    # entry, only when the listing is the one whose digest the job stored.
    now = time.time()
    for k in range(5):
        write(tmp_path / f"dump-{k}.gz", 10 + k, now - k * 3600)
    declared = '{"path": "x"}'  # the source's JSON: part of the digest

    def source(synced: tuple[str, str, int] | None) -> LocalSource:
        walked = LocalSource(str(tmp_path), "*.gz")
        walked.synced = synced
        return walked

    pool = WalkerPool(1)
    try:
        [whole] = await in_processes([source(None)], pool)
        assert isinstance(whole, Listing) and not whole.summarized and whole.fingerprint
        digest = listing_digest(declared, whole.fingerprint)
        [summary, wider, other_json, other_digest] = await in_processes(
            [source((declared, digest, 2)), source((declared, digest, 9)),
             source(('{"path": "y"}', digest, 2)), source((declared, "0" * 40, 2))],
            pool,
        )  # fmt: skip
        os.utime(tmp_path / "dump-4.gz", (now, now))  # the oldest is written again
        [changed] = await in_processes([source((declared, digest, 2))], pool)
    finally:
        await pool.aclose()
    assert isinstance(summary, Listing) and summary.summarized
    assert summary.entries == whole.entries[-2:]
    assert summary.count == whole.count == 5
    assert list(summary.times or ()) == [entry[2] for entry in whole.entries]
    assert summary.fingerprint == whole.fingerprint and summary.warnings == []
    assert isinstance(wider, Listing) and wider.entries == whole.entries and wider.summarized
    for listed in (other_json, other_digest):  # not the listing synced: every entry
        assert isinstance(listed, Listing) and same(listed) == same(whole)
    assert isinstance(changed, Listing) and not changed.summarized
    assert changed.count == 5 and changed.fingerprint != whole.fingerprint


class StoppedFirst(WalkerPool):
    """Its first walker process is stopped (SIGSTOP) as soon as it starts: a walk that hangs
    like one on a dead NFS mount, until killed."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.stopped: list[Walker] = []

    async def _start(self) -> Walker:
        walker = await super()._start()
        if not self.stopped:
            walker.process.send_signal(signal.SIGSTOP)
            self.stopped.append(walker)
        return walker


async def test_a_walk_that_hangs_times_out_alone_and_its_path_stays_blocked_until_it_answers(
    tmp_path,
):
    sources = awkward_tree(tmp_path)[3:6]  # the three `many-*` directories
    expected = [same(result) for result in await in_thread(sources)]
    again = LocalSource(sources[0].path, "*")  # another job on the same path
    pool = StoppedFirst(1)
    try:
        started = time.monotonic()
        results = await in_processes([*sources, again], pool, limit=2)
        assert time.monotonic() - started < 10
        assert "took longer than 2 s" in str(results[0])
        assert [same(result) for result in results[1:3]] == expected[1:]
        assert "still blocked" in str(results[3])  # no second wait on the dead mount
        # Until the hung walk answers, the path is reported at once, scan after scan.
        assert "still blocked" in str((await in_processes(sources[:1], pool))[0])
        hung = pool.stopped[0]
        assert hung.process.returncode is None  # abandoned, not killed: it may yet answer
        hung.process.send_signal(signal.SIGCONT)  # the storage answers
        for _ in range(250):
            if sources[0].label not in walker._hung and hung.process.returncode is not None:
                break
            await asyncio.sleep(0.02)
        assert sources[0].label not in walker._hung
        assert hung.process.returncode == -signal.SIGKILL  # then it is ended
        assert [same(result) for result in await in_processes(sources, pool)] == expected
    finally:
        for stopped in pool.stopped:
            with contextlib.suppress(ProcessLookupError):  # ended already
                stopped.process.send_signal(signal.SIGCONT)
        await pool.aclose()


async def test_a_path_still_blocked_is_reported_at_once_and_not_sent(tmp_path):
    sources = awkward_tree(tmp_path)[3:6]
    walker.register_hung(sources[1].label, -1, time.monotonic())
    pool = WalkerPool(1)
    try:
        results = await in_processes(sources, pool)
    finally:
        walker.unregister_hung(sources[1].label, -1)
        await pool.aclose()
    assert "still blocked" in str(results[1])
    assert isinstance(results[0], Listing) and isinstance(results[2], Listing)


# A walker process that answers for the first source it is asked for, then dies (exit 3).
ANSWERS_ONCE = """
import marshal, os, struct, sys
size = struct.unpack("<I", sys.stdin.buffer.read(4))[0]
marshal.loads(sys.stdin.buffer.read(size))
answer = marshal.dumps(("ok", [("first.gz", 1, 0)], [], [], [], "fingerprint"))
sys.stdout.buffer.write(struct.pack("<I", len(answer)) + answer)
sys.stdout.buffer.flush()
os._exit(3)
"""


class Scripted(WalkerPool):
    """Its first `count` walker processes run `script` instead of the walker."""

    def __init__(self, size: int, script: str, count: int) -> None:
        super().__init__(size)
        self.script, self.count = script, count

    async def _start(self) -> Walker:
        if self.count <= 0:
            return await super()._start()
        self.count -= 1
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", self.script,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return Walker(process)


async def test_a_walker_that_dies_fails_the_source_it_was_walking_and_the_rest_are_walked(
    tmp_path,
):
    sources = awkward_tree(tmp_path)[3:6]
    expected = [same(result) for result in await in_thread(sources)]
    pool = Scripted(1, ANSWERS_ONCE, 1)
    try:
        results = await in_processes(sources, pool)
    finally:
        await pool.aclose()
    assert isinstance(results[0], Listing) and results[0].entries == [("first.gz", 1, 0)]
    assert isinstance(results[1], SourceError)
    assert "internal error listing" in str(results[1])
    assert "the walker process ended (exit status 3)" in str(results[1])
    assert [same(result) for result in results[2:]] == expected[2:]


async def test_walkers_that_end_without_a_word_leave_the_walk_to_a_thread(tmp_path, caplog):
    sources = awkward_tree(tmp_path)
    expected = [same(result) for result in await in_thread(sources)]
    pool = Scripted(2, "raise SystemExit(1)", 100)  # e.g. the module cannot be imported
    try:
        assert [same(result) for result in await in_processes(sources, pool)] == expected
    finally:
        await pool.aclose()
    assert pool.warned
    assert "walking in a thread" in caplog.text


async def test_an_idle_walker_that_died_is_replaced(tmp_path):
    sources = awkward_tree(tmp_path)[3:6]
    expected = [same(result) for result in await in_thread(sources)]
    pool = Counted(1)
    try:
        assert [same(result) for result in await in_processes(sources, pool)] == expected
        first = pool.started[0]
        first.kill()  # between two runs of jobs: the OOM killer, an administrator
        await first.process.wait()
        assert [same(result) for result in await in_processes(sources, pool)] == expected
        assert len(pool.started) == 2
    finally:
        await pool.aclose()


async def test_a_walker_outlives_a_sigterm_to_the_process_group(tmp_path):
    """systemd's stop sends SIGTERM to every process of the unit: the service ends its walkers
    itself, after its scan has stopped cleanly."""
    sources = awkward_tree(tmp_path)[3:6]
    expected = [same(result) for result in await in_thread(sources)]
    pool = Counted(1)
    try:
        assert [same(result) for result in await in_processes(sources, pool)] == expected
        pool.started[0].process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        assert pool.started[0].process.returncode is None
        assert [same(result) for result in await in_processes(sources, pool)] == expected
        assert len(pool.started) == 1
    finally:
        await pool.aclose()


async def test_a_service_package_in_the_working_directory_is_not_what_walks(tmp_path, monkeypatch):
    sources = awkward_tree(tmp_path / "tree")
    expected = [same(result) for result in await in_thread(sources)]
    impostor = tmp_path / "elsewhere" / "service"
    impostor.mkdir(parents=True)
    (impostor / "__init__.py").write_text("raise SystemExit('the wrong service')\n")
    monkeypatch.chdir(impostor.parent)
    pool = WalkerPool(2)
    try:
        assert [same(result) for result in await in_processes(sources, pool)] == expected
    finally:
        await pool.aclose()
    assert not pool.warned  # walked by walker processes, not by the thread fallback


def test_a_walker_process_starts_without_the_service_s_heavy_modules():
    """Every big scan starts its walkers (two on two cores): the modules they import are their
    start-up CPU (with asyncio, logging, pathlib and the scanner's own: 0.17-0.20 s each; the
    walk alone: 0.09 s; then with typing, dataclasses and datetime 50 ms, without them 24)."""
    command, env = python_module(walk_child.__name__)
    heavy = ["asyncio", "dataclasses", "datetime", "logging", "pathlib", "pydantic", "sqlalchemy",
             "service.core.jobspec", "service.scanner.sources.base",
             "service.scanner.sources.walker", "traceback", "typing"]  # fmt: skip
    probe = (
        f"import runpy, sys; sys.argv = ['walk_child']; sys.stdin = open('/dev/null');"
        f"runpy.run_module({walk_child.__name__!r}, run_name='__main__', alter_sys=True);"
        f"print([name for name in {heavy!r} if name in sys.modules])"
    )
    done = subprocess.run(
        [command[0], "-P", "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


class Counted(WalkerPool):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.started: list[Walker] = []

    async def _start(self) -> Walker:
        self.started.append(await super()._start())
        return self.started[-1]


async def test_a_caller_that_stops_listening_leaves_no_process_behind(tmp_path):
    sources = awkward_tree(tmp_path)[3:6] * 20
    pool = Counted(2)
    listings = list_in_processes(sources, 30, pool)
    assert isinstance(await anext(listings), Listing)
    await listings.aclose()  # the walks under way are killed
    assert len(pool.started) == 2
    await pool.aclose()
    assert all(walker.process.returncode is not None for walker in pool.started)
    assert not pool._idle and not pool._busy


class NoProcesses(WalkerPool):
    """The system gives no more processes (fork fails with EAGAIN under a process limit)."""

    async def _start(self) -> Walker:
        raise BlockingIOError(11, "Resource temporarily unavailable")


async def test_without_processes_a_thread_walks_the_sources(tmp_path):
    sources = awkward_tree(tmp_path)
    expected = [same(result) for result in await in_thread(sources)]
    pool = NoProcesses(2)
    assert [same(result) for result in await in_processes(sources, pool)] == expected
    await pool.aclose()
