"""Plain INSERT first, the upsert on a conflict (``db.insert``): the same rows either way."""

from __future__ import annotations

import asyncpg

from assay.db.insert import InsertFirst
from assay.runner import Context, make_consumer
from assay.streams import keys as channels
from assay.streams.producer import Producer, TableTarget
from tests.conftest import item_rows

INSERT = "INSERT INTO {t} (k, v) SELECT * FROM unnest($1::int[], $2::text[]) ORDER BY 1"


class Statements:
    """A plain insert and its upsert over a two-column table, through one InsertFirst."""

    def __init__(self, schema: str, patience: int = 2) -> None:
        self.insert = INSERT.format(t=f'"{schema}".t')
        self.upsert = f"{self.insert} ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
        self.first = InsertFirst(patience)

    @property
    def skip(self) -> int:
        return self.first.skip

    async def execute(self, conn: asyncpg.Connection, args: tuple[list[int], list[str]]
                      ) -> None:
        await self.first.run(conn, lambda: conn.execute(self.insert, *args),
                             lambda: conn.execute(self.upsert, *args))


async def table(pool: asyncpg.Pool, schema: str) -> dict[int, str]:
    return {r["k"]: r["v"] for r in await pool.fetch(f'SELECT k, v FROM "{schema}".t')}


async def test_new_keys_are_inserted_and_stored_ones_fall_back_to_the_upsert(
        pool: asyncpg.Pool, schema: str) -> None:
    await pool.execute(f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".t'
                       " (k int PRIMARY KEY, v text)")
    write = Statements(schema)
    async with pool.acquire() as conn, conn.transaction():
        await write.execute(conn, ([1, 2], ["a", "b"]))
    assert write.skip == 0  # the plain insert did it
    async with pool.acquire() as conn, conn.transaction():
        await write.execute(conn, ([2, 3], ["B", "c"]))  # 2 is stored already
        assert await conn.fetchval(f'SELECT count(*) FROM "{schema}".t') == 3  # still usable
    assert await table(pool, schema) == {1: "a", 2: "B", 3: "c"}
    assert write.skip == 2
    async with pool.acquire() as conn:
        for k in (4, 5):  # within the patience: straight to the upsert
            await write.execute(conn, ([k], ["x"]))
        assert write.skip == 0
        await write.execute(conn, ([3, 6], ["C", "y"]))  # tried plain again, conflicts again
    assert write.skip == 2
    assert await table(pool, schema) == {1: "a", 2: "B", 3: "C", 4: "x", 5: "x", 6: "y"}


async def test_a_redelivered_bronze_batch_with_new_rows_lands_each_row_once(
        ctx: Context) -> None:
    producer = Producer(ctx.redis, ctx.keys, chunk_size=40)
    target = TableTarget("east", "item", "w1")
    await producer.send_table(target, item_rows(60))
    await make_consumer("bronze", ctx).run(burst=True)
    table = f'"{ctx.plan.schema}"."bronze_item"'
    before = await ctx.pool.fetch(f'SELECT "_row", name FROM {table} ORDER BY "_row"')
    await ctx.redis.xgroup_setid(ctx.keys.stream("east", channels.INGEST),
                                 ctx.keys.group("bronze"), "0")  # deliver every entry again
    await producer.send_table(TableTarget("east", "item", "w2"), item_rows(30))
    await make_consumer("bronze", ctx).run(burst=True)
    rows = await ctx.pool.fetch(f'SELECT "_window", "_row", name FROM {table} ORDER BY 1, 2')
    assert len(rows) == 90
    assert [(r["_row"], r["name"]) for r in rows if r["_window"] == "w1"] == [
        (r["_row"], r["name"]) for r in before]
