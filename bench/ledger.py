"""What the accounting ledger costs per record: as runs of row numbers, and as it was.

Silver records the outcome of every record it commits (``db.accounting.record``). The
ledger is stored as runs of consecutive row numbers (``_row_ranges``); until 2026-12-05 it
was one row per record in a table ``_rows``. This measures, on a sandbox schema, the CPU a
batch of consecutive row numbers costs per record — in this process (encoding) and in its
PostgreSQL backend (lock, insert, index, WAL, commit), from /proc, so the figure hardly
depends on the machine's load — two ways:

* ``rows``: the old ledger, one row per record (the strings once per batch, plain insert
  and the upsert behind it as the old ``accounting.record`` wrote it);
* ``ranges``: ``accounting.record`` as Silver calls it.

Each write is its own transaction that also holds nothing else, so the figures are the
ledger's share of a Silver batch, not a Silver batch.

    python -m bench.ledger [--records 200000] [--batch 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from assay.db import accounting
from assay.db.ident import qualified, quote
from assay.db.schema import migrate
from bench.e2e import cpu_seconds

Batch = list[tuple[str, str, str, int]]
Write = Callable[[asyncpg.Connection, str, Batch], Awaitable[None]]


async def rows(conn: asyncpg.Connection, schema: str, batch: Batch) -> None:
    """The old ledger's write: one row per record, each group's strings sent once."""
    groups: dict[tuple[str, str, str], int] = {}
    indexes = [groups.setdefault(row[:3], len(groups) + 1) for row in batch]
    divisions, windows, tables = (list(x) for x in zip(*groups, strict=True))
    await conn.execute(
        f"INSERT INTO {qualified(schema, 'old_rows')} AS r (division, \"window\", table_name,"
        ' "row", outcome, layer) SELECT g.d, g.w, g.t, u.n, $6, $7'
        " FROM unnest($1::int[], $2::bigint[]) AS u(i, n)"
        " JOIN unnest($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS g(d, w, t, i)"
        " ON g.i = u.i ORDER BY g.d, g.w, g.t, u.n",
        indexes, [row[3] for row in batch], divisions, windows, tables, accounting.APPLIED,
        "silver")


async def ranges(conn: asyncpg.Connection, schema: str, batch: Batch) -> None:
    await accounting.record(conn, schema, "silver", {accounting.APPLIED: batch})


async def measure(pool: asyncpg.Pool, schema: str, write: Write, records: int, batch: int,
                  division: str) -> tuple[float, float]:
    """CPU µs per record in this process and in the backend, writing every batch."""
    async with pool.acquire() as conn:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        ours, theirs = time.process_time(), cpu_seconds(backend) or 0.0
        for first in range(1, records + 1, batch):
            numbers = range(first, min(first + batch, records + 1))
            async with conn.transaction():
                await write(conn, schema, [(division, "w1", "erp_order_line", n)
                                           for n in numbers])
        ours, theirs = time.process_time() - ours, (cpu_seconds(backend) or 0.0) - theirs
    return ours / records * 1e6, theirs / records * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2_000)
    args = parser.parse_args()
    schema = f"bench_ledger_{uuid.uuid4().hex[:8]}"
    pool = await asyncpg.create_pool(
        os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        min_size=1, max_size=1)
    load = os.getloadavg()
    try:
        async with pool.acquire() as conn:
            await migrate(conn, schema, [accounting.SHAPE])
            await conn.execute(
                f"CREATE TABLE {qualified(schema, 'old_rows')} (division text NOT NULL,"
                ' "window" text NOT NULL, table_name text NOT NULL, "row" bigint NOT NULL,'
                " outcome text NOT NULL, layer text,"
                ' PRIMARY KEY (division, "window", table_name, "row"))')
        found = []
        for i, (name, write) in enumerate((("rows (until 2026-12-05)", rows),
                                           ("ranges", ranges))):
            found.append((name, *await measure(pool, schema, write, args.records, args.batch,
                                               f"d{i}")))
    finally:
        async with pool.acquire() as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")
        await pool.close()
    end = os.getloadavg()
    print(f"{args.records:,} records in batches of {args.batch:,}, load {load[0]:.2f} → "
          f"{end[0]:.2f}, {os.cpu_count()} cores")
    print("| ledger write | process µs/record | PostgreSQL µs/record | together |")
    print("|---|---:|---:|---:|")
    for name, ours, theirs in found:
        print(f"| {name} | {ours:.2f} | {theirs:.2f} | {ours + theirs:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
