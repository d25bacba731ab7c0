"""A vSphere step (snapshot create/remove) runs to its end even when the backup is cancelled."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sendense_tools.backup.blocking import finish_blocking, run_blocking


async def test_cancellation_waits_for_the_step_then_is_delivered():
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def step() -> str:
        started.set()
        release.wait(60)
        finished.append("removed")
        return "done"

    task = asyncio.create_task(run_blocking(step))
    await asyncio.to_thread(started.wait, 60)
    task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()  # still waiting for the step
    task.cancel()  # a second cancel does not abandon it either
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == ["removed"]


async def test_result_and_errors_pass_through():
    assert await run_blocking(lambda: 42) == 42

    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await run_blocking(fail)


async def test_a_step_cancelled_while_running_still_hands_back_its_result():
    started, release = threading.Event(), threading.Event()

    def create() -> str:
        started.set()
        release.wait(60)
        return "snapshot-7"

    task = asyncio.create_task(finish_blocking(create))
    await asyncio.to_thread(started.wait, 60)
    task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    release.set()
    assert await task == ("snapshot-7", True)
