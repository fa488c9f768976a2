"""Verifying a local file in a worker process of the lowest priority (service.verify.worker).

One process per file, in a session of its own (so that it is scheduled as a group of its own,
which it sets to nice 19): a scan, a ping or the API gets the cores first. The byte budget and
the stop signal stay here: before each piece the worker asks for it (`{"take": n}`) and this
side answers `go` once the budget allows it, or `stop`. A worker that dies (killed, out of
memory) is an error for this verification (the verifier gives the artifact back: read again
later); a verification cancelled (the service stopping past its grace) kills its worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from service.children import python_module
from service.core.jobspec import Verify
from service.store.verifications import DueArtifact
from service.verify.budget import Budget
from service.verify.formats import CHUNK, Limits, Outcome

logger = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WORKER = "service.verify.worker"


GRANT_SECONDS = 0.05  # the budget is granted a worker about this much reading at a time
MAX_GRANT = 8 * 1024 * 1024


def grant_of(rate: float | None) -> int:
    """Bytes a worker is granted at a time: a twentieth of a second of the budget, between one
    piece (CHUNK: as paced as a thread) and MAX_GRANT (the budget's bursts stay short)."""
    if rate is None:
        return MAX_GRANT
    return max(CHUNK, min(MAX_GRANT, int(rate * GRANT_SECONDS)))


class WorkerDied(Exception):
    """The worker process ended without an outcome."""


async def verify_local_file(
    path: str,
    due: DueArtifact,
    verify: Verify,
    budget: Budget,
    limits: Limits,
    stop: threading.Event,
) -> Outcome:
    """Verify the local file of artifact `due` at `path` (see the module docstring)."""
    request = {
        "path": path,
        "artifact": due.path,
        "size": due.size,
        "mtime_us": int((due.mtime - _EPOCH) / timedelta(microseconds=1)),
        "archive": verify.archive,
        "checksum": verify.checksum == "sidecar",
        "limits": dataclasses.asdict(limits),
        "grant": grant_of(budget.rate),
    }
    command, env = python_module(WORKER)
    worker = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True, env=env,
    )  # fmt: skip
    assert worker.stdin is not None
    assert worker.stdout is not None
    assert worker.stderr is not None
    said = asyncio.create_task(worker.stderr.read())
    answered = False
    try:
        await _say(worker.stdin, json.dumps(request).encode() + b"\n")
        while line := await worker.stdout.readline():
            message: dict[str, Any] = json.loads(line)
            if "outcome" in message:
                found, answered = message["outcome"], True
                return Outcome(**{**found, "checked": tuple(found["checked"])})
            go = await asyncio.to_thread(budget.take, int(message["take"]), stop)
            await _say(worker.stdin, b"go\n" if go else b"stop\n")
        code = await worker.wait()
        raise WorkerDied(f"the verification process ended ({_ended(code)}) without an outcome")
    finally:
        try:
            if not answered and worker.returncode is None:  # cancelled, or an error here
                with contextlib.suppress(ProcessLookupError):
                    worker.kill()
            # A read stuck in the kernel (a dead NFS server) may keep even a killed one.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await worker.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    problems = (await said).decode(errors="replace").strip()
                    if problems:
                        logger.warning("verification worker: %s", problems, extra={"path": path})
        finally:  # also when those waits are cancelled (the verifier stopping)
            said.cancel()
            worker.stdin.close()
            if worker.returncode is None:
                # Answered but not gone yet (at its low priority, on a machine busy for
                # seconds), or the wait cancelled: a process left running would outlive the
                # verifier.
                with contextlib.suppress(ProcessLookupError):
                    worker.kill()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1):
                        await worker.wait()


async def _say(stdin: asyncio.StreamWriter, line: bytes) -> None:
    """Write to the worker; a worker that died meanwhile is found at its output's end."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(line)
        await stdin.drain()


def _ended(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"
