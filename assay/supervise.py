"""Supervision: processes started in named slots, a dead one restarted in its slot.

The process that starts a child supervises it (the demo its layers, ``assay services``
its servers), never the child itself; honcho's process manager is the model. A slot
whose process exits while the supervisor is not stopping is restarted after a backoff
that doubles up to ``backoff_max_s`` and starts over once a process has stayed up for
``stable_after_s``. Each restart is one log line (``process_restarted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from assay.streams.tasks import cancel_until_done

log = structlog.get_logger("assay.supervise")

Start = Callable[[], Awaitable[asyncio.subprocess.Process]]


@dataclass
class Slot:
    """One supervised process: its name and how to start it (again)."""

    name: str
    start: Start
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    exits: list[int] = field(default_factory=list)
    """Exit codes of the processes of this slot that ended while it was supervised."""


class Supervisor:
    """Starts every slot, restarts a slot's process when it dies, stops them all."""

    def __init__(self, slots: Sequence[Slot], *, backoff_start_s: float = 0.5,
                 backoff_max_s: float = 10.0, stable_after_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = list(slots)
        self.backoff_start_s = backoff_start_s
        self.backoff_max_s = backoff_max_s
        self.stable_after_s = stable_after_s
        self.clock = clock
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start every slot's process, then keep each one running."""
        for slot in self.slots:
            slot.process = await slot.start()
            log.info("process_started", slot=slot.name, pid=slot.process.pid)
        self._tasks = [asyncio.create_task(self._keep(slot)) for slot in self.slots]

    @property
    def restarts(self) -> int:
        return sum(slot.restarts for slot in self.slots)

    def pids(self) -> dict[str, int]:
        """The live process of each slot (for a chaos killer, ``assay ps``-like views)."""
        return {s.name: s.process.pid for s in self.slots
                if s.process is not None and s.process.returncode is None}

    async def _keep(self, slot: Slot) -> None:
        delay = self.backoff_start_s
        while slot.process is not None:
            started = self.clock()
            code = await slot.process.wait()
            if self.stopping.is_set():
                return
            slot.exits.append(code)
            if self.clock() - started >= self.stable_after_s:
                delay = self.backoff_start_s
            log.warning("process_exited", slot=slot.name, pid=slot.process.pid, code=code,
                        restart_in_s=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if self.stopping.is_set():
                return
            delay = min(delay * 2, self.backoff_max_s)
            slot.process = await slot.start()
            slot.restarts += 1
            log.warning("process_restarted", slot=slot.name, pid=slot.process.pid,
                        restarts=slot.restarts)

    async def stop(self, grace_s: float = 30.0) -> list[int]:
        """SIGTERM every live process; SIGKILL what is still alive after ``grace_s``.

        Returns the exit code of each process the stop ended. A process that died of
        something else than the stop (dead already when it began: too late to restart it;
        or SIGKILLed by someone else during the grace period, which the stop never sends
        before the grace is over) is logged and kept in its slot's ``exits``, as a death
        during the run is, not counted as a failed stop. A process that outlived the grace
        is killed and its code returned: a failed stop.
        """
        self.stopping.set()
        for task in self._tasks:
            cancel_until_done(task)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        live = []
        for slot in self.slots:
            process = slot.process
            if process is None:
                continue
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                live.append((slot, process))
            else:
                slot.exits.append(process.returncode)
                log.warning("process_exited", slot=slot.name, pid=process.pid,
                            code=process.returncode, restart_in_s=None)
        codes = []
        for slot, process in live:
            try:
                code = await asyncio.wait_for(process.wait(), grace_s)
            except TimeoutError:
                process.kill()  # it outlived its grace: a failed stop, whatever the code
                log.warning("process_killed_after_grace", slot=slot.name, pid=process.pid,
                            grace_s=grace_s)
                codes.append(await process.wait())
                continue
            if code == -signal.SIGKILL:  # not ours: killed from outside while stopping
                slot.exits.append(code)
                log.warning("process_exited", slot=slot.name, pid=process.pid, code=code,
                            restart_in_s=None)
                continue
            codes.append(code)
        return codes
