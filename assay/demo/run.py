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
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import msgspec
import structlog

from assay.contracts.config import DivisionConfig
from assay.db import report
from assay.db.pool import TRANSIENT_PG
from assay.demo.simulator import Export, Simulator
from assay.demo.via_http import HttpSide, replay_http, start_serve
from assay.runner import LAYERS, STOP_WITHIN_S, Context, open_context
from assay.streams.consumer import TRANSIENT
from assay.streams.dead import dead_letter_count
from assay.streams.producer import Producer, TableTarget
from assay.streams.windows import WindowStore
from assay.supervise import Slot, Supervisor

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
    as_json: bool = False
    first: str | None = None
    last: str | None = None
    timeout_s: float = 600.0
    env: dict[str, str] = field(default_factory=dict)
    via: str = "redis"
    """``http``: the records go through ``assay serve`` (see ``assay.demo.via_http``)."""
    keep_running: bool = False
    concurrency: dict[str, int] | None = None
    """Consumers per Procfile process name (``honcho -c`` semantics): ``silver=2`` runs
    slots ``silver.1`` and ``silver.2``, each a consumer of the Silver group. None: the
    ``default_concurrency()`` for the process names the Procfile has."""


def default_concurrency(cores: int | None = None) -> dict[str, int]:
    """Silver, the layer that saturates first, gets a consumer per core (up to 4)."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return {"silver": max(1, min(cores, 4))}


def parse_concurrency(specs: Sequence[str]) -> dict[str, int]:
    """``["silver=2", "bronze=2,gold=1"]`` → ``{"silver": 2, "bronze": 2, "gold": 1}``."""
    counts: dict[str, int] = {}
    for spec in specs:
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, equals, number = part.partition("=")
            if not equals or not name.strip() or not number.strip().isdigit() or int(
                    number) < 1:
                raise ProcfileError(f"--concurrency {part!r}: expected NAME=N with N ≥ 1")
            counts[name.strip()] = int(number)
    return counts


class ProcfileError(ValueError):
    """A Procfile line the demo cannot run; the message names the file, line and why."""


@dataclass(frozen=True)
class ProcessLine:
    """One Procfile line: its process name and the ``assay`` arguments after ``assay``."""

    name: str
    args: tuple[str, ...]

    @property
    def layer(self) -> str | None:
        return self.args[1] if self.args[0] == "run" else None


def procfile_lines(path: Path) -> list[ProcessLine]:
    """The processes a Procfile runs: ``name: assay run LAYER [options]`` or
    ``name: assay serve [options]``; any other line is a ``ProcfileError``."""
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, command = line.partition(":")
        words = command.split()
        where = f"{path}:{number}: {line!r}"
        if not colon or not name.strip():
            raise ProcfileError(f"{where}: expected 'name: command'")
        runs = words[:2] == ["assay", "run"] and len(words) > 2 and words[2] in LAYERS
        if runs or words[:2] == ["assay", "serve"]:
            lines.append(ProcessLine(name.strip(), tuple(words[1:])))
        else:
            raise ProcfileError(f"{where}: the demo runs only 'assay run LAYER' (LAYER one of "
                                f"{', '.join(LAYERS)}) and 'assay serve' lines")
    names = [p.name for p in lines]
    if len(set(names)) != len(names):
        raise ProcfileError(f"{path}: process names must be unique, got {names}")
    return lines


async def reset(ctx: Context) -> None:
    """The demo starts clean: its schema and its Redis keys are dropped."""
    await ctx.pool.execute(f'DROP SCHEMA IF EXISTS "{ctx.plan.schema}" CASCADE')
    async for key in ctx.redis.scan_iter(match=f"{ctx.keys.prefix}:*", count=1000):
        await ctx.redis.delete(key)


def layer_slots(options: DemoOptions, redis_url: str, database_url: str) -> list[Slot]:
    """One supervised slot per layer line of the Procfile; a layer's consumer is named after
    its slot, so a restarted process takes its own pending entries back at once. An
    ``assay serve`` line is not started: the demo has no use for a server on a fixed port
    (``--via http`` starts its own on a free one)."""
    options.log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **options.env, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": options.key_prefix, "ASSAY_LOG_FORMAT": "json"}
    lines = procfile_lines(options.procfile)
    counts = concurrency(options.concurrency, lines, options.procfile)
    slots = []
    for line in lines:
        if line.layer is None:
            continue
        count = counts.get(line.name, 1)
        for name in ([line.name] if count == 1
                     else [f"{line.name}.{i}" for i in range(1, count + 1)]):
            args = list(line.args)
            if "--config" not in args:
                args += ["--config", str(options.config_dir)]
            if "--name" not in args:
                args += ["--name", name]
            slots.append(Slot(name, partial(_spawn, args, env, options.log_dir / f"{name}.log")))
    return slots


def concurrency(asked: Mapping[str, int] | None, lines: Sequence[ProcessLine],
                path: Path) -> dict[str, int]:
    """The consumers per process name: what was asked, checked against the Procfile (every
    name a layer line of it, none with a ``--name`` of its own, which several consumers
    cannot share); without asking, the default for the names the Procfile has."""
    layers = {line.name: line for line in lines if line.layer is not None}
    if asked is None:
        return {name: count for name, count in default_concurrency().items()
                if name in layers and "--name" not in layers[name].args}
    for name, count in asked.items():
        line = layers.get(name)
        if line is None:
            raise ProcfileError(f"--concurrency {name}={count}: {path} has no layer process "
                                f"named {name!r} (it has {', '.join(layers) or 'none'})")
        if count > 1 and "--name" in line.args:
            raise ProcfileError(f"--concurrency {name}={count}: its line in {path} sets "
                                "--name, which several consumers cannot share")
    return dict(asked)


async def _spawn(args: list[str], env: dict[str, str], log_path: Path
                 ) -> asyncio.subprocess.Process:
    with log_path.open("ab") as out:
        return await asyncio.create_subprocess_exec(sys.executable, "-m", "assay", *args,
                                                    env=env, stdout=out, stderr=out)


def _producer(ctx: Context, deadline: float) -> Producer:
    return Producer(ctx.redis, ctx.keys, chunk_size=ctx.plan.config.pipeline.batch_size,
                    max_backlog=ctx.plan.config.pipeline.max_backlog_entries,
                    retries=None, deadline=deadline)


def division_routes(divisions: Mapping[str, DivisionConfig], groups: Mapping[str, str]
                    ) -> dict[str, str]:
    """The config division each simulated division's exports go to: the one whose display
    name is the territory group's ('North America' → whatever id the config gives it), else
    the simulator's own id. Any division id works, e.g. ids that spread over cluster nodes."""
    by_name = {config.name: division for division, config in divisions.items()}
    return {own: by_name.get(group, own) for own, group in groups.items()}


