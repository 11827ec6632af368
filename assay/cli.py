"""The ``assay`` command: the face that parses arguments, wires things and starts processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

from assay import logs
from assay.contracts.config import Config, ConfigError, config_json_schema, load_config
from assay.failures import Face
from assay.settings import Settings, Unreachable

T = TypeVar("T")


def _config_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config", "config_dir", type=click.Path(path_type=Path), default=None,
        help="Config folder (default: $ASSAY_CONFIG or ./config).")(f)


def _keep_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--keep-running", is_flag=True,
                        help="Leave embedded servers this command started running.")(f)


def _urls(stack: ExitStack, settings: Settings, keep_running: bool, supervise: bool = False
          ) -> tuple[str, str]:
    """The servers from REDIS_URL/DATABASE_URL, or embedded ones started (or reused) now;
    with ``supervise``, an embedded server that dies is restarted on its port."""
    if settings.redis_url and settings.database_url:
        return settings.redis_url, settings.database_url
    from assay.services import Services, default_data_dir

    urls = stack.enter_context(Services(default_data_dir(), keep_running=keep_running,
                                        supervise_every_s=0.5 if supervise else None))
    return urls.redis_url, urls.database_url


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _window(_: click.Context, __: click.Parameter, value: str | None) -> str | None:
    """A sync window option: 'YYYY-MM'."""
    from assay.demo.simulator import WINDOW_RE

    if value is not None and not WINDOW_RE.match(value):
        raise click.BadParameter(f"a window is 'YYYY-MM', not {value!r}")
    return value


def _run(coro: Awaitable[T]) -> T:
    """Run a command's coroutine; a bad config or a schema the config cannot be applied to
    ends it with one line per problem and exit 1, never a traceback."""
    from assay.db.schema import MigrationError

    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
    except MigrationError as exc:
        for change in exc.refused:
            click.echo(f"error: {change.line()}", err=True)
        click.echo("error: the database does not match the config; run `assay migrate"
                   " --dry-run` to see every difference", err=True)
    sys.exit(1)


@click.group(cls=Face)
@click.version_option(package_name="assay", prog_name="assay")
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
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--drop", is_flag=True, help="Drop tables and columns no longer in the config.")
def migrate(config_dir: Path | None, keep_running: bool, dry_run: bool, drop: bool) -> None:
    """Compare config and database, print the plan (one line per change) and apply it:
    additive changes and safe widenings; a change that could lose data is refused (exit 1)."""
    from assay.db.schema import MigrationPlan
    from assay.db.schema import migrate as migrate_schema
    from assay.runner import open_context

    settings = Settings.from_env()
    with ExitStack() as stack:
        redis_url, database_url = _urls(stack, settings, keep_running)

        async def go() -> MigrationPlan:
            ctx = await open_context(config_dir or settings.config_dir, redis_url, database_url,
                                     settings.key_prefix, migrate_schema=False)
            try:
                plan = ctx.plan
                async with ctx.pool.acquire() as conn:
                    return await migrate_schema(conn, plan.schema, plan.shapes(),
                                                plan.views(), drop=drop, dry_run=dry_run,
                                                strict=False)
            finally:
                await ctx.close()

        result = _run(go())
    for line in result.lines():
        click.echo(line)
    if not result.changes:
        click.echo("nothing to change: the database matches the config")
    elif dry_run:
        click.echo("dry run: nothing changed")
    sys.exit(1 if result.refused else 0)


@main.command()
@click.argument("layer")
@_config_option
@click.option("--burst", is_flag=True, help="Return once every stream is drained.")
@click.option("--name", default=None, help="Consumer name (default: layer-host-pid).")
@click.option("--metrics-port", type=int, default=None, envvar="ASSAY_METRICS_PORT",
              help="Serve Prometheus metrics on this port.")
@click.option("--grace", "grace_s", type=click.FloatRange(min=0.1, max=30.0), default=30.0,
              show_default=True, help="Seconds after SIGTERM to finish the batch in hand;"
              " past them it is cancelled (left pending) and the process exits 1.")
def run(layer: str, config_dir: Path | None, burst: bool, name: str | None,
        metrics_port: int | None, grace_s: float) -> None:
    """Run one layer (bronze, silver, barrier, gold, monitor) until SIGTERM/SIGINT.

    Without REDIS_URL/DATABASE_URL, the embedded servers are started or reused and left
    running for the other layers (``assay services stop`` stops them).
    """
    from assay.pidfiles import pid_dir
    from assay.runner import CLOSE_TIMEOUT_S, LAYERS, open_context, run_layer
    from assay.services import default_data_dir
    from assay.streams import heap

    if layer not in LAYERS:
        raise click.BadParameter(f"unknown layer {layer!r}; known: {', '.join(LAYERS)}")
    # SIGTERM while starting (waiting for a server, migrating): nothing is held yet, so a
    # clean exit at once; once consuming, run_layer's handler finishes the batch in hand.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    settings = Settings.from_env()
    folder = config_dir or settings.config_dir
    with ExitStack() as stack:
        redis_url, database_url = _urls(stack, settings, keep_running=True)

        async def go() -> int:
            ctx = await open_context(config_dir or settings.config_dir, redis_url, database_url,
                                     settings.key_prefix, wait_forever=True)
            heap.settle()  # this process runs one layer: start-up is done
            code = 1
            try:
                code = await run_layer(layer, ctx, burst=burst, name=name, grace_s=grace_s,
                                       metrics_port=metrics_port, config_dir=folder,
                                       pids=pid_dir(default_data_dir(), settings.key_prefix))
                return code
            finally:
                # Past the grace (code 1) the servers are not waited for again: a hung
                # PostgreSQL would hold the close for its timeout, beyond the grace.
                await ctx.close(timeout_s=CLOSE_TIMEOUT_S if code == 0 else 0.0)

        code = _run(go())
    sys.exit(code)


@main.command()
@_config_option
def reload(config_dir: Path | None) -> None:
    """Check the config, then signal every running layer of this data folder (SIGHUP) to
    switch to it between batches; a layer that cannot logs why and keeps its config."""
    from assay.pidfiles import pid_dir, signal_layers
    from assay.processors.plan import build_plan
    from assay.services import default_data_dir

    settings = Settings.from_env()
    valid = True
    try:
        build_plan(load_config(config_dir or settings.config_dir))
    except ConfigError as exc:
        valid = False
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        click.echo("error: the layers will refuse this config and keep theirs", err=True)
    signalled = signal_layers(pid_dir(default_data_dir(), settings.key_prefix))
    for layer in signalled:
        click.echo(f"signalled {layer.layer} (pid {layer.pid})")
    if not signalled:
        click.echo(f"no running layer found in {default_data_dir()}", err=True)
    sys.exit(0 if valid and signalled else 1)


@main.command()
@_config_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--openapi", "print_openapi", is_flag=True,
              help="Print the OpenAPI document and exit.")
def serve(config_dir: Path | None, host: str, port: int, print_openapi: bool) -> None:
    """The HTTP API (ingest, read, replay) and the live status page at ``/``."""
    if print_openapi:
        from assay.web.openapi import openapi

        click.echo(msgspec.json.format(msgspec.json.encode(openapi()), indent=2).decode())
        return
    from assay.runner import open_context
    from assay.web.app import extra_tokens
    from assay.web.app import serve as serve_http

    settings = Settings.from_env()
    extra = extra_tokens(os.environ)
    with ExitStack() as stack:
        redis_url, database_url = _urls(stack, settings, keep_running=True)

        async def go() -> None:
            ctx = await open_context(config_dir or settings.config_dir, redis_url,
                                     database_url, settings.key_prefix)
            try:
                await serve_http(ctx, host, port, extra)
            finally:
                await ctx.close()

        _run(go())


@main.command()
@click.option("--name", required=True, help="What the token is for (shown in 403 answers).")
@click.option("--division", "divisions", multiple=True, required=True,
              help="A division it may touch ('*': all); repeatable.")
@click.option("--scope", "scopes", multiple=True, required=True,
              type=click.Choice(["ingest", "read", "replay"]), help="Repeatable.")
def token(name: str, divisions: tuple[str, ...], scopes: tuple[str, ...]) -> None:
    """Make a new HTTP API token: print it once, and the config entry holding its hash."""
    import secrets

    from assay.web.auth import token_hash

    secret = secrets.token_urlsafe(32)
    entry = {"name": name, "sha256": token_hash(secret), "divisions": list(divisions),
             "scopes": list(scopes)}
    click.echo(f"token (shown once; the config keeps only its hash): {secret}")
    click.echo("add to the http.tokens list of a config file:")
    click.echo(msgspec.json.encode(entry).decode())


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
                config_dir=config_dir or settings.config_dir, key_prefix=settings.key_prefix,
                redis_cluster=settings.redis_cluster))
        except (ValueError, UnicodeDecodeError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    click.echo(f"sent {rows} rows of {table} for {division}/{window}")


@main.command()
@_config_option
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="A folder with AdventureWorks files of the same names.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout, logs on stderr.")
@click.option("--first", default=None, callback=_window, help="First window to replay (YYYY-MM).")
@click.option("--last", default=None, callback=_window, help="Last window to replay (YYYY-MM).")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True,
              help="Seconds to wait for every window to complete.")
@click.option("--procfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The processes to run (default: the project's Procfile); a"
              " layer named on several lines runs as that many consumers.")
@click.option("--via", type=click.Choice(["redis", "http"]), default="redis", show_default=True,
              help="http: send the records through `assay serve` instead of XADD.")
@click.option("-c", "--concurrency", "concurrency", multiple=True, metavar="NAME=N[,...]",
              help="Consumers per Procfile process, as honcho -c: silver=2 runs silver.1 and"
              " silver.2 (default: silver gets one per core, up to 4).")
@_keep_option
def demo(config_dir: Path | None, data_dir: Path | None, as_json: bool, first: str | None,
         last: str | None, timeout_s: float, procfile: Path | None, via: str,
         concurrency: tuple[str, ...], keep_running: bool) -> None:
    """The main job: replay AdventureWorks through every layer and print the Gold KPIs.

    It prints progress, the KPI table and a summary; its own log shows warnings only unless
    --log-level or ASSAY_LOG_LEVEL asks for more (each layer logs to .assay/logs/LAYER.log).
    """
    from assay.demo import run as demo_run
    from assay.demo.run import DemoOptions, ProcfileError, procfile_lines, run_demo
    from assay.demo.simulator import DEFAULT_DATA_DIR
    from assay.resources import CONFIG, PROCFILE, resource
    from assay.services import default_data_dir

    if not click.get_current_context().find_root().params.get("log_level") and not (
            os.environ.get("ASSAY_LOG_LEVEL")):
        logs.configure(level="WARNING")
    settings = Settings.from_env()
    options = DemoOptions(
        config_dir=config_dir or (settings.config_dir if settings.config_dir.exists()
                                  else resource(CONFIG)),
        data_dir=data_dir or DEFAULT_DATA_DIR,
        procfile=procfile or resource(PROCFILE),
        log_dir=default_data_dir() / "logs",
        key_prefix=settings.key_prefix,
        as_json=as_json, first=first, last=last, timeout_s=timeout_s, via=via,
        keep_running=keep_running,
    )
    try:
        if concurrency:
            options.concurrency = demo_run.parse_concurrency(concurrency)
        demo_run.concurrency(options.concurrency, procfile_lines(options.procfile),
                             options.procfile)
    except ProcfileError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    with ExitStack() as stack:
        redis_url, database_url = _urls(stack, settings, keep_running, supervise=True)
        code = _run(run_demo(options, redis_url, database_url))
        if keep_running:
            click.echo(f"left running: REDIS_URL={redis_url} DATABASE_URL={database_url}",
                       err=True)
    sys.exit(code)


@main.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def init(folder: Path) -> None:
    """Write a starter config FOLDER to edit: the demo's config, its JSON Schema, a README."""
    from assay.starter import write_starter

    for path in write_starter(folder):
        click.echo(f"wrote {path}")
    click.echo(f"next: assay check {folder}")


