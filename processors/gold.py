"""Gold: on each completed or amended window, sync tables, link accounts, recompute KPIs.

Everything for one window happens in one transaction, one window at a time: Silver rows
the window changed are upserted (or deleted) under their Gold names, ERP rows get their
CRM account id by normalised account number as they are written; older rows take the
accounts the window brought, and rows of accounts it deleted or renumbered look theirs
up again; the KPI groups whose facts or goals the window changed are brought up to date
from maintained sums (``db/kpi.py``). Running a window again changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import asyncpg
import structlog

from assay.contracts.messages import WindowEvent
from assay.db import silver
from assay.db.gold import record_applied, serialise, use_work_mem
from assay.db.pool import transaction
from assay.processors.plan import Plan
from assay.streams.codec import Item
from assay.streams.consumer import Output

log = structlog.get_logger("assay.gold")

Clock = Callable[[], float]
APPLY = {"completed", "partial", "amended"}


class GoldProcessor:
    """Applies window events of one division to the Gold tables."""

    layer = "gold"

    def __init__(self, pool: asyncpg.Pool, plan: Plan, clock: Clock) -> None:
        self.pool = pool
        self.plan = plan
        self.clock = clock
        self.divisions = {d: c.name for d, c in plan.config.divisions.items()}

    async def process(self, items: Sequence[Item]) -> Output:
        out = Output()
        for item in items:
            event = item.message
            if not isinstance(event, WindowEvent):
                out.rejected.append((item, f"unexpected {type(event).__name__} for Gold"))
                continue
            if (event.division not in self.plan.config.divisions
                    or f"{{{event.division}}}" not in item.stream):
                out.rejected.append((item, f"window event of division {event.division!r} on "
                                           "another division's stream"))
                continue
            if event.status not in APPLY:
                log.info("gold_window_skipped", division=event.division, window=event.window,
                         status=event.status)
                continue
            await self.apply(event.division, event.window, event.status)
            out.processed += 1
        return out

    async def apply(self, division: str, window: str, status: str = "completed"
                    ) -> dict[str, int]:
        """Bring Gold up to date with one window of one division; returns unmatched counts.
        The window is noted in ``gold_windows`` in the same transaction."""
        gold = self.plan.gold
        started = self.clock()
        async with transaction(self.pool) as conn:
            await serialise(conn, self.plan.schema)
            await use_work_mem(conn, gold.work_mem)
            for table in self.plan.snapshot_tables:
                await silver.snapshot_deletes(conn, self.plan.schema, table, division, window)
            moved = await gold.moves.moved(conn, division, window) if gold.moves else []
            for kpi in gold.kpis:
                await kpi.before(conn, division, window, self.divisions)
            for sync in gold.syncs:
                await sync.run(conn, division, window)
            if gold.moves and moved:
                await gold.moves.relink(conn, moved)
            if gold.keys:
                await gold.keys.run(conn, division, window)
            unmatched = {t.table: await t.run(conn, division, window)
                         for t in gold.links}
            for kpi in gold.kpis:
                await kpi.after(conn, division, window, self.divisions)
            await record_applied(conn, self.plan.schema, division, window, status, self.clock(),
                                 self.clock() - started, sum(unmatched.values()))
        log.info("gold_window_applied", division=division, window=window, status=status,
                 unmatched=sum(unmatched.values()), seconds=round(self.clock() - started, 3))
        return unmatched

    async def rebuild(self) -> None:
        """Recompute every KPI from all facts (``assay gold rebuild``): after a change to
        a KPI's config, or to check the incremental result."""
        started = self.clock()
        async with transaction(self.pool) as conn:
            await serialise(conn, self.plan.schema)
            await use_work_mem(conn, self.plan.gold.work_mem)
            for kpi in self.plan.gold.kpis:
                await kpi.rebuild(conn, self.divisions)
        log.info("gold_kpis_rebuilt", kpis=len(self.plan.gold.kpis),
                 seconds=round(self.clock() - started, 3))
