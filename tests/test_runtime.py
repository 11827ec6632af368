"""The consumer-group runtime against real Redis and PostgreSQL, through the Bronze layer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from assay.contracts.errors import TransientError
from assay.contracts.messages import (
    DeadLetter,
    LandedBatch,
    Record,
    RecordBatch,
    TableEnd,
    msgpack_decoder,
)
from assay.processors.normalise import NUL
from assay.runner import Context, make_consumer, open_context
from assay.streams import keys as channels
from assay.streams.codec import Item, encode
from assay.streams.consumer import Consumer, Output, RuntimeSettings
from assay.streams.keys import Keys
from assay.streams.producer import Producer, TableTarget
from tests.conftest import item_rows


async def produce(ctx: Context, n: int, division: str = "east", window: str = "2024-01",
                  rows: list[dict[str, object]] | None = None) -> None:
    producer = Producer(ctx.redis, ctx.keys, chunk_size=100)
    await producer.send_table(TableTarget(division, "item", window), rows or item_rows(n))


async def bronze_count(ctx: Context) -> int:
    return int(await ctx.pool.fetchval(f'SELECT count(*) FROM "{ctx.plan.schema}"."bronze_item"'))


async def entries(ctx: Context, division: str, channel: str) -> list[object]:
    stream = ctx.keys.stream(division, channel)
    return [msgpack_decoder.decode(f[b"msgpack"])
            for _, f in await ctx.redis.xrange(stream)]


async def pending(ctx: Context, division: str = "east", layer: str = "bronze") -> int:
    stream = ctx.keys.stream(division, channels.INGEST)
    return int((await ctx.redis.xpending(stream, ctx.keys.group(layer)))["pending"])


async def test_group_creation_is_idempotent(ctx: Context) -> None:
    consumer = make_consumer("bronze", ctx)
    await consumer.ensure_groups()
    await consumer.ensure_groups()
    groups = await ctx.redis.xinfo_groups(ctx.keys.stream("east", channels.INGEST))
    assert [g["name"] for g in groups] == [ctx.keys.group("bronze").encode()]


async def test_batches_are_landed_forwarded_and_acked(ctx: Context) -> None:
    await produce(ctx, 1200)
    await make_consumer("bronze", ctx).run(burst=True)
    assert await bronze_count(ctx) == 1200
    assert await pending(ctx) == 0
    forwarded = await entries(ctx, "east", channels.BRONZE)
    landed = [x for m in forwarded if isinstance(m, LandedBatch) for x in m.items]
    assert sorted(x.record.row for x in landed) == list(range(1, 1201))
    assert [m.rows for m in forwarded if isinstance(m, TableEnd)] == [1200]


async def test_formula_outputs_land_typed(ctx: Context) -> None:
    await produce(ctx, 2)
    await make_consumer("bronze", ctx).run(burst=True)
    rows = await ctx.pool.fetch(
        f'SELECT "id", "weight_kg" FROM "{ctx.plan.schema}"."bronze_item" ORDER BY "_row"')
    assert [str(r["weight_kg"]) for r in rows] == ["1.133980925", "0.0025"]


async def test_one_poison_record_among_500(ctx: Context) -> None:
    rows = item_rows(500)
    rows[321]["name"] = "bad\x00name"
    await produce(ctx, 500, rows=rows)
    consumer = make_consumer("bronze", ctx)
    await consumer.run(burst=True)
    assert await bronze_count(ctx) == 499
    dead = await entries(ctx, "east", channels.DEAD)
    assert len(dead) == 1
    letter = dead[0]
    assert isinstance(letter, DeadLetter)
    assert letter.row == 322 and letter.table == "item" and letter.layer == "bronze"
    assert "NUL character" in letter.error  # refused at the door
    assert letter.deliveries == 1
    assert await pending(ctx) == 0


async def test_retried_table_does_not_duplicate_rows(ctx: Context) -> None:
    await produce(ctx, 300)
    await produce(ctx, 300)  # the producer's retry re-sends the same row numbers
    await make_consumer("bronze", ctx).run(burst=True)
    assert await bronze_count(ctx) == 300


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


class DiesAfterCommit:
    """Commits like Bronze, then dies before the loop can ack (as SIGKILL would)."""

    layer = "bronze"

    def __init__(self, inner: object) -> None:
        self.inner = inner

    async def process(self, items: Sequence[Item]) -> Output:
        await self.inner.process(items)  # type: ignore[attr-defined]
        raise Killed


async def test_killed_consumer_entries_are_reclaimed_once(ctx: Context) -> None:
    await produce(ctx, 250)
    doomed = make_consumer("bronze", ctx, name="doomed")
    doomed.processor = DiesAfterCommit(doomed.processor)
    with pytest.raises(Killed):
        await doomed.run(burst=True)
    assert await pending(ctx) > 0
    rescuer = make_consumer("bronze", ctx, name="rescuer")
    rescuer.settings = RuntimeSettings(batch_size=100, block_ms=50, claim_idle_ms=0)
    await rescuer.run(burst=True)
    assert await bronze_count(ctx) == 250
    assert await pending(ctx) == 0
    forwarded = await entries(ctx, "east", channels.BRONZE)
    rows = [x.record.row for m in forwarded if isinstance(m, LandedBatch) for x in m.items]
    assert sorted(set(rows)) == list(range(1, 251))


class FailsOn:
    """Fails every time it sees one given row; everything else is fine."""

    layer = "bronze"

    def __init__(self, row: int) -> None:
        self.row = row
        self.attempts = 0

    async def process(self, items: Sequence[Item]) -> Output:
        if any(getattr(i.message, "row", None) == self.row for i in items):
            self.attempts += 1
            raise RuntimeError(f"row {self.row} is cursed")
        return Output()


async def test_dead_letter_after_max_deliveries(ctx: Context) -> None:
    await produce(ctx, 10)
    consumer = make_consumer("bronze", ctx)
    failing = FailsOn(7)
    consumer.processor = failing
    await consumer.run(burst=True)
    dead = await entries(ctx, "east", channels.DEAD)
    assert len(dead) == 1 and isinstance(dead[0], DeadLetter)
    assert dead[0].row == 7 and dead[0].deliveries == 3
    assert "cursed" in dead[0].error
    assert await pending(ctx) == 0


async def test_redelivered_entry_past_max_is_dead_lettered(ctx: Context) -> None:
    await produce(ctx, 10)
    stream = ctx.keys.stream("east", channels.INGEST)
    group = ctx.keys.group("bronze")
    consumer = make_consumer("bronze", ctx, name="again")
    await consumer.ensure_groups()
    await ctx.redis.xreadgroup(group, "again", {stream: ">"}, count=1)
    failing = FailsOn(3)
    consumer.processor = failing
    for _ in range(3):  # three crashes: each restart re-reads its own pending entry
        await ctx.redis.xreadgroup(group, "again", {stream: "0"}, count=1)
    await consumer.run(burst=True)
    dead = await entries(ctx, "east", channels.DEAD)
    # Delivered past the limit without an ack: a consumer died on it each time, so the
    # entry is dead-lettered unprocessed (all its rows, with the reason) and the loop ends.
    assert len(dead) == 10 and failing.attempts == 0
    assert all("without an ack" in d.error for d in dead)  # type: ignore[attr-defined]
    assert await pending(ctx) == 0


async def test_two_consumers_share_a_group(ctx: Context) -> None:
    # Each table is sent twice (a producer retry), so both consumers upsert the same keys.
    for _ in range(2):
        await asyncio.gather(produce(ctx, 1000, "east"), produce(ctx, 1000, "west"))
    first, second = make_consumer("bronze", ctx, "one"), make_consumer("bronze", ctx, "two")
    first.settings = second.settings = RuntimeSettings(batch_size=3, block_ms=50)
    await asyncio.gather(first.run(burst=True), second.run(burst=True))
    assert await bronze_count(ctx) == 2000
    assert first.batches > 0 and second.batches > 0
    for division in ("east", "west"):
        forwarded = await entries(ctx, division, channels.BRONZE)
        rows = [x.record.row for m in forwarded if isinstance(m, LandedBatch) for x in m.items]
        assert sorted(rows) == sorted(list(range(1, 1001)) * 2)  # each entry handled once


async def test_undecodable_and_unknown_input_is_dead_lettered(ctx: Context) -> None:
    stream = ctx.keys.stream("east", channels.INGEST)
    good = {"type": "record", "division": "east", "table": "item", "window": "w", "row": 1,
            "payload": {"id": "1", "name": "raw xadd", "qty": "1", "weight": "1", "unit": "LB"}}
    await ctx.redis.xadd(stream, {"json": msgspec.json.encode(good)})
    await ctx.redis.xadd(stream, {"json": b"{not json"})
    await ctx.redis.xadd(stream, {"json": msgspec.json.encode({**good, "table": "nope"})})
    await ctx.redis.xadd(stream, {"json": msgspec.json.encode({**good, "division": "west"})})
    await ctx.redis.xadd(stream, {"something": b"else"})
    await make_consumer("bronze", ctx).run(burst=True)
    assert await bronze_count(ctx) == 1
    errors = [d.error for d in await entries(ctx, "east", channels.DEAD)]  # type: ignore[attr-defined]
    assert len(errors) == 4
    for expected in ("invalid message", "unknown table 'nope'", "another division", "neither"):
        assert sum(expected in e for e in errors) == 1, expected
    assert await pending(ctx) == 0


async def behind_a_laggard(ctx: Context) -> tuple[Consumer, str, int]:
    """Bronze has processed 500 records; a second group, "laggard", has read nothing yet.
    Returns Bronze's consumer, the stream and its length."""
    await produce(ctx, 500)
    stream = ctx.keys.stream("east", channels.INGEST)
    consumer = make_consumer("bronze", ctx)
    await consumer.ensure_groups()
    await ctx.redis.xgroup_create(stream, "laggard", id="0")
    await consumer.run(burst=True)
    return consumer, stream, await ctx.redis.xlen(stream)


