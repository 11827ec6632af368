"""Silver against real servers: normalisation, validation, newest-wins upserts, accounting."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from assay.contracts.messages import (
    Accounted,
    DeadLetter,
    Landed,
    Record,
    TableEnd,
    msgpack_decoder,
)
from assay.processors.normalise import NUL
from assay.processors.silver import SilverProcessor
from assay.runner import Context, make_consumer, open_context
from assay.streams import keys as channels
from assay.streams.codec import Item
from assay.streams.producer import Producer, TableTarget
from tests.conftest import OpenContext

CUSTOMER: dict[str, Any] = {
    "columns": {"id": "integer", "email": "text", "name": "text", "country": "text",
                "credit": "number", "updated": "timestamp"},
    "key": ["id"],
    "sequence": "updated",
    "timezone": "Europe/Berlin",
    "normalise": {"email": {"case": "lower"}, "name": {"collapse_whitespace": True},
                  "country": {"case": "upper", "default": "US"}},
    "validation": {
        "email": {"type": "string", "regex": "[^@ ]+@[^@ ]+", "nullable": True},
        "name": {"type": "string", "required": True, "nullable": False},
        "country": {"type": "string", "allowed": ["US", "DE", "FR"]},
        "credit": {"type": "decimal", "min": Decimal(0), "nullable": True},
    },
}


def write_config(folder: Path, schema: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    validation = {k: {r: (str(v) if isinstance(v, Decimal) else v) for r, v in rules.items()}
                  for k, rules in CUSTOMER["validation"].items()}
    validation["credit"]["min"] = 0
    (folder / "c.json").write_text(json.dumps({
        "pipeline": {"db_schema": schema, "batch_size": 50, "block_ms": 50},
        "divisions": {"emea": {"name": "EMEA", "tables": ["customer"]}},
        "tables": {"customer": {**CUSTOMER, "validation": validation}},
    }))
    return folder


@pytest.fixture
async def ctx(open_ctx: OpenContext, tmp_path: Path, schema: str) -> Context:
    return await open_ctx(write_config(tmp_path / "config", schema))


def person(i: int, **changes: Any) -> dict[str, Any]:
    row = {"id": str(i), "email": f"  Person{i}@Example.COM ", "name": f" Person   {i} ",
           "country": "de", "credit": "10.50", "updated": "2024-03-01 12:00:00"}
    row.update(changes)
    return row


async def send(ctx: Context, rows: list[dict[str, Any]], window: str = "2024-03",
               op: str = "upsert") -> None:
    producer = Producer(ctx.redis, ctx.keys, chunk_size=40)
    target = TableTarget("emea", "customer", window, op="delete" if op == "delete" else "upsert")
    await producer.send_table(target, rows)


async def drain(ctx: Context) -> None:
    await make_consumer("bronze", ctx).run(burst=True)
    await make_consumer("silver", ctx).run(burst=True)


def landed_item(row: int, payload: dict[str, Any], *, op: str = "upsert", window: str = "w2",
                derived: dict[str, str | None] | None = None,
                bronze_id: str | None = None) -> Item:
    """A landed record of emea's as Silver reads it off the bronze stream."""
    record = Record(division="emea", table="customer", window=window, row=row, payload=payload,
                    op="delete" if op == "delete" else "upsert")
    landed = Landed(record=record, derived=derived or {},
                    bronze_id=f"9-0:{row}" if bronze_id is None else bronze_id)
    return Item("t:{emea}:bronze", "9-0", row, landed, 1)


async def silver(ctx: Context) -> dict[int, dict[str, Any]]:
    rows = await ctx.pool.fetch(f'SELECT * FROM "{ctx.plan.schema}"."silver_customer"')
    return {r["id"]: dict(r) for r in rows}


async def quarantined(ctx: Context) -> list[dict[str, Any]]:
    rows = await ctx.pool.fetch(
        f'SELECT * FROM "{ctx.plan.schema}"."quarantine" ORDER BY "row"')
    return [dict(r) for r in rows]


async def test_rows_are_cleaned_typed_and_upserted(ctx: Context) -> None:
    await send(ctx, [person(1), person(2, country="", credit="")])
    await drain(ctx)
    rows = await silver(ctx)
    assert rows[1]["email"] == "person1@example.com"
    assert rows[1]["name"] == "Person 1"
    assert rows[1]["country"] == "DE"
    assert rows[1]["credit"] == Decimal("10.50")
    assert rows[1]["updated"].isoformat() == "2024-03-01T11:00:00+00:00"  # Berlin -> UTC
    assert rows[2]["country"] == "US" and rows[2]["credit"] is None  # default, empty -> null
    assert rows[1]["_deleted"] is False