def exports(ctx: Context, simulator: Simulator) -> Iterator[Export]:
    """The simulator's exports, each addressed to its config division."""
    route = division_routes(ctx.plan.config.divisions, simulator.divisions)
    for export in simulator.exports():
        yield replace(export, division=route[export.division])


async def replay(ctx: Context, simulator: Simulator, err: TextIO, deadline: float) -> int:
    """Send every export in window order; returns the number of records sent.

    Redis outages are waited out (and backlog room waited for) until ``deadline``.
    """
    producer = _producer(ctx, deadline)
    sent = 0
    window = ""
    for export in exports(ctx, simulator):
        if export.window != window:
            window = export.window
            err.write(f"\r  replaying window {window} ({sent:,} records sent)")
            err.flush()
        sent += await producer.send_table(
            TableTarget(export.division, export.table, export.window), export.rows)
    err.write(f"\r  replayed {len(simulator.windows())} windows, {sent:,} records\n")
    return sent


async def resend(ctx: Context, simulator: Simulator, windows: set[tuple[str, str]],
                 deadline: float) -> int:
    """Send the exports of these (division, window) pairs again, with the same row numbers:
    what a Redis that lost its last writes dropped arrives, nothing is doubled."""
    producer = _producer(ctx, deadline)
    sent = 0
    for export in exports(ctx, simulator):
        if (export.division, export.window) in windows:
            sent += await producer.send_table(
                TableTarget(export.division, export.table, export.window), export.rows)
    return sent


Resend = Callable[[set[tuple[str, str]]], Awaitable[int]]


@dataclass
class Waiting:
    """How the wait for the last window went."""

    completed: int = 0
    resent_windows: int = 0