async def test_trim_keeps_what_a_group_has_not_processed(ctx: Context) -> None:
    consumer, stream, length = await behind_a_laggard(ctx)
    assert await consumer.trim(stream) == 0  # the laggard group has read nothing
    await ctx.redis.xreadgroup("laggard", "l", {stream: ">"}, count=2)
    assert await consumer.trim(stream) == 0  # read but not acked
    first = (await ctx.redis.xrange(stream, count=1))[0][0]
    await ctx.redis.xack(stream, "laggard", first)
    assert await consumer.trim(stream) == 1
    assert await ctx.redis.xlen(stream) == length - 1


async def test_trim_keeps_what_a_group_acks_while_it_is_being_asked(ctx: Context) -> None:
    # Seen in a demo run: the windows stream feeds Gold (slow) and the monitor (fast). Gold
    # acked its one pending entry between the monitor's XINFO GROUPS and XPENDING, and the
    # trim then went by the monitor alone, deleting events Gold had not read yet.
    consumer, stream, length = await behind_a_laggard(ctx)
    assert length > 2
    [(_, [(first, _)])] = await ctx.redis.xreadgroup("laggard", "l", {stream: ">"}, count=1)
    asked = ctx.redis.xpending

    async def acked_meanwhile(name: str, groupname: str) -> object:
        await ctx.redis.xack(stream, "laggard", first)  # the laggard finishes just now
        return await asked(name, groupname)

    ctx.redis.xpending = acked_meanwhile  # type: ignore[method-assign]
    assert await consumer.trim(stream) == 1  # only the entry the laggard acked
    [(_, unread)] = await ctx.redis.xreadgroup("laggard", "l", {stream: ">"})
    assert len(unread) == length - 1


