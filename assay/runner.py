"""Wiring one layer process: config, connections, processor, consumer, signals."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from assay.contracts.config import load_config
from assay.db import pool as db_pool
from assay.db.pool import TRANSIENT_PG
from assay.db.schema import MigrationError, migrate
from assay.logs import redact
from assay.ops.metrics import Metrics, start_metrics_server
from assay.ops.monitor import serve
from assay.ops.notify import environment_name
from assay.ops.observe import worker_observer
from assay.pidfiles import pidfile
from assay.processors.barrier import BarrierProcessor
from assay.processors.bronze import BronzeProcessor
from assay.processors.gold import GoldProcessor
from assay.processors.plan import Plan, build_plan
from assay.processors.silver import SilverProcessor
from assay.reloading import ReloadingProcessor
from assay.settings import Settings, Unreachable
from assay.streams import keys as channels
from assay.streams.client import Client, connect, persists
from assay.streams.consumer import TRANSIENT, BatchResult, Consumer, Processor, RuntimeSettings
from assay.streams.keys import Keys
from assay.streams.tasks import cancel_until_done
from assay.streams.windows import WindowStore

log = structlog.get_logger("assay.runner")

LAYERS: dict[str, list[str]] = {
    "bronze": [channels.INGEST],
    "silver": [channels.BRONZE],
    "barrier": [channels.ACCOUNTED, channels.DEAD],
    "gold": [channels.WINDOWS],
    "monitor": [channels.WINDOWS],
}
"""Each layer and the channels its consumer group reads."""

GRACE_S = 30.0
"""A layer's grace after SIGTERM: the batch in hand is finished or, past it, cancelled."""
CLOSE_TIMEOUT_S = 5.0
"""What closing its connections may take after that (``Context.close``)."""
STOP_WITHIN_S = GRACE_S + CLOSE_TIMEOUT_S + 5.0
"""How long a supervisor waits for a layer it SIGTERMed before it SIGKILLs it: the layer's
grace, its close, and a margin to exit. Killing it at its own grace would race a layer that
keeps its promise (it stops at ``GRACE_S``) and make a clean stop look failed."""


