"""What the accounting ledger ``_rows`` costs per record, and what writing it as ranges would.

Silver writes one ledger row per record it commits (``db.accounting.record``). This measures,
on a sandbox schema of the real ``_rows`` shape, the CPU a batch of consecutive row numbers
costs per record — in this process (encoding) and in its PostgreSQL backend (insert, index,
WAL, commit), from /proc, so the figure hardly depends on the machine's load — three ways:

* ``rows, strings per record``: one ledger row per record with division, window and table
  sent as three strings per record (``accounting.record`` before it grouped them);
* ``rows``: ``accounting.record`` as Silver calls it (the strings once per batch);
* ``ranges``: one row per run of consecutive row numbers in a table keyed like ``_rows``
  plus a ``last_row`` (what a range ledger would write; readers not included).

Each write is its own transaction that also holds nothing else, so the figures are the
ledger's share of a Silver batch, not a Silver batch.

    python -m bench.ledger [--records 200000] [--batch 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
    await accounting.record(conn, schema, "silver", accounting.APPLIED, batch)


async def strings(conn: asyncpg.Connection, schema: str, batch: Batch) -> None:
    divisions, windows, tables, numbers = (list(x) for x in zip(*batch, strict=True))
    await conn.execute(
        f"INSERT INTO {qualified(schema, '_rows')} AS r (division, \"window\", table_name,"
        ' "row", outcome, layer) SELECT d, w, t, n, $5, $6 FROM unnest($1::text[],'
        " $2::text[], $3::text[], $4::bigint[]) AS u(d, w, t, n) ORDER BY d, w, t, n"
        " ON CONFLICT (division, \"window\", table_name, \"row\") DO UPDATE"
        " SET outcome = EXCLUDED.outcome, layer = EXCLUDED.layer"
        " WHERE r.outcome = $7 AND EXCLUDED.outcome <> $7",
        divisions, windows, tables, numbers, accounting.APPLIED, "silver",
        accounting.QUARANTINED)


async def ranges(conn: asyncpg.Connection, schema: str, batch: Batch) -> None:
    division, window, table, _ = batch[0]
    numbers = [n for *_, n in batch]
    firsts, lasts = [numbers[0]], []
    for before, n in itertools.pairwise(numbers):
        if n != before + 1:
            lasts.append(before)
            firsts.append(n)
    lasts.append(numbers[-1])
    await conn.execute(
        f"INSERT INTO {qualified(schema, '_row_ranges')} (division, \"window\", table_name,"
        ' first_row, last_row, outcome, layer) SELECT $1, $2, $3, f, l, $6, $7'
        " FROM unnest($4::bigint[], $5::bigint[]) AS u(f, l)"
        " ON CONFLICT (division, \"window\", table_name, first_row) DO NOTHING",
        division, window, table, firsts, lasts, accounting.APPLIED, "silver")


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
                f"CREATE TABLE {qualified(schema, '_row_ranges')} (division text NOT NULL,"
                ' "window" text NOT NULL, table_name text NOT NULL, first_row bigint NOT NULL,'
                " last_row bigint NOT NULL, outcome text NOT NULL, layer text,"
                ' PRIMARY KEY (division, "window", table_name, first_row))')
        found = []
        for i, (name, write) in enumerate((("rows, strings per record", strings),
                                           ("rows", rows), ("ranges", ranges))):
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
