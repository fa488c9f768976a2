"""Watching local sources: a file landing is judged within seconds, not at the next full scan.

SourceWatcher follows the jobs in the database (every `refresh_seconds`): the directories of
the non-paused jobs with a `local` source are watched with the OS's notifications (inotify,
through watchfiles), recursively where a job is recursive. Each changed path is mapped to the
jobs whose source holds it, and those jobs are judged through the scanner (trigger "watch"),
whose claims make a judgement by the full scan or the deadline tick at the same moment safe.

Invariants:
- a job is judged at most once per `coalesce_seconds` while events keep coming, and once more
  after they stop (the last events are never left unjudged);
- a source that cannot be watched (missing directory, network or FUSE file system, inotify
  limit, watcher error) is left to the periodic scan, logged once per path and reason, and
  named by `check()`; it is retried at each refresh;
- a source that becomes watched (after start) is judged at once: what landed before its watch
  was set up is not missed.

In a PostgreSQL fleet (`leases`: service.runtime.fleet.Fleet) every replica sees the same
change; the replica whose share the job is in judges it, under the job's listing lease, and the
others leave it (a job whose lease another replica holds for a moment, or a path its owner
cannot watch, is judged by the periodic scan).

The rules (which file system can be trusted, which jobs a path concerns) are pure functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import ValidationError
from sqlalchemy import Text, cast, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

# The backend under watchfiles' awatch (documented in its API reference as "Rust backend direct
# usage"): awatch would hold a thread of the default executor for ever and fail every path for
# one bad one; here each watcher has a thread of its own and a failing path is left out.
from watchfiles._rust_notify import RustNotify

from service.core.jobspec import LocalSource
from service.core.scan_options import ScanOptions
from service.db.engine import database_url_of
from service.db.errors import describe_error, log_failure
from service.db.models import Job
from service.scanner.scanner import run_scanner
from service.scanner.sources.local import _matcher

logger = logging.getLogger(__name__)

PROC_MOUNTS = "/proc/self/mounts"
# File systems whose changes made elsewhere (another machine, the host of a VM) never reach
# this kernel's inotify: a backup written there would be seen at the full scan only.
NETWORK_FSTYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "afs", "ceph", "glusterfs",
    "lustre", "gpfs", "beegfs", "virtiofs", "vboxsf", "vmhgfs", "davfs", "coda", "ocfs2", "gfs2",
})  # fmt: skip
# FUSE file systems that are local disks (ntfs-3g, exfat): their writes pass through this kernel.
LOCAL_FUSE_FSTYPES = frozenset({"fuseblk", "fuse.ntfs-3g", "fuse.exfat"})
# How long the OS watcher waits between looks at its queue, and at most groups a burst (ms).
STEP_MS = 50
DEBOUNCE_MS = 500
MAX_NAMED = 5  # sources named by check() at most; the log names them all
# More sources than this leaving (or coming back to) the watch for one reason at one refresh
# are logged together, LOG_PATHS a line (a mount gone under a fleet: 100 lines, not 10 000,
# each short enough for a log pipeline that splits long lines).
LOG_EACH = 10
LOG_PATHS = 100
# Rows of jobs read between two turns given back to the event loop: a refresh of 10 000 jobs
# is then many short steps, not one stall of the requests being served.
YIELD_EVERY = 500
# The longest time between two judgements of a job whose files keep changing (see next_gap).
MAX_GAP_SECONDS = 30.0


# --- pure rules -------------------------------------------------------------------------------


def unwatchable_fstype(fstype: str) -> str | None:
    """Why a file system of this type cannot be trusted to notify changes; None if it can."""
    kind = fstype.lower()
    if kind in NETWORK_FSTYPES or kind.startswith("nfs"):
        return f"a network file system ({fstype}): writes from other machines are not notified"
    if kind in LOCAL_FUSE_FSTYPES:
        return None
    if kind == "fuse" or kind.startswith("fuse."):
        return f"a FUSE file system ({fstype}): writes made behind it are not notified"
    return None


def parse_mounts(text: str) -> list[tuple[str, str]]:
    """(mount point, fstype) of each line of /proc/self/mounts (octal escapes decoded)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
            mounts.append((point, fields[2]))
    return mounts


