"""Background tasks end when cancelled, even when a cancel is dropped on the way."""

from __future__ import annotations

import asyncio
import sys

import pytest

from assay.streams.tasks import cancel_and_wait, cancel_requested


async def _looping(waiting: list[asyncio.Future[None]], rounds: list[int]) -> None:
    """A loop like the lag sampler's: each round awaits a command under ``wait_for``."""
    while True:
        future = asyncio.get_running_loop().create_future()
        waiting.append(future)
        await asyncio.wait_for(future, 10)
        rounds.append(1)


async def _cancelled_as_the_answer_arrives(task: asyncio.Task[None],
                                           waiting: list[asyncio.Future[None]]) -> None:
    while not waiting:
        await asyncio.sleep(0)
    waiting[-1].set_result(None)  # the command's answer and the cancel, in one step
    task.cancel()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12's wait_for keeps the cancel")
async def test_one_cancel_can_be_dropped_by_wait_for() -> None:
    """The fault itself, on Python 3.11: the task runs on after its cancel."""
    waiting: list[asyncio.Future[None]] = []
    rounds: list[int] = []
    task = asyncio.ensure_future(_looping(waiting, rounds))
    await _cancelled_as_the_answer_arrives(task, waiting)
    while len(waiting) < 2:
        await asyncio.sleep(0)
    assert not task.done() and rounds == [1]
    task.cancel()
    await asyncio.wait([task])


async def test_cancel_and_wait_ends_a_task_whose_cancel_was_dropped() -> None:
    waiting: list[asyncio.Future[None]] = []
    task = asyncio.ensure_future(_looping(waiting, []))
    await _cancelled_as_the_answer_arrives(task, waiting)
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert task.cancelled()


async def test_cancel_and_wait_raises_what_the_task_ended_with() -> None:
    async def failing() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise ValueError("while stopping")

    task = asyncio.ensure_future(failing())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="while stopping"):
        await cancel_and_wait(task)


async def test_cancel_requested_sees_a_cancel_that_was_swallowed() -> None:
    seen: list[bool] = []

    async def swallowing() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append(cancel_requested())

    task = asyncio.ensure_future(swallowing())
    await asyncio.sleep(0)
    assert not seen
    task.cancel()
    await task
    assert seen == [True]
