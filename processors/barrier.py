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
from itertools import chain

import structlog

from assay.contracts.config import Config
from assay.contracts.errors import RecordError
from assay.contracts.messages import Accounted, DeadLetter, TableEnd
from assay.streams.codec import Item
from assay.streams.consumer import Output
from assay.streams.windows import Transition, WindowPolicy, WindowStore

log = structlog.get_logger("assay.barrier")

Clock = Callable[[], float]
Chunk = tuple[Sequence[int], Item]
"""Row numbers of one entry (in its order) and the entry."""


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
        self.max_row = config.pipeline.max_row
        self.clock = clock
        self.unattributed = 0

    async def process(self, items: Sequence[Item]) -> Output:
        now = self.clock()
        groups: dict[tuple[str, str, str, str], list[Chunk]] = {}
        ends: list[tuple[TableEnd, Item]] = []
        out = Output()
        for item in items:
            message = item.message
            if isinstance(message, Accounted | TableEnd):
                problem = self._foreign(item, message.division)
                if problem:
                    out.rejected.append((item, problem))
                    continue
            if isinstance(message, Accounted):
                key = (message.division, message.window, message.table)
                applied, failed = (("reapplied", "refailed") if message.replay
                                   else ("applied", "failed"))
                for kind, numbers in ((applied, message.applied),
                                      (failed, message.quarantined)):
                    self._group(groups, (*key, kind), numbers, item, out)
            elif isinstance(message, TableEnd):
                ends.append((message, item))
            elif isinstance(message, DeadLetter):
                if (message.row is None or message.window is None or message.table is None
                        or self._foreign(item, message.division or "")
                        or not 1 <= message.row <= self.max_row):
                    self.unattributed += 1
                    log.warning("dead_letter_without_row", stream=message.stream,
                                entry_id=message.entry_id, error=message.error)
                    continue
                key = (message.division or "", message.window, message.table)
                groups.setdefault((*key, "failed"), []).append(([message.row], item))
            else:
                out.rejected.append((item, f"unexpected {type(message).__name__} for barrier"))
        for (division, window, table, kind), chunks in groups.items():
            await self._account(division, window, table, kind, chunks, now, out)
        for end, item in ends:
            if end.rows > self.max_row:
                out.rejected.append((item, f"rows {end.rows} above max_row={self.max_row}"))
                continue
            try:
                self._log(end.division, await self.store.account(
                    end.division, end.window, end.table, "end", (), now,
                    self.policies[end.division], expected_rows=end.rows))
            except RecordError as exc:
                out.rejected.append((item, str(exc)))
                continue
            out.processed += 1
        return out

    def _foreign(self, item: Item, division: str) -> str | None:
        """Why a message cannot count for the division of the stream it came on, if so."""
        if f"{{{division}}}" not in item.stream:
            return f"message of division {division!r} on another division's stream"
        if division not in self.policies:
            return f"unknown division {division!r}"
        return None

    def _group(self, groups: dict[tuple[str, str, str, str], list[Chunk]],
               key: tuple[str, str, str, str], rows: Sequence[int], item: Item,
               out: Output) -> None:
        """Rows of an accounted entry to account; a row number outside 1…``max_row`` goes
        alone to the dead letters."""
        if not rows:
            return
        if min(rows) >= 1 and max(rows) <= self.max_row:
            groups.setdefault(key, []).append((rows, item))
            return
        inside = []
        for row in rows:
            if 1 <= row <= self.max_row:
                inside.append(row)
            else:
                out.rejected.append((_alone(item, row),
                                     f"row number {row} outside 1…{self.max_row}"))
        if inside:
            groups.setdefault(key, []).append((inside, item))

    async def _account(self, division: str, window: str, table: str, kind: str,
                       chunks: list[Chunk], now: float, out: Output) -> None:
        """Account the rows of entries in one update; when the update fails, split until the
        failing row is alone (as the consumer loop splits batches) and dead-letter just that
        row."""
        rows = list(chain.from_iterable(n for n, _ in chunks)) if len(chunks) > 1 else (
            chunks[0][0])
        try:
            transition = await self.store.account(division, window, table, kind, rows, now,
                                                  self.policies[division])
        except RecordError as exc:
            if len(rows) > 1:
                log.warning("accounting_failed_splitting", division=division, window=window,
                            table=table, rows=len(rows), error=str(exc))
                if len(chunks) == 1:  # one entry's rows: split them one by one
                    chunks = [([row], chunks[0][1]) for row in rows]
                mid = len(chunks) // 2
                await self._account(division, window, table, kind, chunks[:mid], now, out)
                await self._account(division, window, table, kind, chunks[mid:], now, out)
                return
            (row,), item = chunks[0][0], chunks[0][1]
            if isinstance(item.message, DeadLetter):  # in its one place already: say so only
                self.unattributed += 1
                log.error("dead_letter_not_accounted", stream=item.stream,
                          entry_id=item.entry_id, row=row, error=str(exc))
            else:
                out.rejected.append((_alone(item, row), str(exc)))
            return
        out.processed += len(rows)
        self._log(division, transition)

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


def _alone(item: Item, row: int) -> Item:
    """The part of an item that is one row: an accounted entry narrowed to that row (its
    dead letter then names the row); a dead letter is one row already."""
    message = item.message
    if not isinstance(message, Accounted):
        return item
    applied = row in message.applied
    narrowed = Accounted(division=message.division, table=message.table,
                         window=message.window, layer=message.layer,
                         applied=[row] if applied else [], quarantined=[] if applied else [row])
    return Item(item.stream, item.entry_id, item.index, narrowed, item.deliveries,
                item.entry_size)
