"""The ``assay`` command: the face that parses arguments, wires things and starts processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

from assay import logs
from assay.contracts.config import Config, ConfigError, config_json_schema, load_config
from assay.settings import Settings

T = TypeVar("T")


def _config_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config", "config_dir", type=click.Path(path_type=Path), default=None,
        help="Config folder (default: $ASSAY_CONFIG or ./config).")(f)


def _keep_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--keep-running", is_flag=True,
                        help="Leave embedded servers this command started running.")(f)


def _urls(stack: ExitStack, settings: Settings, keep_running: bool) -> tuple[str, str]:
    """The servers from REDIS_URL/DATABASE_URL, or embedded ones started (or reused) now."""
    if settings.redis_url and settings.database_url:
        return settings.redis_url, settings.database_url
    from assay.services import Services, default_data_dir

    urls = stack.enter_context(Services(default_data_dir(), keep_running=keep_running))
    return urls.redis_url, urls.database_url


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


@click.group()
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING (default $ASSAY_LOG_LEVEL).")
def main(log_level: str | None) -> None:
    """assay: an event-driven medallion pipeline on Redis Streams and PostgreSQL."""
    logs.configure(level=log_level)


@main.command()
@click.argument("config_dir", type=click.Path(path_type=Path), required=False)
def check(config_dir: Path | None) -> None:
    """Validate a config folder; exit non-zero naming the file and JSON path of each problem."""
    from assay.processors.plan import build_plan

    folder = config_dir or Settings.from_env().config_dir
    try:
        plan = build_plan(load_config(folder))
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(1)
    click.echo(f"{folder}: ok ({len(plan.tables)} tables, "
               f"{len(plan.config.divisions)} divisions)")


@main.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of a config file (for editors)."""
    click.echo(msgspec.json.format(msgspec.json.encode(config_json_schema()), indent=2).decode())


@main.command()
@_config_option
@_keep_option
def migrate(config_dir: Path | None, keep_running: bool) -> None:
    """Create or extend the tables the config describes; refuse changes that lose data."""
    from assay.runner import open_context

    settings = Settings.from_env()
    with ExitStack() as stack:
        redis_url, database_url = _urls(stack, settings, keep_running)

        async def go() -> None:
            ctx = await open_context(config_dir or settings.config_dir, redis_url, database_url,
                                     settings.key_prefix)
            await ctx.close()

        _run(go())


@main.command()
@click.argument("layer")
@_config_option
@click.option("--burst", is_flag=True, help="Return once every stream is drained.")
@click.option("--name", default=None, help="Consumer name (default: layer-host-pid).")
@click.option("--metrics-port", type=int, default=None, envvar="ASSAY_METRICS_PORT",
              help="Serve Prometheus metrics on this port.")
def run(layer: str, config_dir: Path | None, burst: bool, name: str | None,
        metrics_port: int | None) -> None:
    """Run one layer (bronze, silver, barrier, gold, monitor) until SIGTERM/SIGINT.

    Without REDIS_URL/DATABASE_URL, the embedded servers are started or reused and left
    running for the other layers (``assay services stop`` stops them).
    """
    from assay.runner import LAYERS, open_context, run_layer

    if layer not in LAYERS:
        raise click.BadParameter(f"unknown layer {layer!r}; known: {', '.join(LAYERS)}")
    settings = Settings.from_env()
    with ExitStack() as stack:
        redis_url, database_url = _urls(stack, settings, keep_running=True)

        async def go() -> int:
            ctx = await open_context(config_dir or settings.config_dir, redis_url, database_url,
                                     settings.key_prefix)
            try:
                return await run_layer(layer, ctx, burst=burst, name=name,
                                       metrics_port=metrics_port)
            finally:
                await ctx.close()

        code = _run(go())
    sys.exit(code)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--division", required=True)
@click.option("--table", required=True)
@click.option("--window", required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None,
              help="Default: from the file name (.jsonl/.ndjson, else csv).")
