"""What the window barrier costs per row: in its process and in Redis.

Feeds ``BarrierProcessor.process`` batches of five accounted entries of 2,000 rows each
(every 97th row quarantined, as scattered failures break runs) on a sandbox key prefix, and
reads the CPU of this process and of the Redis server (``INFO cpu``) around the run, so
the figure hardly depends on the machine's load. Rows travel to the window script as runs
of consecutive numbers; until 2026-12-06 they went one argument per row, set bit by bit.
Median (min–max), µs per row, on one 2-core machine on 2026-12-06: one argument per row
(0bde472, 3 runs) 1.14 (1.06–1.80) in the process + 1.49 (1.26–1.51) in Redis, together
2.65 (2.33–3.29); as runs (11 runs through the day) 0.18 (0.15–0.27) + 0.17 (0.12–0.21),
together 0.36 (0.28–0.48).

    python -m bench.barrier [--rows 400000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import redis.asyncio as aioredis

from assay.contracts.config import load_config
from assay.contracts.messages import Accounted
from assay.processors.barrier import BarrierProcessor
from assay.streams import keys as channels
from assay.streams.codec import Item
from assay.streams.keys import Keys
from assay.streams.windows import WindowStore
from bench.e2e import redis_cpu_seconds
from bench.runs import ROOT

ENTRY, PER_BATCH = 2_000, 5


def batches(rows: int, stream: str, division: str, table: str) -> list[list[Item]]:
    out, first = [], 1
    for b in range(rows // (ENTRY * PER_BATCH)):
        items = []
        for k in range(PER_BATCH):
            numbers = range(first, first + ENTRY)
            first += ENTRY
            message = Accounted(division=division, table=table, window=f"w{b % 7}",
                                layer="silver", applied=[n for n in numbers if n % 97 != 1],
                                quarantined=[n for n in numbers if n % 97 == 1])
            items.append(Item(stream, f"{b}-{k}", 0, message, 1, 100))
        out.append(items)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=400_000)
    args = parser.parse_args()
    config = load_config(ROOT / "config")
    client = aioredis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    keys = Keys(prefix=f"bench-barrier-{uuid.uuid4().hex[:8]}")
    division = next(iter(config.divisions))
    table = config.divisions[division].tables[0]
    barrier = BarrierProcessor(WindowStore(client, keys), config, time.time)
    work = batches(args.rows, keys.stream(division, channels.ACCOUNTED), division, table)
    load = os.getloadavg()
    try:
        await barrier.process(work[0])  # scripts loaded, connection open
        theirs, ours = await redis_cpu_seconds(client), time.process_time()
        for items in work[1:]:
            out = await barrier.process(items)
            assert not out.rejected, out.rejected[:1]
        ours = time.process_time() - ours
        theirs = await redis_cpu_seconds(client) - theirs
    finally:
        async for key in client.scan_iter(match=f"{keys.prefix}:*", count=1000):
            await client.delete(key)
        await client.aclose()
    rows = (len(work) - 1) * PER_BATCH * ENTRY
    print(f"{rows:,} rows in entries of {ENTRY:,}, load {load[0]:.2f} → "
          f"{os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    print("| barrier | process µs/row | Redis µs/row | together |")
    print("|---|---:|---:|---:|")
    print(f"| runs | {ours / rows * 1e6:.2f} | {theirs / rows * 1e6:.2f} | "
          f"{(ours + theirs) / rows * 1e6:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
