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
from assay.db.schema import migrate
from assay.ops.metrics import Metrics, start_metrics_server
from assay.ops.monitor import serve
from assay.ops.notify import environment_name
from assay.ops.observe import worker_observer
from assay.processors.barrier import BarrierProcessor
from assay.processors.bronze import BronzeProcessor
from assay.processors.gold import GoldProcessor
from assay.processors.plan import Plan, build_plan
from assay.processors.silver import SilverProcessor
from assay.streams import keys as channels
from assay.streams.client import Client, connect, persists
from assay.streams.consumer import TRANSIENT, BatchResult, Consumer, Processor, RuntimeSettings
from assay.streams.keys import Keys
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


@dataclass
class Context:
    """What a layer process holds: its compiled config and its connections."""

    plan: Plan
    redis: Client
    pool: asyncpg.Pool
    keys: Keys
    application_name: str = "assay"
    clock: Callable[[], float] = time.time

    async def close(self) -> None:
        await self.pool.close()
        await self.redis.aclose()


def runtime_settings(plan: Plan) -> RuntimeSettings:
    p = plan.config.pipeline
    return RuntimeSettings(batch_size=p.batch_size, block_ms=p.block_ms,
                           max_deliveries=p.max_deliveries, claim_idle_ms=p.claim_idle_ms,
                           trim_every=p.trim_every, max_backlog_entries=p.max_backlog_entries)


async def open_context(config_dir: Path, redis_url: str, database_url: str,
                       key_prefix: str = "assay", redis_cluster: bool | None = None) -> Context:
    """Load and compile the config, connect, warn about a Redis that keeps nothing, migrate.

    ``redis_cluster`` forces a cluster client or a plain one (``None``: ask the server).
    """
    plan = build_plan(load_config(config_dir))
    client = await connect(redis_url, cluster=redis_cluster, health_check_interval=30,
                           client_name=f"assay-{key_prefix}")
    try:
        await warn_without_persistence(client)
    except BaseException:
        await client.aclose()
        raise
    application_name = f"assay:{key_prefix}"
    try:
        pool = await db_pool.connect(database_url, application_name=application_name)
    except BaseException:
        await client.aclose()
        raise
    try:
        async with pool.acquire() as conn:
            changes = await migrate(conn, plan.schema, plan.shapes(), plan.gold.views)
    except BaseException:
        await pool.close()
        await client.aclose()
        raise
    if changes:
        log.info("schema_migrated", changes=changes)
    return Context(plan, client, pool, Keys(key_prefix), application_name)


async def warn_without_persistence(client: Client, attempts: int = 30) -> None:
    """One structured warning when Redis would lose unprocessed entries on restart.

    This is the first thing a process asks Redis: while Redis is unreachable it retries
    with capped backoff instead of crash-looping.
    """
    delay = 0.1
    for attempt in range(1, attempts + 1):
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
                  metrics: Metrics | None = None) -> Consumer:
    return Consumer(ctx.redis, ctx.keys, make_processor(layer, ctx, metrics),
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


async def run_layer(layer: str, ctx: Context, *, burst: bool = False, grace_s: float = 30.0,
                    name: str | None = None, tick_interval_s: float = 1.0,
                    metrics_port: int | None = None) -> int:
    """Run a layer until SIGTERM/SIGINT (or drained, with ``burst``); returns an exit code."""
    config = ctx.plan.config
    names = {k: d.name for k, d in config.divisions.items()}
    environment = environment_name(config.pipeline.environment)
    if layer == "monitor":
        return await _run_monitor(ctx, names, environment, burst, name, metrics_port)
    metrics = Metrics()
    server = start_metrics_server(metrics_port, metrics.registry) if metrics_port else None
    observer = worker_observer(config.notifications, config.alerts, environment, names, metrics)
    consumer = make_consumer(layer, ctx, name, on_batch=observer, metrics=metrics)
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(consumer.run(burst=burst))
    ticker = None
    tick = getattr(consumer.processor, "tick", None)
    if tick is not None and not burst:
        ticker = asyncio.ensure_future(_tick_until(consumer, tick, tick_interval_s))

    def on_signal(sig: signal.Signals) -> None:
        log.info("shutdown_requested", layer=layer, signal=sig.name)
        consumer.stop()
        loop.call_later(grace_s, task.cancel)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    log.info("layer_started", layer=layer, consumer=consumer.name, streams=consumer.streams)
    try:
        await task
    except asyncio.CancelledError:
        log.warning("shutdown_grace_exceeded", layer=layer, grace_s=grace_s,
                    detail="unacked entries stay pending and are reclaimed")
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
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


async def _run_monitor(ctx: Context, names: dict[str, str], environment: str, burst: bool,
                       name: str | None, metrics_port: int | None) -> int:
    """The monitor: lag snapshots, alerts, metrics, and a notification per window outcome."""
    config = ctx.plan.config
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await serve(ctx.redis, ctx.keys, names, LAYERS, environment=environment,
                    notifications=config.notifications, alerts=config.alerts,
                    settings=runtime_settings(ctx.plan), stop=stop, burst=burst,
                    metrics_port=metrics_port, name=name,
                    gold=(ctx.pool, ctx.plan.schema) if config.gold.tables else None)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0