@main.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.option("--watch", "watching", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes.")
def lag(config_dir: Path | None, as_json: bool, watching: bool, interval: float) -> None:
    """Stream length, lag, pending entries, consumers and dead letters per group."""
    from assay.ops.lag_view import render_json, render_table, watch
    from assay.runner import LAYERS
    from assay.streams.client import connect
    from assay.streams.keys import Keys
    from assay.streams.lag import LagTracker, by_channel

    settings = Settings.from_env()
    config = _load(config_dir or settings.config_dir)
    with ExitStack() as stack:
        redis_url, _ = _urls(stack, settings, keep_running=True)

        async def go() -> None:
            client = await connect(redis_url, cluster=settings.redis_cluster)
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

    from assay.ops.window_view import read_windows
    from assay.streams.client import connect
    from assay.streams.keys import Keys

    settings = Settings.from_env()
    config = _load(config_dir or settings.config_dir)
    with ExitStack() as stack:
        redis_url, database_url = _urls(stack, settings, keep_running=True)

        async def go() -> list[dict[str, Any]]:
            try:
                conn = await asyncpg.connect(database_url)
            except (OSError, asyncpg.PostgresConnectionError) as exc:
                raise Unreachable(f"cannot reach PostgreSQL at {logs.redact(database_url)}:"
                                  f" {exc}") from exc
            try:
                client = await connect(redis_url, cluster=settings.redis_cluster)
            except BaseException:
                await conn.close()
                raise
            try:
                return await read_windows(client, conn, Keys(settings.key_prefix), config,
                                          list(config.divisions), time.time())
            finally:
                await conn.close()
                await client.aclose()

        rows = _run(go())
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
@click.option("--division", default=None)
@click.option("--window", default=None)
@click.option("--table", default=None)
@click.option("--rule", default=None, help="Only rows quarantined by this rule (max, type, ...).")
@click.option("--key", default=None, help="Only the row with this key (parts joined by '|').")
@click.option("--dry-run", is_flag=True, help="Only show what would be re-driven.")
@click.option("--wait", "wait_s", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the running layers to process the rows (0: don't).")
def replay(config_dir: Path | None, division: str | None, window: str | None,
           table: str | None, rule: str | None, key: str | None, dry_run: bool,
           wait_s: float) -> None:
    """Re-drive quarantined rows through the pipeline (after fixing config or data); their
    windows are restated and Gold applies them again. Reports per window what moved."""
    from assay.replay import Filters, Report, follow
    from assay.replay import replay as replay_rows
    from assay.runner import open_context

    settings = Settings.from_env()
    filters = Filters(division=division, window=window, table=table, rule=rule, key=key)
    with ExitStack() as stack:
        redis_url, database_url = _urls(stack, settings, keep_running=True)

        async def go() -> Report:
            ctx = await open_context(config_dir or settings.config_dir, redis_url,
                                     database_url, settings.key_prefix)
            try:
                report = await replay_rows(ctx, filters, dry_run=dry_run)
                if dry_run or wait_s <= 0:
                    return report
                return await follow(ctx, report, wait_s)
            finally:
                await ctx.close()

        report = _run(go())
    for line in report.lines():
        click.echo(line)
    click.echo(f"{'would re-drive' if dry_run else 're-driven'}: {report.rows} quarantined rows")


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
@click.option("--supervise", is_flag=True,
              help="Stay in the foreground and restart a server that dies, on its port, until"
              " SIGTERM or Ctrl-C (which leave the servers running).")
def services_start(supervise: bool) -> None:
    """Start (or find) the embedded servers and leave them running; print their URLs."""
    from assay.services import Services, default_data_dir

    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    with Services(default_data_dir(), keep_running=True, env=env,
                  supervise_every_s=0.5 if supervise else None) as urls:
        click.echo(f"REDIS_URL={urls.redis_url}")
        click.echo(f"DATABASE_URL={urls.database_url}")
        if supervise:
            sys.stdout.flush()
            with contextlib.suppress(KeyboardInterrupt, SystemExit):
                threading.Event().wait()


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


@main.command()
@click.argument("division")
@_config_option
@click.option("--count", type=int, default=None, help="Only the newest N (default: all).")
def dead(division: str, config_dir: Path | None, count: int | None) -> None:
    """A division's dead letters as JSON lines, oldest first (raw bytes as base64)."""
    import msgspec

    from assay.streams.client import connect
    from assay.streams.dead import dead_letters
    from assay.streams.keys import Keys

    settings = Settings.from_env()
    config = _load(config_dir or settings.config_dir)
    if division not in config.divisions:
        raise click.BadParameter(f"unknown division {division!r}; known: "
                                 f"{sorted(config.divisions)}", param_hint="DIVISION")
    with ExitStack() as stack:
        redis_url, _ = _urls(stack, settings, keep_running=True)

        async def go() -> list[dict[str, Any]]:
            client = await connect(redis_url, cluster=settings.redis_cluster)
            try:
                return await dead_letters(client, Keys(settings.key_prefix), division, count)
            finally:
                await client.aclose()

        for letter in _run(go()):
            click.echo(msgspec.json.encode(letter).decode())
