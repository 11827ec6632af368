"""Server faults: every server error is transient, every wait ends on a stop or a deadline."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import urlparse

import asyncpg
import pytest
import redis.asyncio as aioredis

from assay.contracts.errors import TransientError
from assay.db.pool import transaction
from assay.runner import Context, make_consumer
from assay.streams import keys as channels
from assay.streams.codec import Item
from assay.streams.consumer import Output, RuntimeSettings
from assay.streams.producer import Producer, ProducerTimeout, TableTarget
from tests.conftest import eventually, item_rows, write_config
from tests.proxy import Proxy, through


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[Proxy]:
    url = urlparse(redis_url)
    proxy = await Proxy(url.hostname or "127.0.0.1", url.port or 6379).start()
    yield proxy
    await proxy.cut()


class LosesItsServer:
    """Bronze whose server dies mid-transaction the first ``failures`` times: asyncpg
    then raises its internal-state error (``cannot switch to state``)."""

    layer = "bronze"

    def __init__(self, inner: object, pool: asyncpg.Pool, failures: int) -> None:
        self.inner = inner
        self.pool = pool
        self.failures = failures

    async def process(self, items: Sequence[Item]) -> Output:
        if self.failures:
            self.failures -= 1
            async with transaction(self.pool):
                raise asyncpg.exceptions.InternalClientError(
                    "cannot switch to state 15; another operation (2) is in progress")
        return await self.inner.process(items)  # type: ignore[attr-defined,no-any-return]


async def test_asyncpg_internal_state_errors_are_transient(ctx: Context) -> None:
    await Producer(ctx.redis, ctx.keys).send_table(TableTarget("east", "item", "w"),
                                                   item_rows(40))
    consumer = make_consumer("bronze", ctx)
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    consumer.sleep = no_wait
    consumer.processor = LosesItsServer(consumer.processor, ctx.pool, failures=6)
    await consumer.run(burst=True)
    # Retried as a whole batch with backoff: never split, never dead-lettered.
    assert await ctx.redis.xlen(ctx.keys.stream("east", channels.DEAD)) == 0
    assert len(waits) == 6
    count = await ctx.pool.fetchval(f'SELECT count(*) FROM "{ctx.plan.schema}"."bronze_item"')
    assert count == 40


async def test_the_transaction_helper_names_internal_state_errors_transient(
        ctx: Context) -> None:
    with pytest.raises(TransientError, match="cannot switch to state"):
        async with transaction(ctx.pool):
            raise asyncpg.exceptions.InternalClientError("cannot switch to state 15")


async def test_a_stop_ends_the_wait_for_a_server_that_is_down(
        ctx: Context, redis_url: str, redis_proxy: Proxy) -> None:
    client = aioredis.from_url(through(redis_url, redis_proxy))
    consumer = make_consumer("bronze", ctx)
    consumer.redis = client
    consumer.settings = RuntimeSettings(block_ms=50, backoff_start_s=0.05, backoff_max_s=0.2)
    await redis_proxy.cut()
    retried = asyncio.Event()

    async def noting_sleep(seconds: float) -> None:
        retried.set()
        await asyncio.sleep(seconds)

    consumer.sleep = noting_sleep
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(retried.wait(), 30)
    consumer.stop()
    await asyncio.wait_for(task, 30)  # the old loop retried forever: this timed out
    await client.aclose()


async def test_monitor_ends_on_sigterm_while_redis_is_down(
        ctx: Context, tmp_path: Path, redis_url: str, database_url: str,
        redis_proxy: Proxy) -> None:
    config = write_config(tmp_path / "config", ctx.plan.schema)
    env = {**os.environ, "REDIS_URL": through(redis_url, redis_proxy),
           "DATABASE_URL": database_url, "ASSAY_KEY_PREFIX": ctx.keys.prefix,
           "ASSAY_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "assay", "run", "monitor", "--config", str(config),
        "--name", "watch", env=env, stderr=subprocess.DEVNULL)
    try:
        async def announced() -> bool:
            return bool(await ctx.redis.exists(ctx.keys.alive("monitor", "watch")))

        await eventually(announced)
        await redis_proxy.cut()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 20)  # the old monitor ran on for good
        assert code == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_producer_waits_out_an_outage(ctx: Context, redis_url: str,
                                            redis_proxy: Proxy) -> None:
    client = aioredis.from_url(through(redis_url, redis_proxy))
    waited = asyncio.Event()

    async def outage_sleep(seconds: float) -> None:
        waited.set()
        await asyncio.sleep(0.01)

    producer = Producer(client, ctx.keys, chunk_size=10, retries=None, sleep=outage_sleep)
    await redis_proxy.cut()
    send = asyncio.create_task(producer.send_table(TableTarget("east", "item", "w"),
                                                   item_rows(30)))
    await asyncio.wait_for(waited.wait(), 30)
    assert not send.done()
    await redis_proxy.restore()
    assert await asyncio.wait_for(send, 30) == 30
    assert await ctx.redis.xlen(ctx.keys.stream("east", channels.INGEST)) == 4
    await client.aclose()


async def test_producer_gives_up_waiting_for_room_at_its_deadline(ctx: Context) -> None:
    stream = ctx.keys.stream("east", channels.INGEST)
    await ctx.redis.xgroup_create(stream, ctx.keys.group("bronze"), id="0", mkstream=True)
    now = [0.0]

    async def advance(seconds: float) -> None:
        now[0] += seconds

    producer = Producer(ctx.redis, ctx.keys, chunk_size=1, max_backlog=2, retries=None,
                        deadline=5.0, sleep=advance, clock=lambda: now[0])
    with pytest.raises(ProducerTimeout, match="backlog room"):
        await producer.send_table(TableTarget("east", "item", "w"), item_rows(10))
    assert now[0] >= 5.0


async def test_a_layer_waiting_for_redis_at_start_ends_on_sigterm(
        ctx: Context, tmp_path: Path, redis_url: str, database_url: str,
        redis_proxy: Proxy) -> None:
    config = write_config(tmp_path / "config", ctx.plan.schema)
    await redis_proxy.cut()
    env = {**os.environ, "REDIS_URL": through(redis_url, redis_proxy),
           "DATABASE_URL": database_url, "ASSAY_KEY_PREFIX": ctx.keys.prefix,
           "ASSAY_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "assay", "run", "bronze", "--config", str(config), env=env,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stderr is not None
        while b"redis_unreachable" not in (line := await process.stderr.readline()):
            assert line, "the layer ended before it waited for Redis"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0  # was -15: killed mid-start
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