def mount_of(path: str, mounts: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """The mount holding `path` (a resolved absolute path): the longest mount point above it,
    the last mounted when several share it."""
    best: tuple[str, str] | None = None
    for point, fstype in mounts:
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fstype)
    return best


@dataclass(frozen=True, slots=True)
class WatchedJob:
    """What the watcher knows of a job: its name and where its files land."""

    name: str
    path: str
    recursive: bool
    matches: Callable[[str], object]


def watch_roots(jobs: Iterable[WatchedJob]) -> dict[str, bool]:
    """The directories to watch, each with whether recursively. A directory inside one already
    watched recursively is left out (its events come through the outer watch)."""
    roots: dict[str, bool] = {}
    for job in jobs:
        roots[job.path] = roots.get(job.path, False) or job.recursive
    recursive = {path for path, deep in roots.items() if deep}
    if not recursive:
        return roots
    return {
        path: deep
        for path, deep in roots.items()
        if not any(parent in recursive for parent in _parents(path))
    }


def jobs_of_path(
    path: str, by_root: Mapping[str, Sequence[WatchedJob]], is_file: Callable[[str], bool]
) -> set[str]:
    """The names of the jobs whose listing a change at `path` may change.

    A job is concerned by a file of its pattern (not excluded) directly in its directory, or
    anywhere below it when recursive; by its directory itself (created, removed); and, when
    recursive, by anything below it that is not a regular file (a directory moved in brings
    files no event names). `is_file` is asked only for that last case.
    """
    names = {job.name for job in by_root.get(path, ())}
    name = path.rpartition("/")[2]
    for depth, root in enumerate(_parents(path)):
        for job in by_root.get(root, ()):
            if job.name in names or (depth and not job.recursive):
                continue
            if job.matches(name) or (job.recursive and not is_file(path)):
                names.add(job.name)
    return names


def _parents(path: str) -> Iterable[str]:
    """`/a/b/c` → `/a/b`, `/a`, `/`; `//srv/b` → `//srv`, `//` (POSIX keeps a leading `//`,
    and dirname of `//` is itself)."""
    while (parent := os.path.dirname(path)) != path:
        yield parent
        path = parent


def blamed_paths(message: str) -> list[str]:
    """The paths an error of the OS watcher names (notify writes `... about ["/a", "/b"]`)."""
    about = message.rpartition(" about [")[2]
    quoted = re.findall(r'"((?:[^"\\]|\\.)*)"', about)
    return [re.sub(r"\\(.)", r"\1", path) for path in quoted]


def summary(watched: int, total: int, unwatched: Mapping[str, str]) -> str:
    """The `watch` check of /health/ready: how many sources are watched, which are not, why."""
    if not total:
        return "ok: no local source to watch"
    if not unwatched:
        return f"ok: {watched} of {total} sources watched"
    named = [f"{path} ({why})" for path, why in sorted(unwatched.items())[:MAX_NAMED]]
    more = len(unwatched) - MAX_NAMED
    tail = f"; and {more} more (see the log)" if more > 0 else ""
    return (
        f"degraded: {watched} of {total} sources watched; seen at the periodic scan only: "
        + "; ".join(named)
        + tail
    )


# --- the OS watcher ---------------------------------------------------------------------------


