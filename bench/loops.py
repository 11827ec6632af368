"""Bronze's and Silver's per-record Python alone: ``process()`` with the database left out.

A batch of 2,000 order lines (the demo's ``erp_order_line``) is decoded once, as a layer
decodes its entry, then processed again and again. The writers, the quarantine and the
ledger are replaced by calls that do nothing, so what is timed is the loop a layer runs in
Python per record: door checks, formulas, cleaning, validation, ranking, the rows
and messages it builds. The database's share is ``bench.layers``; everything is ``bench.e2e``.

    python -m bench.loops [--batches 40] [--layer bronze|silver|both]
    python -m bench.loops --callgrind [--layer silver]

Time on a shared machine drifts by tens of per cent between runs, so the figure is the
fastest batch. ``--callgrind`` counts instructions instead (valgrind; the same answer on any
load): a run of 12 batches minus a run of 2, per record, with a fixed hash seed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

from assay.contracts.config import load_config
from assay.contracts.messages import LandedBatch, Record, RecordBatch
from assay.processors import bronze, silver
from assay.processors.plan import build_plan
from assay.streams import heap
from assay.streams.codec import Item, decode_entry, encode, entry_size, flatten
from bench.e2e import TABLE, order_lines
from bench.runs import ROOT

RECORDS = 2_000


async def _nothing(*_: Any, **__: Any) -> None:
    return None


@contextlib.asynccontextmanager
async def _no_transaction(_: Any) -> AsyncIterator[None]:
    yield None


def leave_out_the_database() -> None:
    """Every write of both layers becomes a call that does nothing (this process only)."""
    for module in (bronze, silver):
        module.transaction = _no_transaction  # type: ignore[assignment]
        module.quarantine.add = _nothing  # type: ignore[assignment]
        module.accounting.record = _nothing  # type: ignore[assignment]
        module.accounting.record_groups = _nothing  # type: ignore[assignment]
    silver.quarantine.release = _nothing  # type: ignore[assignment]
    silver.SilverWriter.merge = _nothing  # type: ignore[assignment,method-assign]
    bronze.BronzeWriter.land = _nothing  # type: ignore[assignment,method-assign]


def items_of(message: Any, stream: str) -> list[Item]:
    fields = encode(message)
    decoded = decode_entry(fields)
    return flatten(stream, "1796530494297-0", decoded.message, 1, entry_size(fields))


async def measure(batches: int, layers: list[str]) -> dict[str, float]:
    """The fastest batch of each layer, in µs per record."""
    leave_out_the_database()
    plan = build_plan(load_config(ROOT / "config"))
    bronze_layer = bronze.BronzeProcessor(None, plan, time.time)  # type: ignore[arg-type]
    silver_layer = silver.SilverProcessor(None, plan, time.time)  # type: ignore[arg-type]
    division = next(iter(plan.config.divisions))
    records = [Record(division=division, table=TABLE, window="w0001", row=70_001 + i,
                      payload=row) for i, row in enumerate(order_lines(70_001, RECORDS))]
    ingest = items_of(RecordBatch(records=records), f"bench:{{{division}}}:ingest")
    out = await bronze_layer.process(ingest)
    [landed] = [m for _, m in out.emits if isinstance(m, LandedBatch)]
    forwarded = items_of(landed, f"bench:{{{division}}}:bronze")
    heap.settle()
    runs = {"bronze": (bronze_layer, ingest), "silver": (silver_layer, forwarded)}
    fastest: dict[str, float] = {}
    for _ in range(batches):
        for layer in layers:
            processor, items = runs[layer]
            started = time.perf_counter()
            await processor.process(items)
            seconds = time.perf_counter() - started
            fastest[layer] = min(fastest.get(layer, seconds), seconds)
    return {layer: s / RECORDS * 1e6 for layer, s in fastest.items()}


def instructions(layer: str) -> float:
    """Instructions per record of one layer's loop, under callgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (apt-get install -y valgrind)")
    counts = []
    for batches in (2, 12):
        with tempfile.TemporaryDirectory() as folder:
            done = subprocess.run(
                [valgrind, "--tool=callgrind", f"--callgrind-out-file={folder}/out",
                 sys.executable, "-m", "bench.loops", "--batches", str(batches),
                 "--layer", layer],
                capture_output=True, text=True, check=True, cwd=ROOT,
                env={**os.environ, "PYTHONHASHSEED": "0"})
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise SystemExit(f"no instruction count from callgrind:\n{done.stderr[-2000:]}")
        counts.append(int(found[1]))
    return (counts[1] - counts[0]) / (10 * RECORDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--layer", choices=("bronze", "silver", "both"), default="both")
    parser.add_argument("--callgrind", action="store_true",
                        help="count instructions per record (valgrind) instead of timing")
    args = parser.parse_args()
    layers = ["bronze", "silver"] if args.layer == "both" else [args.layer]
    if args.callgrind:
        for layer in layers:
            print(f"{layer}: {instructions(layer):,.0f} instructions per record")
        return
    for layer, micros in asyncio.run(measure(args.batches, layers)).items():
        print(f"{layer}: {micros:.2f} µs per record (fastest of {args.batches} batches"
              f" of {RECORDS:,})")


if __name__ == "__main__":
    main()