async def wait_until_done(ctx: Context, divisions: list[str], windows: list[str],
                          deadline: float, resend_windows: Resend | None = None,
                          resend_after_s: float = 20.0) -> Waiting:
    """Poll until every window of every division is complete and Gold has applied it.

    A server that does not answer is asked again at the next poll, until ``deadline``.
    When nothing moved for ``resend_after_s``, the windows still missing are sent again
    (``resend_windows``): a Redis that lost its last second of writes lost their tail.
    """
    store = WindowStore(ctx.redis, ctx.keys)
    expected = {(d, w) for d in divisions for w in windows}
    waiting = Waiting()
    seen: tuple[int, int] = (-1, -1)
    moved = time.monotonic()
    while True:
        try:
            done = {(d, w["window"]) for d in divisions for w in await store.windows(d)
                    if w.get("status") in DONE}
            # Gold notes each window it applies in gold_windows, in the same transaction:
            # every window is there, or the demo waits.
            applied = set(await report.gold_windows(ctx.pool, ctx.plan.schema))
            waiting.completed = len(done & expected)
            if expected <= done and expected <= applied:
                return waiting
            if (len(done), len(applied)) != seen:
                seen, moved = (len(done), len(applied)), time.monotonic()
            elif resend_windows is not None and time.monotonic() - moved > resend_after_s:
                missing = expected - (done & applied)
                log.warning("resending_incomplete_windows", windows=sorted(missing))
                await resend_windows(missing)
                waiting.resent_windows += len(missing)
                moved = time.monotonic()
        except (*TRANSIENT, *TRANSIENT_PG) as exc:
            log.warning("demo_wait_retrying", error=f"{type(exc).__name__}: {exc}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{waiting.completed} of {len(expected)} windows complete "
                               "before the timeout")
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
                             migrate_schema=False)
    try:  # reset first, whatever another config left there, then migrate once
        await reset(ctx)
        await ctx.migrate()
    except BaseException:
        await ctx.close()
        raise
    supervisor = Supervisor(layer_slots(options, redis_url, database_url))
    await supervisor.start()
    deadline = time.monotonic() + options.timeout_s
    http_rows = None
    side: HttpSide | None = None
    linger = options.keep_running and options.via == "http"
    try:
        if options.via == "http":
            side = await _start_http(options, redis_url, database_url, err)
            http_rows = await replay_http(side, exports(ctx, simulator), err)
            records_in = sum(len(e.rows) for e in simulator.exports())
        else:
            records_in = await replay(ctx, simulator, err, deadline)
        divisions = list(ctx.plan.config.divisions)
        waiting = await wait_until_done(
            ctx, divisions, simulator.windows(), deadline,
            partial(resend, ctx, simulator, deadline=deadline))
    except BaseException:
        await _stop(supervisor, side)
        await ctx.close()
        raise
    codes = [] if linger else await _stop(supervisor, side)
    try:
        names = {d: c.name for d, c in ctx.plan.config.divisions.items()}
        rows = await report.kpi_rows(ctx.pool, ctx.plan.schema, "shipped_vs_goal", names)
        dead = await dead_letter_count(ctx.redis, ctx.keys, divisions)
        summary = await report.summary(ctx.pool, ctx.plan.schema, records_in, dead,
                                       ctx.plan.config.gold.linkage, waiting.completed)
        if http_rows is not None:
            summary["http_rows"] = http_rows
        summary["seconds"] = round(time.monotonic() - started, 1)
        summary["process_restarts"] = supervisor.restarts
        summary["windows_resent"] = waiting.resent_windows
    finally:
        await ctx.close()
    if options.as_json:
        for row in rows:
            out.write(msgspec.json.encode(_jsonable(row)).decode() + "\n")
        out.write(msgspec.json.encode({"summary": summary}).decode() + "\n")
    else:
        out.write(format_table(rows, summary) + "\n")
    if linger:
        out.flush()
        await until_interrupted(err)
        codes = await _stop(supervisor, side)
    # -SIGTERM: a process restarted moments before the stop, still starting (before its
    # handler was installed); it held nothing. Anything else non-zero is a failure.
    if any(code not in (0, -signal.SIGTERM) for code in codes):
        err.write(f"error: a layer process did not stop cleanly (exit codes {codes})\n")
        return 1
    return 0


async def until_interrupted(err: TextIO) -> None:
    """``--via http --keep-running``: the layers and ``assay serve`` go on until Ctrl-C."""
    err.write("  the layers and the HTTP API keep running; Ctrl-C stops them\n")
    err.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _start_http(options: DemoOptions, redis_url: str, database_url: str,
                      err: TextIO) -> HttpSide:
    """Start ``assay serve`` for the run, with a token of its own."""
    side = await start_serve(options.config_dir, options.log_dir, {
        **options.env, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
        "ASSAY_KEY_PREFIX": options.key_prefix, "ASSAY_LOG_FORMAT": "json"})
    if options.keep_running:
        err.write(f"  status page: {side.url}/  token for this run: {side.token}\n"
                  f"  e.g. curl -H 'Authorization: Bearer {side.token}' {side.url}/v1/windows\n")
        err.flush()
    return side


async def _stop(supervisor: Supervisor, side: HttpSide | None, grace_s: float = STOP_WITHIN_S
                ) -> list[int]:
    """Stop the layers, then the demo's ``assay serve``; the exit code of each."""
    codes = await supervisor.stop(grace_s)
    if side is not None:
        if side.process.returncode is None:
            side.process.send_signal(signal.SIGTERM)
        try:
            codes.append(await asyncio.wait_for(side.process.wait(), grace_s))
        except TimeoutError:
            side.process.kill()
            codes.append(await side.process.wait())
    return codes


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, Decimal) else v) for k, v in row.items()}
