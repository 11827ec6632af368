"""Forwarding between layers: one stream entry per record versus batched entries.

Measures, on the same records and the same Redis, the cost of writing N records to a
stream and reading them back through a consumer group (XREADGROUP + decode + XACK),
three ways: one XADD round trip per record, one entry per record pipelined, and one
entry per batch of records (what assay does between layers).

    python -m bench.forwarding [--records 100000] [--batch 500] [--runs 3]

Each run is stored in bench/results/ (``bench.runs``) as part ``forwarding``, and the
README's figures are regenerated from there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

from assay.contracts.messages import Record, RecordBatch
from assay.streams.client import Client, connect
from assay.streams.codec import decode_entry, encode, flatten
from bench import readme
from bench.runs import RESULTS, ROOT, repeat


def records(n: int) -> list[Record]:
    return [Record(division="d", table="t", window="w", row=i,
                   payload={"id": str(i), "name": f"name {i}", "qty": "3", "price": "12.50",
                            "updated": "2024-01-01 00:00:00"}) for i in range(1, n + 1)]


async def write_one_by_one(client: Client, stream: str, recs: list[Record]) -> None:
    for record in recs:
        await client.xadd(stream, encode(record))


async def write_pipelined(client: Client, stream: str, recs: list[Record],
                          batch: int) -> None:
    for start in range(0, len(recs), batch):
        async with client.pipeline(transaction=False) as pipe:
            for record in recs[start:start + batch]:
                pipe.xadd(stream, encode(record))
            await pipe.execute()


async def write_batched(client: Client, stream: str, recs: list[Record],
                        batch: int) -> None:
    for start in range(0, len(recs), batch):
        await client.xadd(stream, encode(RecordBatch(records=recs[start:start + batch])))


async def read_all(client: Client, stream: str, expected: int, count: int) -> None:
    await client.xgroup_create(stream, "g", id="0")
    seen = 0
    while seen < expected:
        reply = await client.xreadgroup("g", "c", {stream: ">"}, count=count)
        entries = reply[0][1]
        for entry_id, fields in entries:
            message = decode_entry(fields).message
            assert message is not None
            seen += len(flatten(stream, entry_id.decode(), message, 1))
        await client.xack(stream, "g", *[i for i, _ in entries])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3, help="runs (the README shows the median)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    repeat("forwarding", lambda: asyncio.run(measure(args)), args.runs, args.results,
           program="python -m bench.forwarding")
    if args.results == RESULTS:
        readme.update(ROOT / "README.md", RESULTS)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One run of the three ways, each on a stream of its own."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = await connect(url)
    recs = records(args.records)
    small = recs[: min(len(recs), 20_000)]
    rows = []
    for name, subset, write, count in (
        ("XADD per record, one round trip each", small,
         lambda s, r: write_one_by_one(client, s, r), args.batch),
        ("XADD per record, pipelined", recs,
         lambda s, r: write_pipelined(client, s, r, args.batch), args.batch),
        (f"one entry per {args.batch} records", recs,
         lambda s, r: write_batched(client, s, r, args.batch), 10),
    ):
        stream = f"bench:{{{uuid.uuid4().hex}}}:fwd"
        started = time.perf_counter()
        await write(stream, subset)
        wrote = time.perf_counter() - started
        started = time.perf_counter()
        await read_all(client, stream, len(subset), count)
        read = time.perf_counter() - started
        await client.delete(stream)
        rows.append((name, len(subset), len(subset) / wrote, len(subset) / read,
                     len(subset) / (wrote + read)))
    await client.aclose()
    load = os.getloadavg()
    print(f"cores: {os.cpu_count()}, load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| method | records | write rec/s | read+decode+ack rec/s | both rec/s |")
    print("|---|---:|---:|---:|---:|")
    for name, n, w, r, b in rows:
        print(f"| {name} | {n:,} | {w:,.0f} | {r:,.0f} | {b:,.0f} |")
    return {"kind": "forwarding", "records": args.records, "batch": args.batch,
            "methods": [{"method": name, "records": n, "write_per_s": round(w),
                         "read_per_s": round(r), "records_per_s": round(b)}
                        for name, n, w, r, b in rows]}


if __name__ == "__main__":
    main()
