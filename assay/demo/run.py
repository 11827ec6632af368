"""The main job: replay AdventureWorks through every layer, each its own OS process.

Start (or reuse) the servers, reset the demo's schema and keys, migrate, start the
processes of the Procfile, replay the simulator's monthly exports through the producer,
wait until every window is complete and Gold has applied it, print the KPI table, and
stop the processes cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import msgspec
import structlog

from assay.contracts.config import DivisionConfig
from assay.db import report
from assay.demo.simulator import Simulator
from assay.runner import Context, open_context
from assay.streams.producer import Producer, TableTarget
from assay.streams.windows import WindowStore

log = structlog.get_logger("assay.demo")

DONE = {"completed", "partial"}


@dataclass
class DemoOptions:
    """What ``assay demo`` was asked to do."""

    config_dir: Path
    data_dir: Path
    procfile: Path
    log_dir: Path
    key_prefix: str = "assay"
    redis_cluster: bool | None = None
    """Force a cluster client or a plain one (None: ask the server)."""
    as_json: bool = False
    first: str | None = None
    last: str | None = None
    timeout_s: float = 600.0
    env: dict[str, str] = field(default_factory=dict)


def procfile_layers(path: Path) -> list[tuple[str, str]]:
    """The (process name, layer) pairs a Procfile runs (``name: assay run LAYER``)."""
    layers = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, command = line.partition(":")
        words = command.split()
        if words[:2] == ["assay", "run"] and len(words) > 2:
            layers.append((name.strip(), words[2]))
    return layers


async def reset(ctx: Context) -> None:
    """The demo starts clean: its schema and its Redis keys are dropped."""
    await ctx.pool.execute(f'DROP SCHEMA IF EXISTS "{ctx.plan.schema}" CASCADE')
    async for key in ctx.redis.scan_iter(match=f"{ctx.keys.prefix}:*", count=1000):
        await ctx.redis.delete(key)


async def start_layers(options: DemoOptions, redis_url: str, database_url: str
                       ) -> list[asyncio.subprocess.Process]:
    options.log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **options.env, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": options.key_prefix, "ASSAY_LOG_FORMAT": "json"}
    processes = []
    for name, layer in procfile_layers(options.procfile):
        out = (options.log_dir / f"{name}.log").open("ab")
        processes.append(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "assay", "run", layer, "--config", str(options.config_dir),
            env=env, stdout=out, stderr=out))
        out.close()
    return processes


async def stop_layers(processes: list[asyncio.subprocess.Process], grace_s: float = 30.0
                      ) -> list[int]:
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    codes = []
    for process in processes:
        try:
            codes.append(await asyncio.wait_for(process.wait(), grace_s))
        except TimeoutError:
            process.kill()
            codes.append(await process.wait())
    return codes


def division_routes(divisions: Mapping[str, DivisionConfig], groups: Mapping[str, str]
                    ) -> dict[str, str]:
    """The config division each simulated division's exports go to: the one whose display
    name is the territory group's ('North America' → whatever id the config gives it), else
    the simulator's own id. Any division id works, e.g. ids that spread over cluster nodes."""
    by_name = {config.name: division for division, config in divisions.items()}
    return {own: by_name.get(group, own) for own, group in groups.items()}


async def replay(ctx: Context, simulator: Simulator, err: TextIO) -> int:
    """Send every export in window order; returns the number of records sent."""
    producer = Producer(ctx.redis, ctx.keys, chunk_size=ctx.plan.config.pipeline.batch_size,
                        max_backlog=ctx.plan.config.pipeline.max_backlog_entries)
    route = division_routes(ctx.plan.config.divisions, simulator.divisions)
    sent = 0
    window = ""
    for export in simulator.exports():
        if export.window != window:
            window = export.window
            err.write(f"\r  replaying window {window} ({sent:,} records sent)")
            err.flush()
        sent += await producer.send_table(
            TableTarget(route[export.division], export.table, export.window), export.rows)
    err.write(f"\r  replayed {len(simulator.windows())} windows, {sent:,} records\n")
    return sent


async def wait_until_done(ctx: Context, divisions: list[str], windows: list[str],
                          processes: list[asyncio.subprocess.Process], timeout_s: float) -> int:
    """Poll until every window of every division is complete and Gold has applied it."""
    store = WindowStore(ctx.redis, ctx.keys)
    deadline = time.monotonic() + timeout_s
    expected = len(divisions) * len(windows)
    while True:
        dead = [p for p in processes if p.returncode is not None]
        if dead:
            raise RuntimeError(f"a layer process exited early (code {dead[0].returncode});"
                               " see its log")
        done = 0
        for division in divisions:
            done += sum(1 for w in await store.windows(division) if w.get("status") in DONE)
        # Gold notes each window it applies in gold_windows, in the same transaction: every
        # window is there, or the demo waits (a lost window event shows as a timeout).
        if done >= expected and len(await report.gold_windows(ctx.pool,
                                                              ctx.plan.schema)) >= expected:
            return done
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done} of {expected} windows complete after {timeout_s:.0f} s")
        await asyncio.sleep(0.2)


def format_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    headers = ["division", "category", "year", "shipped_qty", "shipped_tonnes", "annual_goal",
               "prior_year_shipped", "attainment_pct"]
    cells = [[str(r[h]) if h == "year" else _cell(r[h]) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w)
                       for i, (h, w) in enumerate(zip(headers, widths, strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    lines.append("")
    lines.extend(f"{k}: {_cell(v)}" for k, v in summary.items())
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


async def run_demo(options: DemoOptions, redis_url: str, database_url: str,
                   out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    started = time.monotonic()
    err.write("assay demo: AdventureWorks, every layer as its own process\n")
    simulator = Simulator(options.data_dir, first=options.first, last=options.last)
    ctx = await open_context(options.config_dir, redis_url, database_url, options.key_prefix,
                             options.redis_cluster)
    await reset(ctx)
    await ctx.close()
    ctx = await open_context(options.config_dir, redis_url, database_url, options.key_prefix,
                             options.redis_cluster)
    processes = await start_layers(options, redis_url, database_url)
    try:
        records_in = await replay(ctx, simulator, err)
        divisions = list(ctx.plan.config.divisions)
        completed = await wait_until_done(ctx, divisions, simulator.windows(), processes,
                                          options.timeout_s)
    finally:
        codes = await stop_layers(processes)
    try:
        names = {d: c.name for d, c in ctx.plan.config.divisions.items()}
        rows = await report.kpi_rows(ctx.pool, ctx.plan.schema, "shipped_vs_goal", names)
        summary = await report.summary(ctx.pool, ctx.redis, ctx.keys, ctx.plan.schema,
                                       divisions, records_in, ctx.plan.config.gold.linkage,
                                       completed)
        summary["seconds"] = round(time.monotonic() - started, 1)
    finally:
        await ctx.close()
    if options.as_json:
        for row in rows:
            out.write(msgspec.json.encode(_jsonable(row)).decode() + "\n")
        out.write(msgspec.json.encode({"summary": summary}).decode() + "\n")
    else:
        out.write(format_table(rows, summary) + "\n")
    if any(codes):
        err.write(f"a layer process exited with {codes}\n")
        return 1
    return 0


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, Decimal) else v) for k, v in row.items()}