async def test_multi_key_commands_stay_in_one_slot(ctx: Context) -> None:
    keys: Keys = ctx.keys
    for division in ("east", "west", "north_america"):
        slots = {key_slot(keys.stream(division, c).encode()) for c in channels.CHANNELS}
        for state in ("windows", "open", "w:2024-01", "rows:2024-01:item",
                      "failed:2024-01:item", "restated:2024-01:item"):
            slots.add(key_slot(keys.state(division, state).encode()))  # barrier Lua keys
        assert len(slots) == 1
    seen: list[set[int]] = []
    original = ctx.redis.pipeline

    def recording_pipeline(*args: object, **kwargs: object) -> object:
        pipe = original(*args, **kwargs)
        execute = pipe.execute

        async def checked_execute(*a: object, **kw: object) -> object:
            seen.append({key_slot(_key(c).encode()) for c in pipe.command_stack if _key(c)})
            return await execute(*a, **kw)

        pipe.execute = checked_execute  # type: ignore[method-assign]
        return pipe

    ctx.redis.pipeline = recording_pipeline  # type: ignore[method-assign]
    rows = item_rows(50)
    rows[3]["name"] = "\x00"
    await produce(ctx, 50, rows=rows)
    await make_consumer("bronze", ctx).run(burst=True)
    assert seen and all(len(s) == 1 for s in seen)


