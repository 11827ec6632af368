"""The window barrier: a window completes when every row of every expected table is accounted.

Reads what Silver and Bronze accounted for (applied or quarantined) and the dead
letters of the division, and the producers' table-ends. State and the resulting
window events live in Redis (``streams.windows``), updated atomically, so each
window emits exactly one completion. ``tick`` re-checks windows past their timeout
with the injected clock: retries, then ``timed_out`` with the missing tables named,
then the division's action (``hold`` or ``complete_partial``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from assay.contracts.config import Config
from assay.contracts.messages import Accounted, DeadLetter, TableEnd
from assay.streams.codec import Item
from assay.streams.consumer import Output
from assay.streams.windows import Transition, WindowPolicy, WindowStore

log = structlog.get_logger("assay.barrier")

Clock = Callable[[], float]


def policies(config: Config) -> dict[str, WindowPolicy]:
    return {
        name: WindowPolicy(tuple(d.tables), d.window_timeout_s, d.retries, d.retry_interval_s,
                           d.on_timeout)
        for name, d in config.divisions.items()
    }


class BarrierProcessor:
    """Feeds accounted rows, dead letters and table-ends into the window state."""

    layer = "barrier"

    def __init__(self, store: WindowStore, config: Config, clock: Clock) -> None:
        self.store = store
        self.policies = policies(config)
        self.clock = clock
        self.unattributed = 0

    async def process(self, items: Sequence[Item]) -> Output:
        now = self.clock()
        groups: dict[tuple[str, str, str, str], list[int]] = {}
        ends: list[TableEnd] = []
        out = Output()
        for item in items:
            message = item.message
            if isinstance(message, Accounted):
                key = (message.division, message.window, message.table)
                applied, failed = (("reapplied", "refailed") if message.replay
                                   else ("applied", "failed"))
                groups.setdefault((*key, applied), []).extend(message.applied)
                groups.setdefault((*key, failed), []).extend(message.quarantined)
            elif isinstance(message, TableEnd):
                ends.append(message)
            elif isinstance(message, DeadLetter):
                if (message.row is None or message.window is None or message.table is None
                        or f"{{{message.division}}}" not in item.stream):
                    self.unattributed += 1
                    log.warning("dead_letter_without_row", stream=message.stream,
                                entry_id=message.entry_id, error=message.error)
                    continue
                key = (message.division or "", message.window, message.table)
                groups.setdefault((*key, "failed"), []).append(message.row)
            else:
                out.rejected.append((item, f"unexpected {type(message).__name__} for barrier"))
        out.processed = sum(len(rows) for rows in groups.values()) + len(ends)
        for (division, window, table, kind), rows in groups.items():
            if rows and division in self.policies:
                self._log(division, await self.store.account(
                    division, window, table, kind, rows, now, self.policies[division]))
        for end in ends:
            if end.division in self.policies:
                self._log(end.division, await self.store.account(
                    end.division, end.window, end.table, "end", (), now,
                    self.policies[end.division], expected_rows=end.rows))
        return out

    async def tick(self) -> list[Transition]:
        """Re-check windows past their timeout (call periodically; tests advance the clock)."""
        now = self.clock()
        done: list[Transition] = []
        for division, policy in self.policies.items():
            for transition in await self.store.tick(division, now, policy):
                self._log(division, transition)
                done.append(transition)
        return done

    @staticmethod
    def _log(division: str, transition: Transition) -> None:
        if transition.event == "retry":
            log.info("window_retry", division=division, window=transition.window)
        elif transition.event == "timed_out":
            log.error("window_timed_out", division=division, window=transition.window,
                      status=transition.status)
        elif transition.event:
            log.info("window_event", division=division, window=transition.window,
                     outcome=transition.event, status=transition.status)
