"""Ending background tasks for sure.

Python 3.11's ``asyncio.wait_for``, which redis-py awaits for every command under a socket
timeout, returns the result when the result and a cancel arrive together, and the cancel
is gone: the task runs on. A loop that relies on one ``cancel()`` then never ends, and
whoever awaits it hangs (seen: a web server's stop waiting for its lag sampler). So a
task is cancelled again until it has ended, and loops look at ``cancel_requested()``.
"""

from __future__ import annotations

import asyncio
from typing import Any

RECANCEL_S = 0.05


def cancel_requested() -> bool:
    """Whether the running task was asked to stop (a cancel not taken back)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def cancel_until_done(task: asyncio.Future[Any], every_s: float = RECANCEL_S) -> None:
    """Cancel ``task`` now and again every ``every_s`` until it has ended."""
    if task.done():
        return
    task.cancel()
    asyncio.get_running_loop().call_later(every_s, cancel_until_done, task, every_s)


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` until it ends and wait for that; an error it ended with is raised.

    A cancel of the caller goes through (``asyncio.wait`` never swallows it)."""
    cancel_until_done(task)
    await asyncio.wait([task])
    if not task.cancelled():
        task.result()
