"""The scan pipeline (service/scanner/pipeline.py run_pipeline): observations settled in
batches on up to `lanes` lanes at once, results in job order, a failure raised, nothing left
running. Jobs, observations and results here are plain strings: the pipeline only passes them
on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import pytest

from service.scanner import pipeline


async def observe(jobs: Sequence[Any]) -> AsyncGenerator[Any, None]:
    for job in jobs:
        yield job


class Settler:
    """Settles a batch after `delay(batch)` seconds, recording what ran at once on each lane."""

    def __init__(self, delay: Any = lambda batch: 0.0, fail_on: str | None = None) -> None:
        self.delay, self.fail_on = delay, fail_on
        self.running: set[int] = set()
        self.most = 0
        self.cancelled = 0

    async def __call__(self, batch: Sequence[Any], lane: int) -> list[Any]:
        assert lane not in self.running  # a lane holds one batch at a time
        self.running.add(lane)
        self.most = max(self.most, len(self.running))
        try:
            await asyncio.sleep(self.delay(batch))
            if self.fail_on in batch:
                raise RuntimeError("the database went away")
            return [f"settled {job}" for job in batch]
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running.discard(lane)


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "WALK_AHEAD", 4)  # batches of at most 4 observations
    monkeypatch.setattr(pipeline, "BATCH_WAIT", 0.01)


async def pieces(jobs: list[str], size: int = 7) -> AsyncGenerator[list[str], None]:
    """The jobs a piece at a time, as the scanner reads them."""
    for start in range(0, len(jobs), size):
        await asyncio.sleep(0)
        yield jobs[start : start + size]


async def run(jobs: list[str], settle: Settler, lanes: int, stop: asyncio.Event | None = None):
    results: list[Any] = []
    outcome = await pipeline.run_pipeline(
        pieces(jobs), observe, settle, results, stop or asyncio.Event(), lanes=lanes
    )
    return outcome, results


async def test_two_lanes_keep_the_results_in_job_order():
    jobs = [f"job-{n:02d}" for n in range(20)]
    # The first batch of each pair is the slow one: the second finishes first.
    settle = Settler(delay=lambda batch: 0.05 if batch[0] in ("job-00", "job-08") else 0.0)
    outcome, results = await run(jobs, settle, lanes=2)
    assert outcome == "finished"
    assert results == [f"settled {job}" for job in jobs]
    assert settle.most == 2


async def test_one_lane_settles_one_batch_at_a_time():
    jobs = [f"job-{n:02d}" for n in range(12)]
    settle = Settler(delay=lambda batch: 0.01)
    outcome, results = await run(jobs, settle, lanes=1)
    assert (outcome, results) == ("finished", [f"settled {job}" for job in jobs])
    assert settle.most == 1


async def test_a_failing_batch_is_raised_and_nothing_is_left_running():
    jobs = [f"job-{n:02d}" for n in range(20)]
    settle = Settler(delay=lambda batch: 0.02, fail_on="job-05")
    with pytest.raises(RuntimeError, match="went away"):
        await run(jobs, settle, lanes=2)
    assert not settle.running


async def test_a_stop_ends_after_the_batches_in_hand():
    jobs = [f"job-{n:02d}" for n in range(40)]
    stop = asyncio.Event()

    def delay(batch: Sequence[Any]) -> float:
        stop.set()  # asked to stop as soon as the first batches are being written
        return 0.02

    settle = Settler(delay=delay)
    outcome, results = await run(jobs, settle, lanes=2, stop=stop)
    assert outcome == "interrupted"
    assert 0 < len(results) < len(jobs)
    assert results == [f"settled {job}" for job in jobs[: len(results)]]  # a prefix, in order
    assert settle.cancelled == 0  # what was being written was written


async def test_the_first_piece_is_observed_while_the_next_is_read():
    """A scan lists the first piece's sources while the other jobs are read: the next piece
    comes only once the first is being observed (waiting for all of them would hang here)."""
    first_seen = asyncio.Event()

    async def read() -> AsyncGenerator[list[str], None]:
        yield ["job-00", "job-01"]
        await asyncio.wait_for(first_seen.wait(), timeout=5)
        yield ["job-02"]

    async def watch(jobs: Sequence[Any]) -> AsyncGenerator[Any, None]:
        for job in jobs:
            first_seen.set()
            yield job

    results: list[Any] = []
    outcome = await pipeline.run_pipeline(read(), watch, Settler(), results, asyncio.Event())
    assert outcome == "finished"
    assert results == ["settled job-00", "settled job-01", "settled job-02"]


async def test_a_failure_to_read_the_jobs_is_raised_after_what_was_read_is_settled():
    async def read() -> AsyncGenerator[list[str], None]:
        yield ["job-00"]
        raise RuntimeError("the database went away")

    results: list[Any] = []
    with pytest.raises(RuntimeError, match="went away"):
        await pipeline.run_pipeline(read(), observe, Settler(), results, asyncio.Event())
    assert results == ["settled job-00"]


async def test_a_stop_before_every_piece_is_read_is_an_interruption():
    """Every job read so far settled is not every job: the pieces not read yet are not done."""
    stop = asyncio.Event()

    async def read() -> AsyncGenerator[list[str], None]:
        yield ["job-00"]
        yield ["job-01"]

    async def stopping(jobs: Sequence[Any]) -> AsyncGenerator[Any, None]:
        for job in jobs:
            stop.set()  # asked to stop once the first job is listed
            yield job

    results: list[Any] = []
    outcome = await pipeline.run_pipeline(read(), stopping, Settler(), results, stop)
    assert (outcome, results) == ("interrupted", ["settled job-00"])


async def test_a_stop_at_the_last_job_is_no_interruption_once_every_job_is_settled():
    stop = asyncio.Event()

    async def read() -> AsyncGenerator[list[str], None]:
        yield ["job-00", "job-01"]

    async def stopping_at_the_last(jobs: Sequence[Any]) -> AsyncGenerator[Any, None]:
        for job in jobs:
            if job == jobs[-1]:
                stop.set()
            yield job

    results: list[Any] = []
    outcome = await pipeline.run_pipeline(read(), stopping_at_the_last, Settler(), results, stop)
    assert (outcome, results) == ("finished", ["settled job-00", "settled job-01"])