@dataclass(eq=False)
class _Group:
    """One OS watcher (one inotify instance and its thread) over some directories."""

    recursive: bool
    paths: tuple[str, ...]
    identities: dict[str, tuple[int, int]]
    notify: RustNotify
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    error: str | None = None  # set when the watcher failed: its paths are no longer watched
    failed_at: float = 0.0  # loop time of the failure

    def run(self, deliver: Callable[[_Group, set[tuple[int, str]] | BaseException], None]) -> None:
        """The thread: wait for changes, hand them to the loop; until stopped or broken."""
        try:
            while not self.stop.is_set():
                changes = self.notify.watch(DEBOUNCE_MS, STEP_MS, 0, self.stop)
                if isinstance(changes, set):
                    deliver(self, changes)
        except Exception as exc:  # the watcher broke (a name it cannot decode, an OS error)
            deliver(self, exc)
        finally:
            self.notify.close()


def _open_group(
    paths: Sequence[str], recursive: bool
) -> tuple[RustNotify | None, dict[str, str], tuple[str, ...]]:
    """An OS watcher over `paths` (blocking); the paths it could not watch and why, and the
    paths watched. One bad path fails the whole creation: it is found from the error (or the
    whole group is given up) and the others are tried again."""
    failed: dict[str, str] = {}
    remaining = list(paths)
    while remaining:
        try:
            return (
                RustNotify(remaining, False, False, 0, recursive, False),
                failed,
                tuple(remaining),
            )
        except (OSError, RuntimeError) as exc:
            text = str(exc)
            limit = "watch limit" in text or "MaxFilesWatch" in text
            why = (
                "the inotify watch limit is reached (raise fs.inotify.max_user_watches)"
                if limit
                else f"cannot be watched: {describe_error(exc)}"
            )
            named = blamed_paths(text)
            culprits = [
                index
                for index, path in enumerate(remaining)
                if any(p == path or p.startswith(path.rstrip("/") + "/") for p in named)
            ]
            if not culprits:  # not said which: none of them is watched this time
                failed.update(dict.fromkeys(remaining, why))
                return None, failed, ()
            # Past the limit, every later path fails too: give them up at once.
            cut = range(culprits[0], len(remaining)) if limit else culprits
            given_up = set(cut)
            for index in given_up:
                failed[remaining[index]] = why
            remaining = [path for index, path in enumerate(remaining) if index not in given_up]
    return None, failed, ()


def _inspect(
    path: str, mounts: Sequence[tuple[str, str]]
) -> tuple[tuple[int, int] | None, str | None]:
    """(device, inode) of a directory that can be watched, or None and why not (blocking)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None, "does not exist yet: watched once it appears"
    except OSError as exc:
        # Without the path (the error's own text names it): the sources of one dead mount
        # share one reason, and are logged together.
        return None, f"cannot be read: {exc.strerror or describe_error(exc)}"
    if not stat.S_ISDIR(info.st_mode):
        return None, "is not a directory"
    mount = mount_of(os.path.realpath(path), mounts)
    if mount is not None:
        reason = unwatchable_fstype(mount[1])
        if reason is not None:
            return None, f"{reason}, mounted at {mount[0]}"
    return (info.st_dev, info.st_ino), None


@dataclass
class _Plan:
    """What a refresh found: the jobs, and for each root whether it can be watched."""

    jobs: list[WatchedJob]
    roots: dict[str, bool]
    identities: dict[str, tuple[int, int]]
    unwatchable: dict[str, str]


class ListingLeases(Protocol):
    """The listing leases of a fleet's replica (service.runtime.fleet.Fleet)."""

    async def take(self, names: Sequence[str]) -> tuple[list[str], dict[str, int]]:
        """Those of `names` this replica may list now; the leases taken for them (ids by name),
        to give back after."""
        ...

    async def give_back(self, claimed: Mapping[str, int]) -> None:
        """The leases of `claimed` given back."""
        ...


