"""Local filesystem source. The walk runs in a worker thread, never on the event loop."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path

from service.jobspec import path_within_roots
from service.scanner.sources.base import FileEntry, Listing, SourceError


def display_path(path: str) -> str:
    """A str that can be stored anywhere: undecodable bytes of a file name become \\xNN."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path


def _describe(exc: OSError) -> str:
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.strerror else str(exc)


class _Cancelled(Exception):
    pass


class LocalSource:
    def __init__(
        self,
        path: str,
        pattern: str = "*",
        *,
        recursive: bool = False,
        timeout: float = 300.0,
        scan_roots: Sequence[Path] = (),
    ) -> None:
        self.path = path
        self.pattern = pattern
        self.recursive = recursive
        self.timeout = timeout
        self.scan_roots = tuple(scan_roots)

    async def list_files(self) -> Listing:
        cancel = threading.Event()
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._walk, cancel), self.timeout)
        except TimeoutError:
            cancel.set()  # the thread notices and stops at its next entry
            raise SourceError(
                f"listing {self.path} took longer than {self.timeout:g} s "
                "(SOURCE_TIMEOUT_SECONDS); is the storage hung?"
            ) from None
        except _Cancelled:  # pragma: no cover - only after a timeout
            raise SourceError(f"listing {self.path} was cancelled") from None

    def _walk(self, cancel: threading.Event) -> Listing:
        root = self.path
        real_root = os.path.realpath(root)
        if self.scan_roots and not path_within_roots(root, self.scan_roots):
            raise SourceError(f"{root} resolves to {real_root}, outside SCAN_ROOTS")
        try:
            root_stat = os.stat(root)
        except OSError as exc:
            raise SourceError(f"cannot read {root}: {_describe(exc)}") from None
        if not stat.S_ISDIR(root_stat.st_mode):
            raise SourceError(f"cannot read {root}: not a directory")

        listing = Listing()
        visited = {(root_stat.st_dev, root_stat.st_ino)}
        pending: list[tuple[str, str]] = [("", root)]
        while pending:
            rel_dir, dir_path = pending.pop()
            try:
                iterator = os.scandir(dir_path)
            except OSError as exc:
                if not rel_dir:
                    raise SourceError(f"cannot read {root}: {_describe(exc)}") from None
                listing.warnings.append(f"cannot read {display_path(dir_path)}: {_describe(exc)}")
                continue
            with iterator:
                for entry in iterator:
                    if cancel.is_set():
                        raise _Cancelled
                    rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                    self._visit(entry, rel, real_root, listing, pending, visited)
        return listing

    def _visit(
        self,
        entry: os.DirEntry[str],
        rel: str,
        real_root: str,
        listing: Listing,
        pending: list[tuple[str, str]],
        visited: set[tuple[int, int]],
    ) -> None:
        try:
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if not path_within_roots(target, [Path(real_root)]):
                    listing.skipped.append(f"{display_path(rel)}: symlink out of the source")
                    return
                info = os.stat(entry.path)  # follows the link; a loop raises ELOOP
            elif entry.is_dir(follow_symlinks=False):
                if self.recursive:
                    info = entry.stat(follow_symlinks=False)
                else:
                    return
            elif not fnmatchcase(entry.name, self.pattern):
                return
            else:
                info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            # Gone between the directory read and the stat (rotation), or a dangling link.
            if entry.is_symlink():
                listing.skipped.append(f"{display_path(rel)}: dangling symlink")
            return
        except OSError as exc:
            if entry.is_symlink():
                listing.skipped.append(f"{display_path(rel)}: {_describe(exc)}")
            else:
                listing.warnings.append(f"cannot read {display_path(rel)}: {_describe(exc)}")
            return

        if stat.S_ISDIR(info.st_mode):
            key = (info.st_dev, info.st_ino)
            if not self.recursive:
                return
            if key in visited:
                listing.skipped.append(f"{display_path(rel)}: directory already visited (loop)")
                return
            visited.add(key)
            pending.append((rel, entry.path))
        elif stat.S_ISREG(info.st_mode) and fnmatchcase(entry.name, self.pattern):
            listing.entries.append(
                FileEntry(display_path(rel), info.st_size, info.st_mtime_ns // 1000)
            )
