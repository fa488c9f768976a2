"""The verification worker's end (service.runtime.local_verify): a worker that answered but is
slow to go (its lowest priority on a machine busy for seconds) is never left running, even when
the wait for it is cancelled (the verifier stopping). The worker here is a real process that
answers, then lingers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.core.jobspec import Verify
from service.runtime import local_verify
from service.store.verifications import DueArtifact
from service.verify.budget import Budget
from service.verify.formats import Limits

OUTCOME = {"result": "ok", "detail": "", "bytes_read": 0, "seconds": 0.0, "checked": []}


def lingering_worker(pid_file: Path) -> str:
    """A worker that answers the request with OUTCOME, then stays a minute."""
    return (
        "import os, sys, time\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "sys.stdin.readline()\n"
        f"print({json.dumps(json.dumps({'outcome': OUTCOME}))}, flush=True)\n"
        "time.sleep(60)\n"
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def lingering(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    pid_file = tmp_path / "worker.pid"
    command = [sys.executable, "-c", lingering_worker(pid_file)]
    monkeypatch.setattr(local_verify, "python_module", lambda _module: (command, dict(os.environ)))
    return pid_file


def verification(tmp_path: Path) -> asyncio.Task[local_verify.Outcome]:
    due = DueArtifact(1, 1, "dump.sql.gz", 10, datetime.now(UTC))
    return asyncio.create_task(
        local_verify.verify_local_file(
            str(tmp_path / "dump.sql.gz"), due, Verify(), Budget(None), Limits(), threading.Event()
        )
    )


def written_pid(pid_file: Path) -> int | None:
    text = pid_file.read_text() if pid_file.exists() else ""
    return int(text) if text else None


async def answered(pid_file: Path) -> int:
    for _ in range(200):
        if (pid := written_pid(pid_file)) is not None:
            await asyncio.sleep(0.5)  # its answer read: the wait for its end has begun
            return pid
        await asyncio.sleep(0.05)
    raise AssertionError("the worker never started")


async def test_a_worker_that_answered_and_lingers_is_ended(lingering, tmp_path):
    task = verification(tmp_path)
    pid = await answered(lingering)
    outcome = await asyncio.wait_for(task, 15)
    assert outcome.result == "ok"
    assert not alive(pid)


async def test_a_cancelled_wait_for_the_worker_still_ends_it(lingering, tmp_path):
    task = verification(tmp_path)
    pid = await answered(lingering)
    assert alive(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert not alive(pid)
