"""Layer processes as the Procfile runs them: SIGTERM drains cleanly, SIGKILL loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from assay.runner import Context, make_consumer
from assay.streams import keys as channels
from assay.streams.consumer import RuntimeSettings
from assay.streams.producer import Producer, TableTarget
from tests.conftest import OpenContext, eventually, item_rows, write_config


@pytest.fixture
async def ctx(open_ctx: OpenContext, tmp_path: Path, schema: str) -> Context:
    return await open_ctx(write_config(tmp_path / "config", schema, batch_size=2))


async def start_layer(ctx: Context, config: Path, redis_url: str, database_url: str
                      ) -> asyncio.subprocess.Process:
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": ctx.keys.prefix, "ASSAY_LOG_LEVEL": "WARNING"}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "assay", "run", "bronze", "--config", str(config), env=env)


async def count(ctx: Context) -> int:
    return int(await ctx.pool.fetchval(f'SELECT count(*) FROM "{ctx.plan.schema}"."bronze_item"'))


async def pending(ctx: Context) -> int:
    stream = ctx.keys.stream("east", channels.INGEST)
    return int((await ctx.redis.xpending(stream, ctx.keys.group("bronze")))["pending"])


async def test_sigterm_finishes_the_batch_in_hand_and_exits_0(
        ctx: Context, tmp_path: Path, redis_url: str, database_url: str) -> None:
    await Producer(ctx.redis, ctx.keys, chunk_size=50).send_table(
        TableTarget("east", "item", "w1"), item_rows(20_000))
    process = await start_layer(ctx, tmp_path / "config", redis_url, database_url)

    async def started() -> bool:
        return await count(ctx) > 0

    await eventually(started)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == 0
    assert await pending(ctx) == 0
    landed = await count(ctx)
    assert 0 < landed < 20_000
    await make_consumer("bronze", ctx).run(burst=True)
    assert await count(ctx) == 20_000


async def test_sigkill_loses_nothing(
        ctx: Context, tmp_path: Path, redis_url: str, database_url: str) -> None:
    await Producer(ctx.redis, ctx.keys, chunk_size=50).send_table(
        TableTarget("east", "item", "w1"), item_rows(20_000))
    process = await start_layer(ctx, tmp_path / "config", redis_url, database_url)

    async def started() -> bool:
        return await count(ctx) > 0

    await eventually(started)
    process.kill()
    await process.wait()
    rescuer = make_consumer("bronze", ctx, name="rescuer")
    rescuer.settings = RuntimeSettings(batch_size=2, block_ms=50, claim_idle_ms=0)
    await rescuer.run(burst=True)
    assert await count(ctx) == 20_000
    assert await pending(ctx) == 0
