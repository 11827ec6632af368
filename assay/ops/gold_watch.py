"""Windows the barrier completed that Gold has not applied: the ``window_not_applied`` rule.

The barrier's window state in Redis says which windows completed and when; Gold notes
each window it applies in ``gold_windows`` in the transaction that applied it. A window
in the first and not in the second is one Gold has not applied yet: late, or lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from assay.db.gold import applied_among
from assay.streams.windows import WindowStore

DUE = {"completed", "partial"}
"""Barrier states of a window Gold applies (an amendment leaves one of them too)."""


@dataclass(frozen=True)
class Unapplied:
    division: str
    window: str
    completed_at: float


class GoldWatch:
    """Compares the barrier's completed windows with Gold's record of applied ones."""

    def __init__(self, store: WindowStore, pool: asyncpg.Pool, schema: str,
                 divisions: Sequence[str]) -> None:
        self.store = store
        self.pool = pool
        self.schema = schema
        self.divisions = list(divisions)

    async def unapplied(self, now: float, lookback_s: float) -> list[Unapplied]:
        """Windows opened within ``lookback_s`` that completed and Gold has not applied."""
        due = [Unapplied(division, w["window"], float(w["completed_at"]))
               for division in self.divisions
               for w in await self.store.windows(division, since=now - lookback_s)
               if w.get("status") in DUE and w.get("completed_at")]
        applied = await applied_among(self.pool, self.schema,
                                      [(u.division, u.window) for u in due])
        return [u for u in due if (u.division, u.window) not in applied]