def _key(command: object) -> str:
    args = command[0]  # type: ignore[index]
    name = str(args[0]).upper()
    if name in ("XADD", "XACK", "XTRIM", "XLEN"):
        value = args[1]
        return value.decode() if isinstance(value, bytes) else str(value)
    return ""


async def test_consumer_settings_come_from_config(ctx: Context) -> None:
    consumer = make_consumer("bronze", ctx)
    assert isinstance(consumer, Consumer)
    assert consumer.settings.batch_size == 100


class FlakyDatabase:
    """Loses its connection on the first two attempts, then works."""

    layer = "bronze"

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.failures = 2

    async def process(self, items: Sequence[Item]) -> Output:
        if self.failures:
            self.failures -= 1
            raise TransientError("connection lost")
        return await self.inner.process(items)  # type: ignore[attr-defined,no-any-return]


async def test_transient_errors_retry_the_batch_with_backoff(ctx: Context) -> None:
    await produce(ctx, 120)
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    consumer = make_consumer("bronze", ctx)
    consumer.sleep = fake_sleep
    consumer.processor = FlakyDatabase(consumer.processor)
    await consumer.run(burst=True)
    assert await bronze_count(ctx) == 120
    assert await entries(ctx, "east", channels.DEAD) == []
    assert waits == [0.2, 0.4]


async def test_lost_postgres_connections_are_recovered(ctx: Context, pool: asyncpg.Pool) -> None:
    await produce(ctx, 120)
    held = [await ctx.pool.acquire() for _ in range(3)]
    for conn in held:
        await ctx.pool.release(conn)
    killed = await pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = $1", ctx.application_name)
    assert killed == 3
    consumer = make_consumer("bronze", ctx)
    await consumer.run(burst=True)
    assert await bronze_count(ctx) == 120
    assert await entries(ctx, "east", channels.DEAD) == []


async def test_oversized_payload_is_dead_lettered(tmp_path: Path, schema: str, redis_url: str,
                                                  database_url: str, prefix: str,
                                                  redis: aioredis.Redis, pool: object) -> None:
    from tests.conftest import write_config

    folder = write_config(tmp_path / "small", schema, max_payload_bytes=300)
    context = await open_context(folder, redis_url, database_url, prefix)
    try:
        rows = item_rows(3)
        rows[1]["name"] = "x" * 400
        await produce(context, 3, rows=rows)
        await make_consumer("bronze", context).run(burst=True)
        assert await bronze_count(context) == 2
        [letter] = await entries(context, "east", channels.DEAD)
        assert "exceeds max_payload_bytes=300" in letter.error  # type: ignore[attr-defined]
    finally:
        await context.close()