class SourceWatcher:
    """Watches the local sources of the jobs and judges a job when its files change.

    Lifecycle: `await start()`, then `await stop(grace)`; `check()` describes the state for
    /health/ready. `enabled=False` watches nothing (WATCH_SOURCES=false).
    """

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        scan_options: ScanOptions | None = None,
        refresh_seconds: float = 30.0,
        coalesce_seconds: float = 1.0,
        enabled: bool = True,
        mounts_file: str = PROC_MOUNTS,
        leases: ListingLeases | None = None,
    ) -> None:
        self.session_factory = session_factory
        # In a PostgreSQL fleet every replica sees a change; the replica whose share the job is
        # in, and that takes its listing lease, judges it.
        self.leases = leases
        self.scan_options = scan_options or ScanOptions()
        self.refresh_seconds = refresh_seconds
        self.coalesce_seconds = coalesce_seconds
        self.enabled = enabled
        self.mounts_file = mounts_file
        self._groups: dict[bool, _Group] = {}  # by recursive: one OS watcher of each kind
        self._failed: dict[bool, dict[str, str]] = {}  # paths a watcher could not take, why
        self._by_root: dict[str, list[WatchedJob]] = {}
        self._recursive: set[str] = set()  # the directories of the recursive jobs
        self._jobs: list[WatchedJob] = []
        self._unwatched: dict[str, str] = {}  # root → why it is not watched
        self._told: dict[str, str] = {}  # what the log last said about each root
        # The counts the log last said: none at first, so a service with no local source says
        # nothing (a line in the middle of unrelated requests).
        self._said = (0, 0)
        # Each job's source as last read, by (name, the source's JSON text): not parsed nor
        # validated again each time; None for a source not watched (not local, or invalid).
        self._known: dict[tuple[str, str], WatchedJob | None] = {}
        self._refreshed = False
        self._due: dict[str, float] = {}  # job name → when (loop time) to judge it
        self._last: dict[str, float] = {}  # job name → when its last judgement started
        self._gap: dict[str, float] = {}  # job name → the least time between its judgements
        self._wake = asyncio.Event()
        self._refresh_now = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ---

    async def start(self) -> None:
        """Watch the sources as the database has them now, then follow the jobs."""
        if not self.enabled:
            logger.info("watching of local sources is off (WATCH_SOURCES=false)")
            return
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._follow_jobs(), name="source-watcher-refresh"),
            asyncio.create_task(self._judge_due(), name="source-watcher-judge"),
        ]

    async def stop(self, grace: float = 5.0) -> None:
        """Stop watching; a judgement under way may finish its job for `grace` seconds."""
        self._stop.set()
        self._wake.set()
        self._refresh_now.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        groups, self._groups = list(self._groups.values()), {}
        for group in groups:
            group.stop.set()
        await asyncio.gather(*(asyncio.to_thread(_join, group) for group in groups))

    # --- what /health/ready shows ---

    def check(self) -> str:
        if not self.enabled:
            return "disabled (WATCH_SOURCES=false): sources are seen at the periodic scan only"
        if not self._refreshed:
            return "starting"
        unwatched = self._unwatched_sources()
        total = len(self._jobs)
        return summary(total - sum(unwatched.values()), total, self._reasons(unwatched))

    def watched_paths(self) -> set[str]:
        """The directories watched right now."""
        return {
            path for group in self._groups.values() if group.error is None for path in group.paths
        }

    def _unwatched_sources(self) -> dict[str, int]:
        """Root → how many jobs' sources it holds, for the roots not watched now."""
        watched = self.watched_paths()
        counts: dict[str, int] = {}
        for job in self._jobs:
            root = self._root_of(job.path)
            if root not in watched:
                counts[root] = counts.get(root, 0) + 1
        return counts

    def _reasons(self, unwatched: Mapping[str, int]) -> dict[str, str]:
        reasons = {}
        for root in unwatched:
            why = self._unwatched.get(root)
            if why is None:
                group = self._groups.get(root in self._recursive)
                why = (
                    f"watcher error: {group.error}" if group and group.error else "not watched yet"
                )
            reasons[root] = why
        return reasons

    def _root_of(self, path: str) -> str:
        """The watched root a job's directory falls under: itself, or its outermost parent
        that a recursive job watches."""
        root = path
        if self._recursive:
            for parent in _parents(path):
                if parent in self._recursive:
                    root = parent
        return root

    # --- following the jobs ---

    async def _follow_jobs(self) -> None:
        while not self._stop.is_set():
            try:
                await self._refresh()
            except Exception as exc:  # the database went away, or a bug: try again later
                log_failure(
                    logger,
                    "watch: cannot read the jobs",
                    exc,
                    database_url_of(self.session_factory),
                )
            self._refresh_now.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.refresh_seconds):
                    await self._refresh_now.wait()

    async def _refresh(self) -> None:
        jobs = await self._read_jobs()
        roots = watch_roots(jobs)
        plan = await asyncio.to_thread(self._inspect_all, jobs, roots)
        if self._stop.is_set():
            return
        before = self.watched_paths()
        first = not self._refreshed
        self._jobs, self._by_root = plan.jobs, _by_root(plan.jobs)
        self._recursive = {job.path for job in plan.jobs if job.recursive}
        self._unwatched = dict(plan.unwatchable)
        for recursive in (False, True):
            await self._reconcile(recursive, plan)
        self._unwatched = {**plan.unwatchable, **self._failed_now(plan)}
        self._refreshed = True
        self._log_changes(plan)
        watched = len(self._jobs) - sum(self._unwatched_sources().values())
        if (watched, len(self._jobs)) != self._said:
            self._said = (watched, len(self._jobs))
            logger.info(
                "watch: sources watched", extra={"watched": watched, "sources": len(self._jobs)}
            )
        self._prune_last()
        if not first:  # newly watched: what landed before the watch was set up is judged now
            fresh = self.watched_paths() - before
            for job in self._jobs:
                if self._root_of(job.path) in fresh:
                    self._mark(job.name)

    def _failed_now(self, plan: _Plan) -> dict[str, str]:
        failed = {path: why for paths in self._failed.values() for path, why in paths.items()}
        return {path: why for path, why in failed.items() if path in plan.roots}

    async def _read_jobs(self) -> list[WatchedJob]:
        """The jobs with a local source. A source is read as its JSON text, and parsed and
        validated only when new or changed; the loop gets a turn every YIELD_EVERY rows. (At
        10 000 jobs, decoding each source and encoding it again as its cache key, and walking
        each job's parents, held the event loop 150-320 ms at every refresh: bench/README.md.)"""
        async with self.session_factory() as session:
            rows = await session.execute(
                select(Job.name, cast(Job.source, Text)).where(
                    Job.paused.is_(False), Job.source.is_not(None)
                )
            )
            found = rows.all()
        jobs, known = [], {}
        for index, (name, text) in enumerate(found, 1):
            if index % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            key = (name, text)
            job = self._known[key] if key in self._known else _watched_job(name, text)
            known[key] = job
            if job is not None:
                jobs.append(job)
        self._known = known
        return jobs

    def _inspect_all(self, jobs: list[WatchedJob], roots: dict[str, bool]) -> _Plan:
        """Stat every root and find its file system (blocking: runs in a thread)."""
        try:
            with open(self.mounts_file, encoding="utf-8", errors="replace") as file:
                mounts = parse_mounts(file.read())
        except OSError:
            mounts = []
        identities, unwatchable = {}, {}
        for path in roots:
            identity, why = _inspect(path, mounts)
            if identity is not None:
                identities[path] = identity
            else:
                unwatchable[path] = why or "cannot be watched"
        return _Plan(jobs, roots, identities, unwatchable)

    async def _reconcile(self, recursive: bool, plan: _Plan) -> None:
        """Make the watcher of one kind (recursive or not) watch the paths it should; build a
        new one when its paths changed, a directory was replaced, or it broke (a refresh
        after its failure at the earliest: a failure that comes back is not retried in a loop).
        """
        wanted = tuple(
            sorted(
                p for p, deep in plan.roots.items() if deep == recursive and p in plan.identities
            )
        )
        current = self._groups.get(recursive)
        failed = self._failed.get(recursive, {})
        if current is not None and current.error is not None:
            assert self._loop is not None
            if self._loop.time() - current.failed_at < self.refresh_seconds:
                return
        else:
            paths = current.paths if current is not None else ()
            identities = current.identities if current is not None else {}
            # Paths it could not take are tried again at each refresh.
            same = not failed and set(paths) == set(wanted)
            if same and all(identities.get(p) == plan.identities[p] for p in paths):
                return
        group, self._failed[recursive] = (
            await asyncio.to_thread(_build, wanted, recursive, plan.identities)
            if wanted
            else (None, {})
        )
        if self._stop.is_set():
            if group is not None:
                group.notify.close()
            return
        if group is not None:
            self._groups[recursive] = group
            group.thread = threading.Thread(
                target=group.run, args=(self._deliver,), name="source-watcher", daemon=True
            )
            group.thread.start()
        else:
            self._groups.pop(recursive, None)
        if current is not None:  # the new one watches already: nothing falls between the two
            current.stop.set()
            await asyncio.to_thread(_join, current)

    def _log_changes(self, plan: _Plan) -> None:
        """Say once per path (and reason) that it is not watched, and when it is again; more
        than LOG_EACH paths at once for one reason together, LOG_PATHS a line."""
        now = dict(self._unwatched)
        newly: dict[str, list[str]] = {}  # reason → the paths newly not watched for it
        for path, why in now.items():
            if self._told.get(path) != why:
                newly.setdefault(why, []).append(path)
        for why, paths in newly.items():
            if len(paths) <= LOG_EACH:
                for path in paths:
                    logger.warning(
                        "watch: source not watched, left to the periodic scan",
                        extra={"path": path, "reason": why},
                    )
            else:
                for part in _parts(sorted(paths)):
                    logger.warning(
                        "watch: sources not watched, left to the periodic scan",
                        extra={"count": len(paths), "reason": why, "paths": part},
                    )
        back = sorted(path for path in set(self._told) - set(now) if path in plan.roots)
        if len(back) <= LOG_EACH:
            for path in back:
                logger.info("watch: source watched", extra={"path": path})
        else:
            for part in _parts(back):
                logger.info(
                    "watch: sources back under watch", extra={"count": len(back), "paths": part}
                )
        self._told = now

    def refresh_soon(self) -> None:
        """Read the jobs again now, not at the next `refresh_seconds`."""
        self._refresh_now.set()

    def _prune_last(self) -> None:
        assert self._loop is not None
        old = self._loop.time() - self.coalesce_seconds
        self._last = {name: at for name, at in self._last.items() if at > old}

    # --- from the OS watcher's thread to judgements ---

    def _deliver(self, group: _Group, changes: set[tuple[int, str]] | BaseException) -> None:
        """Called in the watcher's thread: hand over to the event loop."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are stopping
            self._loop.call_soon_threadsafe(self._received, group, changes)

    def _received(self, group: _Group, changes: set[tuple[int, str]] | BaseException) -> None:
        if self._stop.is_set():
            return
        if isinstance(changes, BaseException):
            if self._groups.get(group.recursive) is not group:
                return  # a watcher already replaced
            group.error = describe_error(changes)
            group.failed_at = self._loop.time() if self._loop else 0.0
            logger.warning(
                "watch: the watcher failed; its sources are left to the periodic scan until "
                "the next refresh",
                extra={"error": group.error, "sources": len(group.paths)},
            )
            return
        # Also from a watcher being replaced: the changes it grouped before its successor
        # started are seen by nobody else.
        for _change, path in changes:
            for name in jobs_of_path(path, self._by_root, _is_file):
                self._mark(name)
            if path in group.identities:  # a watched directory itself went or came
                self.refresh_soon()

    def _mark(self, name: str) -> None:
        """Judge `name` now, or once its last judgement is `gap` seconds old (pure rule:
        next_gap): `coalesce_seconds` for a change after a quiet time, doubling while the
        changes go on (a dump written for 30 minutes), up to MAX_GAP_SECONDS."""
        if name in self._due:
            return
        assert self._loop is not None
        now = self._loop.time()
        last = self._last.get(name)
        gap = next_gap(self._gap.get(name), last, now, self.coalesce_seconds)
        self._gap[name] = gap
        self._due[name] = now if last is None else max(now, last + gap)
        self._wake.set()

    async def _judge_due(self) -> None:
        assert self._loop is not None
        loop = self._loop
        while not self._stop.is_set():
            now = loop.time()
            first = min(self._due.values(), default=None)
            if first is None or first > now:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if first is None else first - now):
                        await self._wake.wait()
                continue
            names = sorted(name for name, at in self._due.items() if at <= now)
            for name in names:
                del self._due[name]
                self._last[name] = now
            await self._judge(names)

    async def _judge(self, names: list[str]) -> None:
        taken: Mapping[str, int] = {}
        try:
            if self.leases is not None:
                names, taken = await self.leases.take(names)
                if not names:
                    return
            async with self.session_factory() as session:
                report = await run_scanner(
                    session, self.scan_options, trigger="watch", stop=self._stop, names=names
                )
            # Another scan was writing the job just then, from a look that may predate the
            # change: judge it again (a second after this one).
            for result in report.jobs:
                if result.skipped:
                    self._mark(result.name)
        except Exception as exc:  # like the tick: log, keep watching
            log_failure(
                logger, "watch: judging changed sources failed", exc,
                database_url_of(self.session_factory),
            )  # fmt: skip
        finally:
            if taken and self.leases is not None:
                await self.leases.give_back(taken)


def next_gap(gap: float | None, last: float | None, now: float, base: float) -> float:
    """The least time between two judgements of a job whose files change at `now`, its last
    judgement at `last` with `gap` (None: never judged). Changes that go on while the job is
    judged (a dump written in place for half an hour: an event a write) double the gap up to
    MAX_GAP_SECONDS: tens of judgements, not one a second, and its size is judged once it has
    settled anyway (the deadline tick judges it then). A change after a quiet time (no judgement
    for twice the gap) starts again from `base`, so a file landing is judged at once."""
    if gap is None or last is None or now - last >= 2 * gap:
        return base
    return min(max(2 * gap, base), MAX_GAP_SECONDS)


def _parts(paths: list[str]) -> list[list[str]]:
    """`paths` in lists of LOG_PATHS at most (one log line each)."""
    return [paths[start : start + LOG_PATHS] for start in range(0, len(paths), LOG_PATHS)]


def _watched_job(name: str, text: str) -> WatchedJob | None:
    """What the watcher needs of a job whose source is this JSON text; None for a source it
    does not watch (not local) or cannot read (the scan reports it on the job)."""
    try:
        source = json.loads(text)
    except ValueError:
        return None
    if not isinstance(source, dict) or source.get("type", "local") != "local":
        return None
    try:
        spec = LocalSource.model_validate(source)
    except ValidationError:
        return None
    return WatchedJob(name, spec.path, spec.recursive, _matcher(spec.pattern, spec.excluded))


def _by_root(jobs: Iterable[WatchedJob]) -> dict[str, list[WatchedJob]]:
    by_root: dict[str, list[WatchedJob]] = {}
    for job in jobs:
        by_root.setdefault(job.path, []).append(job)
    return by_root


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False  # gone: it may have been a directory


def _join(group: _Group) -> None:
    if group.thread is not None:
        group.thread.join(timeout=5)


def _build(
    paths: tuple[str, ...], recursive: bool, identities: Mapping[str, tuple[int, int]]
) -> tuple[_Group | None, dict[str, str]]:
    """A watcher over `paths` (blocking), and the paths it could not take and why."""
    notify, failed, watched = _open_group(paths, recursive)
    if notify is None:
        return None, failed
    return _Group(recursive, watched, {p: identities[p] for p in watched}, notify), failed
