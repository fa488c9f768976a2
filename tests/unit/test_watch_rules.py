"""The pure rules of the source watcher: which file systems can be trusted, which jobs a changed
path concerns, what the readiness check says."""

from __future__ import annotations

import pytest

from service.scanner.sources.local import _matcher
from service.scanner.watch import (
    MAX_GAP_SECONDS,
    WatchedJob,
    blamed_paths,
    jobs_of_path,
    mount_of,
    next_gap,
    parse_mounts,
    summary,
    unwatchable_fstype,
    watch_roots,
)


@pytest.mark.parametrize(
    ("fstype", "kind"),
    [
        ("ext4", None), ("xfs", None), ("btrfs", None), ("zfs", None), ("tmpfs", None),
        ("overlay", None), ("fuseblk", None), ("fuse.ntfs-3g", None),
        ("nfs", "network"), ("nfs4", "network"), ("NFS4", "network"), ("cifs", "network"),
        ("smb3", "network"), ("smbfs", "network"), ("9p", "network"), ("ceph", "network"),
        ("glusterfs", "network"), ("virtiofs", "network"), ("vboxsf", "network"),
        ("fuse.sshfs", "FUSE"), ("fuse.rclone", "FUSE"), ("fuse.s3fs", "FUSE"), ("fuse", "FUSE"),
    ],
)  # fmt: skip
def test_which_file_systems_notify_every_write(fstype, kind):
    reason = unwatchable_fstype(fstype)
    if kind is None:
        assert reason is None
    else:
        assert reason is not None and kind in reason and fstype in reason


def test_mounts_are_read_with_their_escapes_and_the_deepest_wins():
    mounts = parse_mounts(
        "/dev/sda1 / ext4 rw 0 0\n"
        "filer:/x /mnt/back\\040ups nfs4 rw 0 0\n"
        "tmpfs /mnt/back\\040ups/local tmpfs rw 0 0\n"
        "short line\n"
    )
    assert mounts == [
        ("/", "ext4"), ("/mnt/back ups", "nfs4"), ("/mnt/back ups/local", "tmpfs")
    ]  # fmt: skip
    assert mount_of("/mnt/back ups/db", mounts) == ("/mnt/back ups", "nfs4")
    assert mount_of("/mnt/back ups", mounts) == ("/mnt/back ups", "nfs4")
    assert mount_of("/mnt/back ups/local/x", mounts) == ("/mnt/back ups/local", "tmpfs")
    assert mount_of("/mnt/back upsx", mounts) == ("/", "ext4")  # a prefix is not a parent
    assert mount_of("/x", []) is None
    # Mounted twice on the same point: the last one hides the first.
    assert mount_of("/m/a", [("/", "ext4"), ("/m", "ext4"), ("/m", "nfs")]) == ("/m", "nfs")


def job(name: str, path: str, recursive: bool = False, pattern: str = "*", exclude=()):
    return WatchedJob(name, path, recursive, _matcher(pattern, exclude))


def test_roots_inside_a_recursive_one_are_not_watched_twice():
    jobs = [
        job("a", "/b"), job("b", "/b", recursive=True), job("c", "/b/sub"),
        job("d", "/other"), job("e", "/other/sub"),
    ]  # fmt: skip
    assert watch_roots(jobs) == {"/b": True, "/other": False, "/other/sub": False}