async def test_invalid_rows_are_quarantined_with_rule_and_field(ctx: Context) -> None:
    await send(ctx, [person(1), person(2, country="XX"), person(3, credit="-1"),
                     person(4, credit="lots"), person(5, name="  ")])
    await drain(ctx)
    assert set(await silver(ctx)) == {1}
    held = {q["row"]: q for q in await quarantined(ctx)}
    assert (held[2]["rule"], held[2]["field"]) == ("allowed", "country")
    assert held[2]["message"] == "unallowed value XX"
    assert (held[3]["rule"], held[3]["field"]) == ("min", "credit")
    assert (held[4]["rule"], held[4]["field"]) == ("type", "credit")
    assert (held[5]["rule"], held[5]["field"]) == ("nullable", "name")
    assert all(q["layer"] == "silver" and q["seen"] == 1 for q in held.values())
    assert json.loads(held[2]["payload"])["payload"]["country"] == "XX"


async def test_newer_sequence_wins_in_any_arrival_order(ctx: Context) -> None:
    newer = person(1, name="New", updated="2024-03-02 00:00:00")
    older = person(1, name="Old", updated="2024-03-01 00:00:00")
    await send(ctx, [newer], window="w1")
    await drain(ctx)
    await send(ctx, [older], window="w2")  # arrives late
    await drain(ctx)
    assert (await silver(ctx))[1]["name"] == "New"
    await send(ctx, [older, newer, older], window="w3")  # both in one batch
    await drain(ctx)
    assert (await silver(ctx))[1]["name"] == "New"


async def test_equal_sequence_later_entry_wins(ctx: Context) -> None:
    await send(ctx, [person(1, name="First"), person(1, name="Second")])
    await drain(ctx)
    assert (await silver(ctx))[1]["name"] == "Second"


async def test_replaying_the_stream_changes_nothing(ctx: Context) -> None:
    await send(ctx, [person(i) for i in range(1, 120)])
    await drain(ctx)
    before = await ctx.pool.fetch(
        f'SELECT to_jsonb(s)::text AS j FROM "{ctx.plan.schema}"."silver_customer" s ORDER BY id')
    bronze_stream = ctx.keys.stream("emea", channels.BRONZE)
    group = ctx.keys.group("silver")
    await ctx.redis.xgroup_setid(bronze_stream, group, "0")  # deliver every entry again
    await make_consumer("silver", ctx).run(burst=True)
    after = await ctx.pool.fetch(
        f'SELECT to_jsonb(s)::text AS j FROM "{ctx.plan.schema}"."silver_customer" s ORDER BY id')
    assert [r["j"] for r in before] == [r["j"] for r in after]
    counts = await ctx.pool.fetchval(f'SELECT count(*) FROM "{ctx.plan.schema}"."_rows"')
    assert counts == 119


async def test_a_batch_whose_keys_partly_exist_and_its_redelivery(ctx: Context) -> None:
    await send(ctx, [person(1), person(2)])
    await drain(ctx)

    batch = [landed_item(1, person(1, name="Older", updated="2024-01-01 00:00:00")),
             landed_item(2, person(2, name="Newer", updated="2024-04-01 00:00:00")),
             landed_item(3, person(3, name="New"))]
    for _ in range(2):  # the second time: a redelivery, which changes nothing
        out = await SilverProcessor(ctx.pool, ctx.plan, ctx.clock).process(batch)
        assert out.processed == 3
        rows = await silver(ctx)
        assert {i: r["name"] for i, r in rows.items()} == {1: "Person 1", 2: "Newer", 3: "New"}
        outcomes = await ctx.pool.fetch(
            f'SELECT "window", outcome, count(*) FROM "{ctx.plan.schema}"."_rows"'
            ' GROUP BY 1, 2 ORDER BY 1')
        assert [tuple(r) for r in outcomes] == [("2024-03", "applied", 2), ("w2", "applied", 3)]


async def test_delete_is_soft_and_respects_sequence(ctx: Context) -> None:
    await send(ctx, [person(1), person(2)])
    await drain(ctx)
    await send(ctx, [{"id": "1", "updated": "2024-03-05 00:00:00"}], window="w2", op="delete")
    await send(ctx, [{"id": "2", "updated": "2024-01-01 00:00:00"}], window="w3", op="delete")
    await drain(ctx)
    rows = await silver(ctx)
    assert rows[1]["_deleted"] is True and rows[1]["name"] == "Person 1"  # kept for audit
    assert rows[2]["_deleted"] is False  # the delete was older than the stored row


