"""The event loop of every assay process: uvloop's where it is installed, else asyncio's.

uvloop (the MagicStack project beside asyncpg) runs the loop, its sockets and its timers in
C on libuv. A layer process spends a tenth of its CPU in the loop's own Python (selecting,
writing to sockets, running callbacks); with uvloop that part shrinks, and nothing else
changes. ``ASSAY_EVENT_LOOP=asyncio`` runs on asyncio's own loop instead (uvloop has no
Windows build, where asyncio's is used anyway).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from assay.contracts.config import ConfigError

T = TypeVar("T")

ENV = "ASSAY_EVENT_LOOP"
CHOICES = ("uvloop", "asyncio")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes the loop: uvloop's unless ``ASSAY_EVENT_LOOP=asyncio`` or not installed."""
    choice = os.environ.get(ENV, "uvloop").strip().lower() or "uvloop"
    if choice not in CHOICES:
        raise ConfigError([f"{ENV} is {choice!r}; expected one of {', '.join(CHOICES)}"])
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen loop."""
    try:
        factory = loop_factory()
    except ConfigError:
        coro.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