class CutsRedisAfterCommit:
    """Commits in PostgreSQL, then every Redis connection of the layer is killed."""

    layer = "bronze"

    def __init__(self, inner: object, admin: aioredis.Redis, name: str) -> None:
        self.inner, self.admin, self.name, self.cuts = inner, admin, name, 0

    async def process(self, items: Sequence[Item]) -> Output:
        output: Output = await self.inner.process(items)  # type: ignore[attr-defined]
        if self.cuts == 0:
            clients = await self.admin.client_list()
            for client in clients:
                if client.get("name") == self.name:
                    await self.admin.client_kill_filter(_id=client["id"])
                    self.cuts += 1
        return output


async def test_lost_redis_connections_are_retried_without_losing_acks(
        ctx: Context, redis: aioredis.Redis) -> None:
    await produce(ctx, 300)
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    consumer = make_consumer("bronze", ctx)
    consumer.sleep = fake_sleep
    cutter = CutsRedisAfterCommit(consumer.processor, redis, f"assay-{ctx.keys.prefix}")
    consumer.processor = cutter
    await consumer.run(burst=True)
    assert cutter.cuts >= 1
    assert await bronze_count(ctx) == 300
    assert await pending(ctx) == 0
    forwarded = await entries(ctx, "east", channels.BRONZE)
    rows = [x.record.row for m in forwarded if isinstance(m, LandedBatch) for x in m.items]
    assert sorted(set(rows)) == list(range(1, 301))


async def test_batches_stay_near_batch_size_when_entry_sizes_mix(ctx: Context) -> None:
    stream = ctx.keys.stream("east", channels.INGEST)
    row = 0
    for _ in range(30):  # an entry of 100 records, then ten single-record entries
        batch = []
        for _ in range(100):
            row += 1
            batch.append(Record(division="east", table="item", window="w", row=row,
                                payload=item_rows(1, row)[0]))
        await ctx.redis.xadd(stream, encode(RecordBatch(records=batch)))
        for _ in range(10):
            row += 1
            await ctx.redis.xadd(stream, encode(Record(division="east", table="item", window="w",
                                                       row=row, payload=item_rows(1, row)[0])))
    sizes: list[int] = []
    consumer = make_consumer("bronze", ctx)
    consumer.on_batch = lambda result: sizes.append(result.items)
    await consumer.run(burst=True)
    assert await bronze_count(ctx) == row
    assert max(sizes) <= 2 * 100  # batch_size is 100 in this config


async def test_a_batch_postgresql_refuses_for_a_nul_lands_without_those_records(
        ctx: Context) -> None:
    """Bronze stores every text of a record (raw columns, unknown fields in `_extra`, window,
    seq; a quarantined record's payload): a NUL in any of them makes PostgreSQL refuse the
    batch, and Bronze lands it again without the records that hold one."""
    rows = item_rows(7)

    def item(i: int, window: str = "2024-01", seq: str | None = None, **changes: str) -> Item:
        record = Record(division="east", table="item", window=window, row=i,
                        payload={**rows[i - 1], **changes}, seq=seq)
        return Item(ctx.keys.stream("east", channels.INGEST), "9-0", i, record, 1)

    bad = [item(2, name="a\x00"), item(3, window="w\x00"), item(4, seq="s\x00"),
           item(5, **{"other\x00": "1"}), item(6, unit="L\x00B")]
    out = await make_consumer("bronze", ctx).processor.process([item(1), *bad, item(7)])
    assert [(i, reason) for i, reason in out.rejected] == [(b, NUL) for b in bad]
    assert (out.processed, out.quarantined) == (2, 0)
    landed = await ctx.pool.fetch(f'SELECT _row FROM "{ctx.plan.schema}"."bronze_item"')
    assert sorted(r["_row"] for r in landed) == [1, 7]
    assert await ctx.pool.fetchval(f'SELECT count(*) FROM "{ctx.plan.schema}"."quarantine"') == 0