@pytest.mark.parametrize(
    ("path", "is_file", "expected"),
    [
        ("/b/x.gz", True, {"flat", "deep"}),
        ("/b/x.txt", True, {"txt"}),  # not the pattern of flat nor deep
        ("/b/.x.gz.Xa1b2", True, set()),  # excluded by default (a temporary name)
        ("/b/sub/x.gz", True, {"deep"}),  # below: only the recursive job
        ("/b/sub", False, {"deep"}),  # a directory moved in: the recursive job, whatever its name
        ("/b/sub/gone", False, {"deep"}),  # gone, maybe a directory: conservative
        ("/b", False, {"flat", "deep", "txt"}),  # the source itself went or came
        ("/c/x.gz", True, set()),
    ],
)
def test_the_jobs_a_changed_path_concerns(path, is_file, expected):
    jobs = [
        job("flat", "/b", pattern="*.gz", exclude=(".*", "*.tmp")),
        job("deep", "/b", recursive=True, pattern="*.gz", exclude=(".*",)),
        job("txt", "/b", pattern="*.txt"),
    ]
    by_root = {"/b": jobs}
    assert jobs_of_path(path, by_root, lambda _path: is_file) == expected


def test_a_path_with_a_leading_double_slash_ends_its_walk_up():
    """POSIX keeps a leading `//` (`normpath` too), and the dirname of `//` is itself: the walk
    up from such a source's files used to never end (the event loop held for good)."""
    jobs = [job("deep", "//srv/b", recursive=True, pattern="*.gz"), job("top", "//srv")]
    assert watch_roots(jobs) == {"//srv": False, "//srv/b": True}
    by_root = {"//srv/b": [jobs[0]], "//srv": [jobs[1]]}
    assert jobs_of_path("//srv/b/sub/x.gz", by_root, lambda _path: True) == {"deep"}


def test_the_paths_an_os_watcher_error_names():
    message = 'OS file watch limit reached. about ["/a/b", "/c \\"q\\""] (Error { ... })'
    assert blamed_paths(message) == ["/a/b", '/c "q"']
    assert blamed_paths("No such file or directory (os error 2)") == []
    assert blamed_paths('x about ["/sauvegardes/été"]') == ["/sauvegardes/été"]


def test_the_readiness_check_names_at_most_five_sources():
    assert summary(0, 0, {}) == "ok: no local source to watch"
    assert summary(3, 3, {}) == "ok: 3 of 3 sources watched"
    unwatched = {f"/s{i}": "why" for i in range(7)}
    text = summary(1, 8, unwatched)
    assert text.startswith("degraded: 1 of 8 sources watched; seen at the periodic scan only: ")
    assert text.count("(why)") == 5 and text.endswith("; and 2 more (see the log)")


@pytest.mark.parametrize(
    ("gap", "last", "now", "expected"),
    [
        (None, None, 100.0, 1.0),  # never judged: at once
        (1.0, 99.0, 100.0, 2.0),  # still changing a second after its judgement: doubles
        (2.0, 98.5, 100.0, 4.0),
        (16.0, 90.0, 100.0, MAX_GAP_SECONDS),  # capped
        (MAX_GAP_SECONDS, 80.0, 100.0, MAX_GAP_SECONDS),
        (4.0, 92.0, 100.0, 1.0),  # quiet for twice the gap: a new change is judged at once
        (4.0, 92.0001, 100.0, 8.0),  # just under twice the gap: still the same burst
        (0.5, 99.9, 100.0, 1.0),  # never below the base
    ],
)
def test_the_gap_between_judgements_doubles_while_changes_go_on(gap, last, now, expected):
    assert next_gap(gap, last, now, base=1.0) == expected


def test_a_dump_written_for_half_an_hour_is_judged_tens_of_times_not_thousands():
    """A change every second for 30 minutes, marked as SourceWatcher._mark does: a job waiting
    for its judgement is not marked again; the judgement runs when it is due."""
    gap: float | None = None
    last: float | None = None
    due: float | None = None
    judged = 0
    for second in range(1800):
        now = float(second)
        if due is not None and due <= now:
            last, due, judged = due, None, judged + 1
        if due is None:
            gap = next_gap(gap, last, now, base=1.0)
            due = now if last is None else max(now, last + gap)
            if due <= now:
                last, due, judged = now, None, judged + 1
    assert judged <= 1800 / MAX_GAP_SECONDS + 6
    assert gap == MAX_GAP_SECONDS