@click.option("--delimiter", default=",", help="CSV delimiter; 'tab' for TAB.")
@click.option("--no-header", is_flag=True, help="The CSV file has no header row.")
@click.option("--columns", default=None, help="Comma-separated column names (replace the header).")
@click.option("--encoding", default="utf-8")
@click.option("--seq-field", default=None, help="Column holding the source sequence/updated-at.")
@click.option("--op", type=click.Choice(["upsert", "delete"]), default="upsert")
@_config_option
@_keep_option
def produce(file: Path, division: str, table: str, window: str, fmt: str | None, delimiter: str,
            no_header: bool, columns: str | None, encoding: str, seq_field: str | None, op: str,
            config_dir: Path | None, keep_running: bool) -> None:
    """Load a CSV or JSON-lines FILE into the ingest stream, with a progress bar."""
    from assay.produce import FileFormat, produce_file

    settings = Settings.from_env()
    file_format = FileFormat(
        kind=fmt or ("jsonl" if file.suffix in (".jsonl", ".ndjson") else "csv"),
        delimiter="\t" if delimiter == "tab" else delimiter,
        header=not no_header,
        columns=[c.strip() for c in columns.split(",")] if columns else None,
        encoding=encoding,
    )
    with ExitStack() as stack:
        redis_url, _ = _urls(stack, settings, keep_running)
        try:
            rows = _run(produce_file(
                file, file_format, division=division, table=table, window=window,
                seq_field=seq_field, op=op, redis_url=redis_url,
                config_dir=config_dir or settings.config_dir, key_prefix=settings.key_prefix))
        except (ValueError, UnicodeDecodeError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    click.echo(f"sent {rows} rows of {table} for {division}/{window}")


@main.command()
@_config_option
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="A folder with AdventureWorks files of the same names.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout, logs on stderr.")
@click.option("--first", default=None, help="First window to replay (YYYY-MM).")
@click.option("--last", default=None, help="Last window to replay (YYYY-MM).")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True,
              help="Seconds to wait for every window to complete.")
@click.option("--procfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The processes to run (default: the project's Procfile); a"
              " layer named on several lines runs as that many consumers.")
@_keep_option
def demo(config_dir: Path | None, data_dir: Path | None, as_json: bool, first: str | None,
         last: str | None, timeout_s: float, procfile: Path | None, keep_running: bool) -> None:
    """The main job: replay AdventureWorks through every layer and print the Gold KPIs."""
    from assay.demo.run import DemoOptions, run_demo
    from assay.demo.simulator import DEFAULT_DATA_DIR
    from assay.services import default_data_dir

    settings = Settings.from_env()
    root = Path(__file__).resolve().parent.parent
    options = DemoOptions(
        config_dir=config_dir or (settings.config_dir if settings.config_dir.exists()
                                  else root / "config"),
        data_dir=data_dir or DEFAULT_DATA_DIR,
        procfile=procfile or root / "Procfile",
        log_dir=default_data_dir() / "logs",
        key_prefix=settings.key_prefix,
        as_json=as_json, first=first, last=last, timeout_s=timeout_s,
    )
    with ExitStack() as stack:
        redis_url, database_url = _urls(stack, settings, keep_running)
        code = _run(run_demo(options, redis_url, database_url))
        if keep_running:
            click.echo(f"left running: REDIS_URL={redis_url} DATABASE_URL={database_url}",
                       err=True)
    sys.exit(code)


