"""Backpressure: writers wait on what readers have left to do, never on acked entries."""

from __future__ import annotations

import asyncio

from assay.runner import Context, make_consumer
from assay.streams import keys as channels
from assay.streams.backlog import backlog
from assay.streams.consumer import RuntimeSettings
from assay.streams.producer import Producer, TableTarget
from tests.conftest import item_rows


async def test_backlog_counts_unread_and_unacked_not_acked(ctx: Context) -> None:
    stream = ctx.keys.stream("east", channels.INGEST)
    assert await backlog(ctx.redis, stream) == 0  # no stream yet
    for i in range(10):
        await ctx.redis.xadd(stream, {"json": str(i)})
    assert await backlog(ctx.redis, stream) is None  # nobody reads it
    await ctx.redis.xgroup_create(stream, "g", id="0")
    read = await ctx.redis.xreadgroup("g", "c", {stream: ">"}, count=4)
    await ctx.redis.xack(stream, "g", *[i for i, _ in read[0][1][:3]])
    assert await backlog(ctx.redis, stream) == 6 + 1  # 6 unread, 1 read but not acked
    await ctx.redis.xdel(stream, read[0][1][0][0])  # Redis 7.0 then reports no lag
    assert await backlog(ctx.redis, stream) == 7


async def test_producer_does_not_wait_on_acked_entries(ctx: Context) -> None:
    producer = Producer(ctx.redis, ctx.keys, chunk_size=10, max_backlog=2)
    await producer.send_table(TableTarget("east", "item", "w1"), item_rows(20))
    await make_consumer("bronze", ctx).run(burst=True)  # all acked, none trimmed yet
    assert await ctx.redis.xlen(ctx.keys.stream("east", channels.INGEST)) > 2
    await asyncio.wait_for(
        producer.send_table(TableTarget("east", "item", "w2"), item_rows(20)), 10)


async def test_a_layer_waits_while_the_next_one_is_behind(ctx: Context) -> None:
    await Producer(ctx.redis, ctx.keys, chunk_size=10).send_table(
        TableTarget("east", "item", "w1"), item_rows(50))
    bronze_stream = ctx.keys.stream("east", channels.BRONZE)
    await ctx.redis.xgroup_create(bronze_stream, ctx.keys.group("silver"), id="0",
                                  mkstream=True)
    consumer = make_consumer("bronze", ctx)
    consumer.settings = RuntimeSettings(batch_size=10, block_ms=50, max_backlog_entries=1)
    waits: list[int | None] = []

    async def silver_catches_up(_: float) -> None:
        waits.append(await backlog(ctx.redis, bronze_stream))
        await make_consumer("silver", ctx).run(burst=True)

    handled: list[int] = []

    def stop_when_drained(result: object) -> None:
        handled.append(result.items)  # type: ignore[attr-defined]
        if sum(handled) == 51:  # 50 records and the table-end
            consumer.stop()

    consumer.sleep = silver_catches_up
    consumer.on_batch = stop_when_drained
    await asyncio.wait_for(consumer.run(), 30)
    assert waits and all(w is not None and w > 1 for w in waits)
