"""The station's task runner: jobs live in its TaskGroup, fail alone, drain or cancel at the stop."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest
from structlog.testing import capture_logs

from controller.core.taskrunner import TaskRunner


async def test_a_failing_job_is_logged_and_ends_alone() -> None:
    runner = TaskRunner()
    main = asyncio.create_task(runner.run())
    await asyncio.sleep(0)  # the runner's TaskGroup opens
    other_done = asyncio.Event()

    async def boom() -> None:
        raise RuntimeError("boom")

    async def other() -> None:
        await asyncio.sleep(0.05)
        other_done.set()

    with capture_logs() as logs:
        assert runner.spawn(boom(), name="boom") is not None
        assert runner.spawn(other(), name="other") is not None
        await asyncio.wait_for(other_done.wait(), 5)
    assert [e["task"] for e in logs if e["event"] == "task.failed"] == ["boom"]
    assert not main.done()
    main.cancel()
    await asyncio.wait([main])
    assert main.cancelled() and not runner.running


async def test_at_the_stop_drain_jobs_finish_and_the_others_are_cancelled() -> None:
    runner = TaskRunner(drain_s=5.0)
    main = asyncio.create_task(runner.run())
    await asyncio.sleep(0)
    finished: list[str] = []

    async def job(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        finished.append(name)

    audit = runner.spawn(job("audit", 0.1), name="audit", drain=True)
    ramp = runner.spawn(job("ramp", 60.0), name="ramp")
    assert audit is not None and ramp is not None
    await asyncio.sleep(0)
    main.cancel()
    await asyncio.wait([main])
    assert finished == ["audit"] and ramp.cancelled() and audit.done()


async def test_jobs_before_the_runner_wait_or_run_at_settle() -> None:
    runner = TaskRunner()
    ran: list[str] = []

    async def job(name: str) -> None:
        ran.append(name)

    assert runner.spawn(job("early"), name="early") is None
    assert runner.spawn(job("dropped"), name="dropped", wait=False) is None
    main = asyncio.create_task(runner.run())
    await runner.settle()
    assert ran == ["early"]
    main.cancel()
    await asyncio.wait([main])
    assert runner.spawn(job("late"), name="late") is None
    await runner.settle()  # nobody runs the runner any more: settle runs what waits
    assert ran == ["early", "late"]


async def test_a_job_cancelled_before_it_starts_is_closed_quietly() -> None:
    runner = TaskRunner()
    main = asyncio.create_task(runner.run())
    await asyncio.sleep(0)

    async def job() -> None:
        await asyncio.sleep(60)

    task = runner.spawn(job(), name="job")
    assert task is not None
    task.cancel()
    await asyncio.wait([task])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gc.collect()  # "coroutine ... was never awaited" would be an error here
    main.cancel()
    await asyncio.wait([main])


@pytest.mark.parametrize("drain", [True, False])
async def test_cancelling_the_runner_stays_a_cancel(drain: bool) -> None:
    runner = TaskRunner(drain_s=0.05)
    main = asyncio.create_task(runner.run())
    await asyncio.sleep(0)
    runner.spawn(asyncio.sleep(60), name="sleep", drain=drain)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    main.cancel()
    with pytest.raises(asyncio.CancelledError):
        await main