@main.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.option("--watch", "watching", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes.")
def lag(config_dir: Path | None, as_json: bool, watching: bool, interval: float) -> None:
    """Stream length, lag, pending entries, consumers and dead letters per group."""
    import redis.asyncio as aioredis

    from assay.ops.lag_view import render_json, render_table, watch
    from assay.runner import LAYERS
    from assay.streams.keys import Keys
    from assay.streams.lag import LagTracker, by_channel

    settings = Settings.from_env()
    config = _load(config_dir or settings.config_dir)
    with ExitStack() as stack:
        redis_url, _ = _urls(stack, settings, keep_running=True)

        async def go() -> None:
            client = aioredis.from_url(redis_url)
            tracker = LagTracker(client, Keys(settings.key_prefix), list(config.divisions),
                                 by_channel(LAYERS), scan_bound=config.alerts.scan_bound)
            render = render_json if as_json else render_table
            try:
                if watching:
                    await watch(tracker.take, render, sys.stdout, interval_s=interval,
                                clear=not as_json)
                else:
                    click.echo(render(await tracker.take()))
            finally:
                await client.aclose()

        with contextlib.suppress(KeyboardInterrupt):
            _run(go())


@main.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def windows(config_dir: Path | None, as_json: bool) -> None:
    """Every sync window of every division, with its state and ages, and whether Gold
    has applied it (``gold_s``: seconds from completion to Gold's commit)."""
    import time

    import asyncpg
    import redis.asyncio as aioredis

    from assay.db import report
    from assay.streams.keys import Keys
    from assay.streams.windows import WindowStore

    settings = Settings.from_env()
    config = _load(config_dir or settings.config_dir)
    with ExitStack() as stack:
        redis_url, database_url = _urls(stack, settings, keep_running=True)

        async def go() -> tuple[list[dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
            client = aioredis.from_url(redis_url)
            conn = await asyncpg.connect(database_url)
            store = WindowStore(client, Keys(settings.key_prefix))
            try:
                return ([{"division": d, **w} for d in config.divisions
                         for w in await store.windows(d)],
                        await report.gold_windows(conn, config.pipeline.db_schema))
            finally:
                await conn.close()
                await client.aclose()

        found, applied = _run(go())
    now = time.time()
    rows = []
    for w in found:
        tables = config.divisions[w["division"]].tables
        short = [t for t in tables if w.get(f"{t}:expected") is None
                 or w.get(f"{t}:seen", "0") != w.get(f"{t}:expected")]
        gold = applied.get((w["division"], w["window"]))
        rows.append({
            "division": w["division"], "window": w["window"], "status": w.get("status", ""),
            "age_s": round(now - float(w.get("opened_at", now)), 1),
            "complete_after_s": (round(float(w["completed_at"]) - float(w["opened_at"]), 1)
                                 if w.get("completed_at") else None),
            "retries": int(w.get("retries", 0)), "amendments": int(w.get("amendments", 0)),
            "failed": sum(int(w.get(f"{t}:failed", 0)) for t in tables),
            "waiting_for": short,
            "gold_applies": gold["applies"] if gold else 0,
            "gold_s": (round(gold["applied_at"] - float(w["completed_at"]), 1)
                       if gold and w.get("completed_at") else None),
        })
    if as_json:
        for row in rows:
            click.echo(msgspec.json.encode(row).decode())
        return
    click.echo(f"{'division':<16}{'window':<12}{'status':<11}{'age_s':>10}{'done_s':>9}"
               f"{'retries':>8}{'failed':>8}{'gold_s':>8}  waiting for")
    for r in rows:
        done = "-" if r["complete_after_s"] is None else str(r["complete_after_s"])
        gold_s = "-" if r["gold_s"] is None else str(r["gold_s"])
        click.echo(f"{r['division']:<16}{r['window']:<12}{r['status']:<11}{r['age_s']:>10}"
                   f"{done:>9}{r['retries']:>8}{r['failed']:>8}{gold_s:>8}"
                   f"  {', '.join(r['waiting_for'])}")


@main.command()
@_config_option
@click.option("--table", default=None)
@click.option("--division", default=None)
@click.option("--window", default=None)
@click.option("--dry-run", is_flag=True, help="Only count what would be re-driven.")
def replay(config_dir: Path | None, table: str | None, division: str | None,
           window: str | None, dry_run: bool) -> None:
    """Re-drive quarantined rows through the pipeline (after fixing config or data)."""
    from assay.replay import replay as replay_rows
    from assay.runner import open_context

    settings = Settings.from_env()
    with ExitStack() as stack:
        redis_url, database_url = _urls(stack, settings, keep_running=True)

        async def go() -> int:
            ctx = await open_context(config_dir or settings.config_dir, redis_url,
                                     database_url, settings.key_prefix)
            try:
                return await replay_rows(ctx, table=table, division=division, window=window,
                                         dry_run=dry_run)
            finally:
                await ctx.close()

        count = _run(go())
    click.echo(f"{'would re-drive' if dry_run else 're-driven'}: {count} quarantined rows")


@main.group()
def gold() -> None:
    """Gold's derived tables."""


@gold.command("rebuild")
@_config_option
@_keep_option
def gold_rebuild(config_dir: Path | None, keep_running: bool) -> None:
    """Recompute every KPI from all facts (after a change to a KPI's config).

    Each window keeps the KPIs up to date incrementally; this is the full recompute they
    are tested against, run in one transaction while Gold holds its lock.
    """
    from assay.processors.gold import GoldProcessor
    from assay.runner import open_context

    settings = Settings.from_env()
    with ExitStack() as stack:
        redis_url, database_url = _urls(stack, settings, keep_running)

        async def go() -> int:
            ctx = await open_context(config_dir or settings.config_dir, redis_url, database_url,
                                     settings.key_prefix)
            try:
                await GoldProcessor(ctx.pool, ctx.plan, ctx.clock).rebuild()
                return len(ctx.plan.gold.kpis)
            finally:
                await ctx.close()

        count = _run(go())
    click.echo(f"rebuilt: {count} KPI tables")


@main.group()
def services() -> None:
    """The embedded servers in the project's data folder (./.assay or $ASSAY_DATA_DIR)."""


@services.command("start")
def services_start() -> None:
    """Start (or find) the embedded servers and leave them running; print their URLs."""
    from assay.services import Services, default_data_dir

    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    with Services(default_data_dir(), keep_running=True, env=env) as urls:
        click.echo(f"REDIS_URL={urls.redis_url}")
        click.echo(f"DATABASE_URL={urls.database_url}")


@services.command("stop")
def services_stop() -> None:
    """Stop the embedded servers recorded in the data folder."""
    from assay.services import default_data_dir, stop_embedded

    stop_embedded(default_data_dir())
    click.echo("stopped")


def _load(folder: Path) -> Config:
    try:
        return load_config(folder)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(1)
