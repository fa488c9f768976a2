"""The backup tools' process runner (service/scanner/sources/process.py) with real processes:
a timeout kills the whole process group (even a member that ignores SIGTERM) and reaps it,
a missing binary says so, output is capped, and tool messages are scrubbed of secrets."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from service.scanner.sources import process
from service.scanner.sources.base import SourceError


def alive_in_group(group: int) -> list[int]:
    """The processes of a process group that still run (zombies not counted)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == group and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive


def written(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


async def wait_for_file(path: Path) -> str:
    for _ in range(200):
        if text := written(path):
            return text
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} was never written")


async def test_a_timeout_kills_and_reaps_the_whole_group(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "GRACE_SECONDS", 0.3)
    pid_file = tmp_path / "pid"
    # a child that ignores SIGTERM (SIGKILL after the grace time) and one that does not
    script = f"trap '' TERM; sleep 300 & (trap '' TERM; sleep 301) & echo $$ > {pid_file}; wait"
    env = process.base_environment()
    task = asyncio.create_task(process.run(["sh", "-c", script], env))
    group = int(await wait_for_file(pid_file))
    assert len(alive_in_group(group)) >= 3  # sh, sleep, the subshell's sleep
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await task
    assert time.monotonic() - started < 5
    assert alive_in_group(group) == []


async def test_a_missing_binary_names_the_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SourceError) as raised:
        await process.run(["restic", "version"], process.base_environment())
    assert str(raised.value) == f"restic is not installed (PATH={tmp_path})"


async def test_stdin_is_empty_and_the_environment_minimal(monkeypatch):
    monkeypatch.setenv("SOMETHING_OF_THE_SERVICE", "x")
    finished = await process.run(
        ["sh", "-c", "cat; env | sort"], {**process.base_environment(), "EXTRA": "1"}
    )
    names = {line.split("=", 1)[0] for line in finished.stdout.decode().splitlines()}
    assert finished.status == 0
    assert "SOMETHING_OF_THE_SERVICE" not in names
    assert {"PATH", "LANG", "TZ", "EXTRA"} <= names
    assert b"TZ=UTC\n" in finished.stdout
    assert b"LANG=C.UTF-8\n" in finished.stdout


async def test_output_beyond_the_cap_is_an_error_and_the_tool_is_killed(tmp_path):
    pid_file = tmp_path / "pid"
    script = f"echo $$ > {pid_file}; yes"
    with pytest.raises(SourceError, match="answered more than 1 MB"):
        await process.run(["sh", "-c", script], process.base_environment(), max_stdout=1 << 20)
    assert alive_in_group(int(pid_file.read_text())) == []


async def test_a_failure_shows_the_tools_last_lines_without_secrets():
    script = "echo 'created new cache in /x' >&2; echo one >&2; echo; echo 'two s3cret' >&2; exit 3"
    finished = await process.run(["sh", "-c", script], process.base_environment())
    assert finished.status == 3
    error = process.failure(
        "tool list", finished, "repo X", ["s3cret", ""], lambda said: f"hint for {said}"
    )
    assert str(error) == "tool list failed on repo X: one two *** (hint for one two ***)"
    silent = process.Finished(2, b"", "")
    assert str(process.failure("tool", silent, "Y", [], lambda _: None)) == (
        "tool failed on Y: exit status 2"
    )


def test_scrub_replaces_the_longest_secret_first():
    assert process.scrub("abcdef abc", ["abc", "abcdef"]) == "*** ***"


async def test_sizing_stops_at_the_budget_but_always_makes_progress():
    started: list[str] = []

    async def size_of(name: str) -> int:
        started.append(name)
        await asyncio.sleep(0.05)
        return len(name)

    sizes = await process.size_newest_first(["a", "bb", "ccc"], size_of, budget=0, concurrency=2)
    assert sizes == {"a": 1, "bb": 2}
    assert started == ["a", "bb"]
    every = await process.size_newest_first(["a", "bb", "ccc"], size_of, budget=60, concurrency=2)
    assert every == {"a": 1, "bb": 2, "ccc": 3}


async def test_a_killed_tool_leaves_no_pipe_open():
    """A tool killed for answering too much (its stdout paused by flow control) or cancelled
    mid-answer: its pipes are closed at once, not left to the garbage collector."""
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(SourceError):
        await process.run(["sh", "-c", "yes"], process.base_environment(), max_stdout=1 << 20)
    script = "sleep 30 & yes | head -c 100000000; wait"
    task = asyncio.create_task(process.run(["sh", "-c", script], process.base_environment()))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)  # the transports' close callbacks
    assert sorted(os.listdir("/proc/self/fd")) == before
