"""The ledger `_rows`: one row per (division, window, table, row), written in batches that mix
divisions, windows and tables; a quarantined row may become applied, never the reverse."""

from __future__ import annotations

import asyncpg

from assay.db import accounting
from assay.db.schema import migrate


async def ledger(pool: asyncpg.Pool, schema: str) -> dict[tuple[str, str, str, int], str]:
    rows = await pool.fetch(f'SELECT division, "window", table_name, "row", outcome'
                            f' FROM "{schema}"."_rows"')
    return {(r["division"], r["window"], r["table_name"], r["row"]): r["outcome"]
            for r in rows}


async def test_a_mixed_batch_lands_each_row_under_its_own_division_window_and_table(
        pool: asyncpg.Pool, schema: str) -> None:
    async with pool.acquire() as conn:
        await migrate(conn, schema, [accounting.SHAPE])
        batch = [(division, window, table, n)
                 for n in range(1, 6) for division in ("east", "west")
                 for window in ("w2", "w1") for table in ("item", "order")]
        async with conn.transaction():
            await accounting.record(conn, schema, "silver", accounting.APPLIED, batch)
            await accounting.record(conn, schema, "silver", accounting.APPLIED, batch[:7])

    assert await ledger(pool, schema) == dict.fromkeys(batch, accounting.APPLIED)


async def test_quarantined_rows_may_become_applied_and_applied_ones_stay(
        pool: asyncpg.Pool, schema: str) -> None:
    quarantined = [("east", "w1", "item", 1), ("west", "w1", "item", 2)]
    applied = [("east", "w1", "item", 3)]
    async with pool.acquire() as conn:
        await migrate(conn, schema, [accounting.SHAPE])
        await accounting.record(conn, schema, "silver", accounting.QUARANTINED, quarantined)
        await accounting.record(conn, schema, "silver", accounting.APPLIED, applied)
        await accounting.record(conn, schema, "silver", accounting.APPLIED, quarantined[:1])
        await accounting.record(conn, schema, "silver", accounting.QUARANTINED, applied)

    assert await ledger(pool, schema) == {
        quarantined[0]: accounting.APPLIED, quarantined[1]: accounting.QUARANTINED,
        applied[0]: accounting.APPLIED}
