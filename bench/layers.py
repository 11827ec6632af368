"""Records/s through Bronze and through Silver separately, one consumer each.

The ingest stream is pre-filled with N order lines (the demo's erp_order_line table, with
its Cerberus rules compiled, or with ``--cerberus`` validated by Cerberus itself), then
a Bronze consumer drains it in burst mode and is timed; then a Silver consumer drains
what Bronze forwarded. This isolates each layer's cost; the end-to-end figure, with
every layer in its own process and the producer running concurrently, is ``bench.e2e``.

    python -m bench.layers [--records 100000] [--cerberus] [--profile silver] [--runs 3]

Besides records/s, each stage reports CPU µs per record twice: this process's (the layer's
own Python: decode, processing, encoding), and that of the PostgreSQL backends serving it
(found by application name in ``pg_stat_activity``, read from ``/proc/<pid>/stat`` as
``bench.e2e`` does; the server must run on this machine).

Each run is stored in bench/results/ (``bench.runs``) as part ``layers`` (``layers-cerberus``
with ``--cerberus``), and the README's figures are regenerated from there.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from assay.runner import Context, make_consumer, open_context
from assay.streams import heap
from assay.streams.producer import Producer, TableTarget
from bench import readme
from bench.e2e import cpu_seconds
from bench.runs import RESULTS, ROOT, repeat


def order_lines(n: int) -> list[dict[str, Any]]:
    return [{"SalesOrderID": str(43659 + i // 4), "SalesOrderDetailID": str(i + 1),
             "OrderQty": str(1 + i % 7), "ProductID": str(700 + i % 300),
             "UnitPrice": "2024.99", "LineTotal": f"{2024.99 * (1 + i % 7):.2f}",
             "ModifiedDate": "2011-05-31 05:00:00", "CustomerAccount": f"AW{i % 20000:08d}"}
            for i in range(n)]


def config_copy(schema: str, cerberus: bool) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="assay-bench-"))
    for file in (ROOT / "config").glob("*.json"):
        data = json.loads(file.read_text())
        if "pipeline" in data:
            data["pipeline"]["db_schema"] = schema
            data["pipeline"]["validation"] = "cerberus" if cerberus else "compiled"
        (folder / file.name).write_text(json.dumps(data))
    return folder


async def backends(ctx: Context) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend of this context's pool, by pid."""
    found = await ctx.pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1", ctx.application_name)
    return {r["pid"]: used for r in found if (used := cpu_seconds(r["pid"])) is not None}


def backend_cpu(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the backends used between two readings (one opened between: all of it)."""
    return sum(used - before.get(pid, 0.0) for pid, used in after.items())


async def timed(ctx: Context, layer: str, profile: bool) -> tuple[float, float, float]:
    """Wall seconds, this process's CPU seconds (the layer's Python) and its PostgreSQL
    backends' CPU seconds."""
    consumer = make_consumer(layer, ctx)
    profiler = cProfile.Profile() if profile else None
    served = await backends(ctx)
    started, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    await consumer.run(burst=True)
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    wall, used = time.perf_counter() - started, time.process_time() - cpu
    return wall, used, backend_cpu(served, await backends(ctx))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--cerberus", action="store_true",
                        help="Validate with Cerberus itself instead of the compiled checks.")
    parser.add_argument("--profile", choices=["bronze", "silver"], default=None)
    parser.add_argument("--runs", type=int, default=3, help="runs (the README shows the median)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    name = "layers-cerberus" if args.cerberus else "layers"
    repeat(name, lambda: asyncio.run(measure(args)), args.runs, args.results,
           program="python -m bench.layers")
    if args.results == RESULTS:
        readme.update(ROOT / "README.md", RESULTS)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One run: records/s of the producer, then Bronze, then Silver, each draining alone."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    folder = config_copy(prefix, args.cerberus)
    ctx = await open_context(folder, os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                             os.environ.get("DATABASE_URL",
                                            "postgresql://postgres@127.0.0.1:5432/postgres"),
                             prefix)
    try:
        rows = order_lines(args.records)
        producer = Producer(ctx.redis, ctx.keys, chunk_size=500, max_backlog=10**9)
        started, cpu = time.perf_counter(), time.process_time()
        await producer.send_table(TableTarget("north_america", "erp_order_line", "w1"), rows)
        produce_s, produce_cpu = time.perf_counter() - started, time.process_time() - cpu
        heap.settle()  # as a layer process does once it has started (`assay run`)
        bronze_s, bronze_cpu, bronze_pg = await timed(ctx, "bronze", args.profile == "bronze")
        silver_s, silver_cpu, silver_pg = await timed(ctx, "silver", args.profile == "silver")
        landed = await ctx.pool.fetchval(
            f'SELECT count(*) FROM "{prefix}"."silver_erp_order_line"')
    finally:
        await ctx.pool.execute(f'DROP SCHEMA IF EXISTS "{prefix}" CASCADE')
        async for key in ctx.redis.scan_iter(match=f"{prefix}:*"):
            await ctx.redis.delete(key)
        await ctx.close()
        shutil.rmtree(folder)
    load = os.getloadavg()
    n = args.records
    print(f"cores: {os.cpu_count()}, load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f},"
          f" validation: {'cerberus' if args.cerberus else 'compiled'}, silver rows: {landed:,}")
    print("| stage | records | seconds | records/s | Python CPU µs/record"
          " | PostgreSQL CPU µs/record |")
    print("|---|---:|---:|---:|---:|---:|")
    stages = {"producer": produce_s, "bronze": bronze_s, "silver": silver_s}
    cpu_s = {"producer": produce_cpu, "bronze": bronze_cpu, "silver": silver_cpu}
    pg_s = {"bronze": bronze_pg, "silver": silver_pg}
    for stage, seconds in stages.items():
        pg = f"{pg_s[stage] / n * 1e6:.2f}" if stage in pg_s else "–"
        print(f"| {stage} | {n:,} | {seconds:.2f} | {n / seconds:,.0f} |"
              f" {cpu_s[stage] / n * 1e6:.2f} | {pg} |")
    return {"kind": "layers", "records": n,
            "validation": "cerberus" if args.cerberus else "compiled", "silver_rows": landed,
            "seconds": {k: round(v, 3) for k, v in stages.items()},
            "records_per_s": {k: round(n / v) for k, v in stages.items()},
            "cpu_us_per_record": {k: round(v / n * 1e6, 2) for k, v in cpu_s.items()},
            "postgres_cpu_us_per_record": {k: round(v / n * 1e6, 2) for k, v in pg_s.items()}}


if __name__ == "__main__":
    main()