async def test_a_batch_of_upserts_and_deletes_applies_both(ctx: Context) -> None:
    await send(ctx, [person(1), person(2)])
    await drain(ctx)

    batch = [landed_item(1, {"id": "3", "name": "Three", "updated": "2024-03-05 00:00:00"}),
             landed_item(2, {"id": "1", "updated": "2024-03-05 00:00:00"}, op="delete")]
    out = await SilverProcessor(ctx.pool, ctx.plan, ctx.clock).process(batch)
    assert out.processed == 2
    rows = await silver(ctx)
    assert {i: r["_deleted"] for i, r in rows.items()} == {1: True, 2: False, 3: False}


async def test_accounting_adds_up(ctx: Context) -> None:
    rows = [person(i) for i in range(1, 301)]
    rows[10]["country"] = "XX"  # quarantined by validation
    rows[20]["credit"] = "abc"  # quarantined by coercion
    rows[30]["name"] = "bad\x00"  # rejected by PostgreSQL: dead-lettered in Bronze
    rows[40] = rows[39]  # a duplicate key: applied (deduplicated)
    await send(ctx, rows)
    await drain(ctx)
    schema = ctx.plan.schema
    outcomes = dict(await ctx.pool.fetch(
        f'SELECT outcome, count(*) FROM "{schema}"."_rows" GROUP BY outcome'))
    dead = [msgpack_decoder.decode(f[b"msgpack"]) for _, f in
            await ctx.redis.xrange(ctx.keys.stream("emea", channels.DEAD))]
    assert all(isinstance(d, DeadLetter) for d in dead)
    assert outcomes == {"applied": 297, "quarantined": 2}
    assert outcomes["applied"] + outcomes["quarantined"] + len(dead) == 300
    accounted = [msgpack_decoder.decode(f[b"msgpack"]) for _, f in
                 await ctx.redis.xrange(ctx.keys.stream("emea", channels.ACCOUNTED))]
    rows_seen = sorted(r for a in accounted if isinstance(a, Accounted)
                       for r in a.applied + a.quarantined)
    assert rows_seen == sorted(set(range(1, 301)) - {31})
    assert [a.rows for a in accounted if isinstance(a, TableEnd)] == [300]
    assert len(await silver(ctx)) == 297 - 1  # rows 40 and 41 share a key


async def test_a_column_added_in_config_appears_without_losing_data(
        ctx: Context, tmp_path: Path, redis_url: str, database_url: str) -> None:
    await send(ctx, [person(1)])
    await drain(ctx)
    folder = tmp_path / "config"
    data = json.loads((folder / "c.json").read_text())
    data["tables"]["customer"]["columns"]["segment"] = "text"
    (folder / "c.json").write_text(json.dumps(data))
    grown = await open_context(folder, redis_url, database_url, ctx.keys.prefix)
    try:
        await send(grown, [person(2, segment="retail")])
        await drain(grown)
        rows = await silver(grown)
        assert rows[1]["segment"] is None and rows[1]["name"] == "Person 1"
        assert rows[2]["segment"] == "retail"
    finally:
        await grown.close()


async def test_a_lossy_type_change_is_refused(
        ctx: Context, tmp_path: Path, redis_url: str, database_url: str) -> None:
    from assay.db.schema import MigrationError

    folder = tmp_path / "config"
    data = json.loads((folder / "c.json").read_text())
    data["tables"]["customer"]["columns"]["credit"] = "integer"
    (folder / "c.json").write_text(json.dumps(data))
    with pytest.raises(MigrationError, match=r"refuse silver_customer\.credit numeric → bigint"):
        await open_context(folder, redis_url, database_url, ctx.keys.prefix)


async def test_quarantined_rows_are_replayed_once_the_config_is_fixed(
        ctx: Context, tmp_path: Path, redis_url: str, database_url: str) -> None:
    from assay.replay import replay

    await send(ctx, [person(1), person(2, country="XX")])
    await drain(ctx)
    assert (await replay(ctx, dry_run=True)).rows == 1
    folder = tmp_path / "config"
    data = json.loads((folder / "c.json").read_text())
    data["tables"]["customer"]["validation"]["country"]["allowed"].append("XX")
    (folder / "c.json").write_text(json.dumps(data))
    fixed = await open_context(folder, redis_url, database_url, ctx.keys.prefix)
    try:
        assert (await replay(fixed)).rows == 1
        await drain(fixed)
        assert (await silver(fixed))[2]["country"] == "XX"
        [held] = await quarantined(fixed)
        assert held["released_at"] is not None
        outcomes = dict(await fixed.pool.fetch(
            f'SELECT outcome, count(*) FROM "{fixed.plan.schema}"."_rows" GROUP BY outcome'))
        assert outcomes == {"applied": 2}
        assert (await replay(fixed, dry_run=True)).rows == 0
    finally:
        await fixed.close()