@dataclass
class Context:
    """What a layer process holds: its compiled config and its connections."""

    plan: Plan
    redis: Client
    pool: asyncpg.Pool
    keys: Keys
    application_name: str = "assay"
    clock: Callable[[], float] = time.time

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Close the connections; a pool that cannot close cleanly in time (a server that
        died under it) is terminated, so a stopping process never hangs here; with no time
        (``timeout_s`` 0) it is terminated at once."""
        if timeout_s <= 0:
            self.pool.terminate()
        else:
            try:
                await asyncio.wait_for(self.pool.close(), timeout_s)
            except (TimeoutError, *TRANSIENT_PG) as exc:
                log.warning("pool_close_failed", error=f"{type(exc).__name__}: {exc}")
                self.pool.terminate()
        with contextlib.suppress(*TRANSIENT):
            await self.redis.aclose()

    async def migrate(self) -> None:
        """Apply the additive schema changes the config needs; one log line when anything
        changed. A change that could lose data raises ``MigrationError``, changing nothing."""
        async with self.pool.acquire() as conn:
            done = await migrate(conn, self.plan.schema, self.plan.shapes(),
                                 self.plan.views())
        if done.pending or done.views:
            log.info("schema_migrated", schema=self.plan.schema, changes=len(done.pending),
                     views=len(done.views))
            log.debug("schema_changes", changes=[c.line() for c in done.pending],
                      views=done.views)


def runtime_settings(plan: Plan) -> RuntimeSettings:
    p = plan.config.pipeline
    return RuntimeSettings(batch_size=p.batch_size, block_ms=p.block_ms,
                           max_deliveries=p.max_deliveries, claim_idle_ms=p.claim_idle_ms,
                           trim_every=p.trim_every, max_backlog_entries=p.max_backlog_entries)


async def open_context(config_dir: Path, redis_url: str, database_url: str,
                       key_prefix: str = "assay", *, migrate_schema: bool = True,
                       attempts: int | None = None, redis_cluster: bool | None = None,
                       wait_forever: bool = False) -> Context:
    """Load and compile the config, connect, warn about a Redis that keeps nothing, and
    (unless ``migrate_schema`` is false) apply the additive schema changes the config
    needs; a change that could lose data raises ``MigrationError`` and changes nothing.

    ``attempts`` (default ``ASSAY_CONNECT_ATTEMPTS``, 30) bounds the retries while a server is
    unreachable; then ``Unreachable`` names it. ``wait_forever`` (a layer process) waits for
    its servers however long they are down, unless ``ASSAY_CONNECT_ATTEMPTS`` is set.
    ``redis_cluster`` forces a cluster client or a plain one (``None``: ``ASSAY_REDIS_CLUSTER``,
    else ask the server).
    """
    plan = build_plan(load_config(config_dir))
    settings = Settings.from_env()
    tries = attempts or settings.connect_attempts or (None if wait_forever else 30)
    if redis_cluster is None:
        redis_cluster = settings.redis_cluster
    try:
        client = await connect(redis_url, cluster=redis_cluster, attempts=tries,
                               health_check_interval=30, client_name=f"assay-{key_prefix}")
    except TRANSIENT as exc:
        raise Unreachable(f"cannot reach Redis at {redact(redis_url)}: {exc}") from exc
    try:
        await warn_without_persistence(client, tries)
    except TRANSIENT as exc:
        await client.aclose()
        raise Unreachable(f"cannot reach Redis at {redact(redis_url)}: {exc}") from exc
    except BaseException:
        await client.aclose()
        raise
    application_name = f"assay:{key_prefix}"
    try:
        pool = await db_pool.connect(database_url, application_name=application_name,
                                     attempts=tries)
    except db_pool.TRANSIENT_PG as exc:
        await client.aclose()
        raise Unreachable(f"cannot reach PostgreSQL at {redact(database_url)}:"
                          f" {type(exc).__name__}: {exc}") from exc
    except (asyncpg.InvalidAuthorizationSpecificationError,
            asyncpg.InvalidCatalogNameError) as exc:
        await client.aclose()
        raise Unreachable(f"PostgreSQL at {redact(database_url)} refused the connection:"
                          f" {exc}") from exc
    except BaseException:
        await client.aclose()
        raise
    ctx = Context(plan, client, pool, Keys(key_prefix), application_name)
    if migrate_schema:
        try:
            await ctx.migrate()
        except MigrationError as exc:
            log.error("schema_mismatch", refused=[c.line() for c in exc.refused],
                      run="assay migrate --dry-run")
            await ctx.close()
            raise
        except BaseException:
            await ctx.close()
            raise
    return ctx


async def warn_without_persistence(client: Client, attempts: int | None = None
                                   ) -> None:
    """One structured warning when Redis would lose unprocessed entries on restart.

    This is the first thing a process asks Redis: while Redis is unreachable it retries
    with capped backoff (``attempts`` None: however long) instead of crash-looping.
    """
    delay = 0.1
    attempt = 0
    while True:
        attempt += 1
        try:
            kept = await persists(client)
            break
        except TRANSIENT as exc:
            if attempt == attempts:
                raise
            log.warning("redis_unreachable", attempt=attempt, error=str(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    if not kept:
        log.warning("redis_without_persistence",
                    detail="unprocessed entries and window state are lost if Redis restarts")


def make_processor(layer: str, ctx: Context, metrics: Metrics | None = None) -> Processor:
    if layer == "bronze":
        return BronzeProcessor(ctx.pool, ctx.plan, ctx.clock)
    if layer == "silver":
        return SilverProcessor(ctx.pool, ctx.plan, ctx.clock,
                               metrics.observe_latency if metrics is not None else None)
    if layer == "gold":
        return GoldProcessor(ctx.pool, ctx.plan, ctx.clock)
    if layer == "barrier":
        return BarrierProcessor(WindowStore(ctx.redis, ctx.keys), ctx.plan.config, ctx.clock)
    raise ValueError(f"unknown layer {layer!r}; known: {sorted(LAYERS)}")


def make_consumer(layer: str, ctx: Context, name: str | None = None,
                  on_batch: Callable[[BatchResult], object] | None = None,
                  metrics: Metrics | None = None, processor: Processor | None = None
                  ) -> Consumer:
    processor = processor or make_processor(layer, ctx, metrics)
    return Consumer(ctx.redis, ctx.keys, processor,
                    divisions=list(ctx.plan.config.divisions), read_channels=LAYERS[layer],
                    settings=runtime_settings(ctx.plan), name=name, on_batch=on_batch)


async def _tick_until(consumer: Consumer, tick: Callable[[], Awaitable[object]],
                      interval_s: float) -> None:
    """Periodic work of a layer (the barrier's timeouts) until the consumer stops."""
    while not consumer.stopping.is_set():
        try:
            await tick()
        except TRANSIENT as exc:
            log.warning("tick_failed", layer=consumer.layer, error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consumer.stopping.wait(), interval_s)


async def run_layer(layer: str, ctx: Context, *, burst: bool = False, grace_s: float = GRACE_S,
                    name: str | None = None, tick_interval_s: float = 1.0,
                    metrics_port: int | None = None, config_dir: Path | None = None,
                    pids: Path | None = None) -> int:
    """Run a layer until SIGTERM/SIGINT (or drained, with ``burst``); returns an exit code.

    With ``config_dir``, SIGHUP re-reads the config there and switches to it between
    batches (``assay.reloading``); with ``pids``, the process announces itself there for
    ``assay reload``.
    """
    loop = asyncio.get_running_loop()
    # Until the layer's own handler is in place, a SIGHUP must not end the process.
    loop.add_signal_handler(signal.SIGHUP, log.info, "config_reload_ignored_while_starting")
    try:
        with pidfile(pids, layer) if pids is not None else contextlib.nullcontext():
            return await _run_layer(layer, ctx, burst, grace_s, name, tick_interval_s,
                                    metrics_port, config_dir)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


async def _run_layer(layer: str, ctx: Context, burst: bool, grace_s: float, name: str | None,
                     tick_interval_s: float, metrics_port: int | None,
                     config_dir: Path | None) -> int:
    config = ctx.plan.config
    names = {k: d.name for k, d in config.divisions.items()}
    environment = environment_name(config.pipeline.environment)
    if layer == "monitor":
        return await _run_monitor(ctx, names, environment, burst, name, metrics_port, grace_s)
    metrics = Metrics()
    server = start_metrics_server(metrics_port, metrics.registry) if metrics_port else None
    observer = worker_observer(config.notifications, config.alerts, environment, names, metrics)
    processor = make_processor(layer, ctx, metrics)
    reloading = None
    if config_dir is not None:
        reloading = ReloadingProcessor(layer, ctx, config_dir, processor,
                                       lambda c: make_processor(layer, c, metrics),
                                       notifier=observer.notifier)
    consumer = make_consumer(layer, ctx, name, on_batch=observer, processor=reloading or processor)
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(consumer.run(burst=burst))
    ticker = None
    if hasattr(processor, "tick") and not burst:
        tick = (reloading or processor).tick
        ticker = asyncio.ensure_future(_tick_until(consumer, tick, tick_interval_s))
    reloads: set[asyncio.Future[bool]] = set()

    def on_hangup() -> None:
        if reloading is None:
            return
        log.info("config_reload_requested", layer=layer)
        future = asyncio.ensure_future(reloading.reload())
        reloads.add(future)
        future.add_done_callback(reloads.discard)

    def on_signal(sig: signal.Signals) -> None:
        log.info("shutdown_requested", layer=layer, signal=sig.name)
        consumer.stop()
        loop.call_later(grace_s, cancel_until_done, task)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    log.info("layer_started", layer=layer, consumer=consumer.name, streams=consumer.streams)
    try:
        await task
    except asyncio.CancelledError:
        log.warning("shutdown_grace_exceeded", layer=layer, grace_s=grace_s,
                    detail="unacked entries stay pending and are reclaimed")
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if ticker is not None:
            consumer.stop()
            await ticker
        await observer.close()
        if server is not None:
            server.close()
    await consumer.leave()
    log.info("layer_stopped", layer=layer, batches=consumer.batches,
             dead_lettered=consumer.dead_lettered)
    return 0


def _monitor_hangup() -> None:
    """The monitor reads its notification and alert settings at start only."""
    log.info("config_reload_deferred", layer="monitor",
             detail="the monitor applies notification and alert changes when restarted")


async def _run_monitor(ctx: Context, names: dict[str, str], environment: str, burst: bool,
                       name: str | None, metrics_port: int | None, grace_s: float) -> int:
    """The monitor: lag snapshots, alerts, metrics, and a notification per window outcome.

    SIGTERM ends it within ``grace_s`` whether or not the servers answer.
    """
    config = ctx.plan.config
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(serve(
        ctx.redis, ctx.keys, names, LAYERS, environment=environment,
        notifications=config.notifications, alerts=config.alerts,
        settings=runtime_settings(ctx.plan), stop=stop, burst=burst,
        metrics_port=metrics_port, name=name,
        gold=(ctx.pool, ctx.plan.schema) if config.gold.tables else None))

    def on_signal(sig: signal.Signals) -> None:
        log.info("shutdown_requested", layer="monitor", signal=sig.name)
        stop.set()
        loop.call_later(grace_s, cancel_until_done, task)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, _monitor_hangup)
    try:
        await task
    except asyncio.CancelledError:
        log.warning("shutdown_grace_exceeded", layer="monitor", grace_s=grace_s)
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    return 0
