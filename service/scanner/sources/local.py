"""Local filesystem source. The walk runs in a worker thread, never on the event loop."""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import stat
import threading
from collections.abc import Callable, Sequence

from service.core.paths import path_within_roots
from service.scanner.sources.listing import Cancelled, Listing, SourceError

TYPE_CHECKING = False  # typing: a sixth of a walker process's start-up
if TYPE_CHECKING:  # not imported: the walker processes start without pathlib
    from pathlib import Path

Matcher = Callable[[str], object]


def display_path(path: str) -> str:
    """A str that can be stored anywhere: undecodable bytes of a file name become \\xNN."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path


def _describe(exc: OSError) -> str:
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.strerror else str(exc)


class LocalSource:
    def __init__(
        self, path: str, pattern: str = "*", *, recursive: bool = False,
        scan_roots: Sequence[str | Path] = (), exclude: Sequence[str] = (),
    ) -> None:  # fmt: skip
        self.path = self.label = path
        self.pattern = pattern
        self.exclude = tuple(exclude)
        self.recursive = recursive
        self.scan_roots = tuple(scan_roots)
        # The job's listing synced last: (its source's JSON, its digest: jobs.listing_digest,
        # how many of the newest files are judged). A walker process that lists it unchanged
        # sends a summary instead of every entry (Listing.summary); None: the whole listing.
        self.synced: tuple[str, str, int] | None = None

    def walk(self, cancel: threading.Event) -> Listing:
        """List the matching files (blocking: run it in a worker thread)."""
        root = self.path
        if self.scan_roots and not path_within_roots(root, self.scan_roots):
            raise SourceError(f"{root} resolves to {os.path.realpath(root)}, outside SCAN_ROOTS")
        try:
            root_stat = os.stat(root)
        except OSError as exc:
            raise SourceError(f"cannot read {root}: {_describe(exc)}") from None
        if not stat.S_ISDIR(root_stat.st_mode):
            raise SourceError(f"cannot read {root}: not a directory")

        # Compiled in the walking thread: sources are made on the event loop, and a long glob
        # takes milliseconds to compile (a 300 KB one took seconds); once per pattern.
        matches = _matcher(self.pattern, self.exclude)
        listing = Listing()
        walk = _Walk(root, self.recursive, matches, listing, {(root_stat.st_dev, root_stat.st_ino)})
        while walk.pending:
            rel_dir, dir_path = walk.pending.pop()
            if cancel.is_set():
                raise Cancelled
            try:
                walk.directory(dir_path, rel_dir)
            except OSError as exc:  # unreadable, or failed while being read (ESTALE, EIO)
                if not rel_dir:
                    raise SourceError(f"cannot read {root}: {_describe(exc)}") from None
                listing.warnings.append(f"cannot read {display_path(dir_path)}: {_describe(exc)}")
        if walk.escaped:
            _drop_escape_collisions(listing)
        return listing


class _Walk:
    """One walk's state: the directories still to read, those seen (loops), the root's real
    path (resolved when a symlink first needs it), whether a name was shown escaped."""

    __slots__ = ("_real_root", "escaped", "listing", "matches", "pending", "recursive", "root",
                 "visited")  # fmt: skip

    def __init__(
        self, root: str, recursive: bool, matches: Matcher, listing: Listing,
        visited: set[tuple[int, int]],
    ) -> None:  # fmt: skip
        self.root, self.recursive, self.matches, self.listing = root, recursive, matches, listing
        self.visited = visited
        self.pending: list[tuple[str, str]] = [("", root)]
        self.escaped = False
        self._real_root: str | None = None

    def real_root(self) -> str:
        if self._real_root is None:
            self._real_root = os.path.realpath(self.root)
        return self._real_root

    def shown(self, path: str) -> str:
        """display_path, noting whether it escaped anything."""
        if path.isascii():
            return path
        display = display_path(path)
        if display != path:
            self.escaped = True
        return display

    def directory(self, dir_path: str, rel_dir: str) -> None:
        """The hot loop: one lstat per matching regular file, like find(1), relative to the
        directory's descriptor (the kernel resolves one name, not the whole path)."""
        append, matches, shown = self.listing.entries.append, self.matches, self.shown
        prefix = f"{rel_dir}/" if rel_dir else ""
        fd = os.open(dir_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with os.scandir(fd) as iterator:
                for entry in iterator:
                    name = entry.name
                    if not entry.is_file(follow_symlinks=False):
                        self.special(entry, os.path.join(dir_path, name), prefix + name)
                        continue
                    if not matches(name):
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed between the directory read and the stat (rotation)
                    except OSError as exc:
                        self.listing.warnings.append(
                            f"cannot read {display_path(prefix + name)}: {_describe(exc)}"
                        )
                        continue
                    append((shown(prefix + name), info.st_size, info.st_mtime_ns // 1000))
        finally:
            os.close(fd)

    def special(self, entry: os.DirEntry[str], path: str, rel: str) -> None:
        """A symlink or a directory (`path`: its path through the root): followed only inside
        the source, each directory once."""
        listing = self.listing
        is_link = entry.is_symlink()
        if not is_link and not (self.recursive and entry.is_dir(follow_symlinks=False)):
            return  # a directory without recursion, a socket, a FIFO, a device
        try:
            if is_link:
                target = os.path.realpath(path)
                if not path_within_roots(target, [self.real_root()]):
                    listing.skipped.append(f"{display_path(rel)}: symlink out of the source")
                    return
                info = os.stat(path)  # follows the link; a loop raises ELOOP
            else:
                info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            if is_link:
                listing.skipped.append(f"{display_path(rel)}: dangling symlink")
            return
        except OSError as exc:
            if is_link:
                listing.skipped.append(f"{display_path(rel)}: {_describe(exc)}")
            else:
                listing.warnings.append(f"cannot read {display_path(rel)}: {_describe(exc)}")
            return

        if stat.S_ISDIR(info.st_mode):
            key = (info.st_dev, info.st_ino)
            if not self.recursive:
                return
            if key in self.visited:
                listing.skipped.append(f"{display_path(rel)}: directory already visited (loop)")
                return
            self.visited.add(key)
            self.pending.append((rel, path))
        elif stat.S_ISREG(info.st_mode) and self.matches(entry.name):
            listing.entries.append((self.shown(rel), info.st_size, info.st_mtime_ns // 1000))


def _matcher(pattern: str, exclude: Sequence[str]) -> Matcher:
    """A file name test: it matches `pattern` and none of `exclude` (one regex for all)."""
    return _compiled(pattern, tuple(exclude))


@functools.lru_cache(maxsize=256)  # thousands of jobs share a handful of patterns
def _compiled(pattern: str, exclude: tuple[str, ...]) -> Matcher:
    wanted = fnmatch.translate(pattern)
    if not exclude:
        return re.compile(wanted).match
    unwanted = "|".join(fnmatch.translate(glob) for glob in exclude)
    return re.compile(f"(?!(?:{unwanted}))(?:{wanted})").match


def _drop_escape_collisions(listing: Listing) -> None:
    """A name that is not UTF-8 is shown escaped (\\xff); a real name may already read that way.
    Keep one entry per shown path (they are the identity of an artifact) and say so."""
    seen: set[str] = set()
    kept = []
    for entry in listing.entries:
        if entry[0] in seen:
            listing.skipped.append(f"{entry[0]}: two files show as this name; one is ignored")
            continue
        seen.add(entry[0])
        kept.append(entry)
    listing.entries[:] = kept