async def test_two_silver_consumers_on_overlapping_keys(ctx: Context) -> None:
    from assay.streams.consumer import RuntimeSettings

    for window in ("w1", "w2", "w3"):  # the same 200 keys in every window
        await send(ctx, [person(i, name=f"{window} {i}") for i in range(1, 201)], window=window)
    await make_consumer("bronze", ctx).run(burst=True)
    first, second = make_consumer("silver", ctx, "one"), make_consumer("silver", ctx, "two")
    first.settings = second.settings = RuntimeSettings(batch_size=40, block_ms=50)
    await asyncio.gather(first.run(burst=True), second.run(burst=True))
    assert first.batches > 0 and second.batches > 0
    rows = await silver(ctx)
    assert len(rows) == 200
    assert {r["name"] for r in rows.values()} == {f"w3 {i}" for i in range(1, 201)}
    applied = await ctx.pool.fetchval(
        f'SELECT count(*) FROM "{ctx.plan.schema}"."_rows" WHERE outcome = \'applied\'')
    assert applied == 600


async def test_end_to_end_latency_is_observed_per_record(ctx: Context) -> None:

    seen: list[tuple[float, int]] = []
    await send(ctx, [person(i) for i in range(1, 31)])
    await make_consumer("bronze", ctx).run(burst=True)
    consumer = make_consumer("silver", ctx)
    consumer.processor = SilverProcessor(ctx.pool, ctx.plan, ctx.clock,
                                         lambda s, n: seen.append((s, n)))
    await consumer.run(burst=True)
    # 30 records in one ingest entry: one observation of 30 (per batch Silver read them in)
    assert sum(n for _, n in seen) == 30 and all(0 <= s < 60 for s, _ in seen)
    assert len(seen) <= 30 // ctx.plan.config.pipeline.batch_size + 1


@pytest.mark.parametrize("bronze_id", ["x", "", "9-0", "9-0:", "9:0", "-0:1", "9-0:1\n", "9-0:+1",
                                       "9-0:1234567890", "1" * 21 + "-0:1", "9-0:²"])
async def test_a_landed_item_whose_bronze_id_is_malformed_is_refused_alone(
        ctx: Context, bronze_id: str) -> None:
    bad = landed_item(2, person(2), bronze_id=bronze_id)
    out = await SilverProcessor(ctx.pool, ctx.plan, ctx.clock).process(
        [landed_item(1, person(1)), bad,
         landed_item(3, person(3),
                     bronze_id="18446744073709551615-18446744073709551615:999999999")])
    assert out.processed == 2
    assert [(item, reason.split(" is ")[1]) for item, reason in out.rejected] == [
        (bad, "not <ms>-<seq>:<index>")]
    assert sorted(await silver(ctx)) == [1, 3]


async def test_a_batch_postgresql_refuses_for_a_nul_is_written_without_those_records(
        ctx: Context) -> None:
    """Silver writes without looking for NUL; when PostgreSQL refuses the batch for one (in
    a text column, a quarantined payload, the ledger), each record is looked at, those that
    hold NUL are refused, and the rest is written once, nothing of the first try kept."""
    bad = [landed_item(2, person(2, name="a\x00b")),  # a text column
           landed_item(3, person(3, credit="1\x000")),  # not a number: a quarantined payload
           landed_item(4, person(4), window="w\x00"),  # the ledger and `_window`
           landed_item(5, person(5), derived={"email": "x\x00@y.z"}),  # a derived value
           landed_item(7, person(7, note="\x00"))]  # dropped by Silver, refused all the same
    batch = [landed_item(1, person(1)), *bad[:4], landed_item(6, person(6, country="XX")),
             bad[4]]
    silver_layer = SilverProcessor(ctx.pool, ctx.plan, ctx.clock)
    out = await silver_layer.process(batch)
    assert [(item, reason) for item, reason in out.rejected] == [(b, NUL) for b in bad]
    assert (out.processed, out.quarantined) == (1, 1)
    assert sorted(await silver(ctx)) == [1]
    assert [(q["row"], q["rule"]) for q in await quarantined(ctx)] == [(6, "allowed")]
    ledger = await ctx.pool.fetch(
        f'SELECT "row", outcome FROM "{ctx.plan.schema}"."_rows" ORDER BY "row"')
    assert [tuple(r) for r in ledger] == [(1, "applied"), (6, "quarantined")]
    # In a batch PostgreSQL takes, a NUL in a field Silver drops leaves with the field (Bronze
    # refuses every NUL at the door: only an entry put straight onto the bronze stream has one).
    out = await silver_layer.process([landed_item(8, person(8, note="\x00"))])
    assert (out.processed, out.rejected) == (1, [])
    assert sorted(await silver(ctx)) == [1, 8]
