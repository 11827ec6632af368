"""Hostile entries at every layer's input: each ends in exactly one place, no layer stops.

Every case of issue 12's list is XADDed as a raw producer (or a foreign writer) would, and
the layer that reads the stream is run until drained: a malformed entry becomes one dead
letter on its division's dead stream, with the source stream and entry id, a reason that
names the problem and its bytes as received; everything else is processed as usual.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from assay.contracts.config import ConfigError, load_config
from assay.contracts.messages import (
    Accounted,
    DeadLetter,
    Landed,
    LandedBatch,
    Record,
    TableEnd,
    WindowEvent,
    msgpack_decoder,
)
from assay.processors.normalise import holds_nul
from assay.runner import Context, make_consumer
from assay.streams import keys as channels
from assay.streams.codec import Item, decode_entry, encode
from assay.streams.consumer import Consumer, Output, RuntimeSettings
from assay.streams.producer import Producer, TableTarget
from assay.streams.windows import WindowStore
from tests.conftest import OpenContext, write_config

GOOD: dict[str, Any] = {"type": "record", "division": "east", "table": "item", "window": "w",
                        "row": 1, "payload": {"id": "1", "name": "n", "qty": "1",
                                              "weight": "1", "unit": "LB"}}


def record(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def js(message: dict[str, Any]) -> bytes:
    return msgspec.json.encode(message)


def with_payload(payload: bytes) -> bytes:
    """A record whose payload object is written byte for byte."""
    return js(record(payload={})).replace(b'"payload":{}', b'"payload":' + payload)


BIG = 2**64
CASES: list[tuple[str, dict[bytes, bytes], str, int | None]] = [
    # (case, entry fields, a fragment of the reason, the row the dead letter names)
    ("invalid UTF-8 in a value", {b"json": with_payload(b'{"name":"\xff\xfe"}')},
     "invalid UTF-8", 1),
    ("invalid UTF-8 in a payload key", {b"json": with_payload(b'{"n\xc3":"x"}')},
     "invalid UTF-8", 1),
    ("row >= 2^64", {b"json": js(record(row=BIG))}, "<= 4294967295 - at `$.row`", None),
    ("row 2^63-1", {b"json": js(record(row=2**63 - 1))}, "<= 4294967295 - at `$.row`", None),
    ("row 0", {b"json": js(record(row=0))}, ">= 1 - at `$.row`", None),
    ("table_end rows >= 2^64",
     {b"json": js({"type": "table_end", "division": "east", "table": "item", "window": "w",
                   "rows": BIG})}, "<= 4294967295 - at `$.rows`", None),
    ("seq >= 2^64", {b"json": js(record(seq=BIG))}, "at `$.seq`", 1),
    ("seq 2^63", {b"json": js(record(seq=2**63))}, "at `$.seq`", 1),
    ("version >= 2^64", {b"json": js(record(v=BIG))}, "at `$.v`", 1),
    ("NUL in a value", {b"json": js(record(payload={**GOOD["payload"], "name": "a\x00b"}))},
     "NUL character", 1),
    ("NUL in a key", {b"json": js(record(payload={"id\x00": "1"}))}, "NUL character", 1),
    ("deep nesting", {b"json": b'{"type":"record","x":' + b"[" * 100_000 + b"]" * 100_000
                      + b"}"}, "nested too deeply", None),
    ("a list where the payload goes", {b"json": with_payload(b"[[[[1]]]]")},
     "at `$.payload`", 1),
    ("a huge number as a float", {b"json": with_payload(b'{"qty":1e400}')}, "out of range", 1),
    ("a lone surrogate", {b"json": with_payload(b'{"name":"\\ud800"}')}, "invalid message",
     None),
    ("a window event on ingest",
     {b"json": js({"type": "window", "division": "east", "window": "w", "status": "completed",
                   "tables": {}, "failed": {}, "at": 1.0})}, "unexpected WindowEvent", None),
    ("an unknown message type", {b"json": js({"type": "surprise"})}, "Invalid value", None),
    ("an unknown entry field", {b"json": js(GOOD), b"extra": b"\x00\xff"}, "only field",
     None),
    ("a field name in invalid UTF-8", {b"\xff\xfe": b"x"}, "only field", None),
    ("bytes that are not msgpack", {b"msgpack": b"\xc1\x00\xff"}, "MessagePack", None),
    ("a huge window name", {b"json": js(record(window="w" * 100_000))}, "at `$.window`", None),
    ("not JSON at all", {b"json": b"\x00\x01\x02"}, "invalid message", None),
    ("an empty batch", {b"json": b'{"type":"record_batch","records":[]}'}, "without elements",
     None),
]


async def dead_letters(ctx: Context, division: str = "east") -> list[DeadLetter]:
    """The dead letters on a division's dead stream (not what a test put there itself)."""
    raw = await ctx.redis.xrange(ctx.keys.stream(division, channels.DEAD))
    decoded = [decode_entry(f).message for _, f in raw]
    return [m for m in decoded if isinstance(m, DeadLetter)]


async def bronze_rows(ctx: Context) -> list[dict[str, Any]]:
    rows = await ctx.pool.fetch(f'SELECT * FROM "{ctx.plan.schema}"."bronze_item" ORDER BY _row')
    return [dict(r) for r in rows]


async def pending(ctx: Context, channel: str, layer: str) -> int:
    stream = ctx.keys.stream("east", channel)
    return int((await ctx.redis.xpending(stream, ctx.keys.group(layer)))["pending"])


@pytest.mark.parametrize(("case", "fields", "reason", "row"), CASES, ids=[c[0] for c in CASES])
async def test_a_malformed_entry_is_dead_lettered_once_and_bronze_goes_on(
        ctx: Context, case: str, fields: dict[bytes, bytes], reason: str, row: int | None
        ) -> None:
    stream = ctx.keys.stream("east", channels.INGEST)
    bad_id = (await ctx.redis.xadd(stream, fields)).decode()
    await ctx.redis.xadd(stream, {b"json": js(record(row=2))})
    await make_consumer("bronze", ctx).run(burst=True)
    [letter] = await dead_letters(ctx)
    assert reason in letter.error, letter.error
    assert (letter.stream, letter.entry_id, letter.layer) == (stream, bad_id, "bronze")
    assert letter.row == row
    kept = letter.fields or [(b"", letter.raw)]
    if letter.fields:
        assert dict(kept) == fields  # every field, byte for byte
    elif b"json" in fields and letter.raw != fields[b"json"]:
        # Rejected after decoding (a processor's verdict): the decoded message is kept.
        assert msgpack_decoder.decode(letter.raw) is not None
    else:
        assert letter.raw == next(iter(fields.values()))
    assert [r["_row"] for r in await bronze_rows(ctx)] == [2]  # the next entry landed
    assert await pending(ctx, channels.INGEST, "bronze") == 0


async def test_assay_dead_shows_dead_letters_as_json_with_raw_bytes_in_base64(
        ctx: Context, config_dir: Path, redis_url: str, database_url: str) -> None:
    stream = ctx.keys.stream("east", channels.INGEST)
    raw = with_payload(b'{"name":"\xff"}')
    bad_id = (await ctx.redis.xadd(stream, {b"json": raw})).decode()
    await make_consumer("bronze", ctx).run(burst=True)
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": ctx.keys.prefix}
    result = subprocess.run([sys.executable, "-m", "assay", "dead", "east", "--config",
                             str(config_dir)], env=env, capture_output=True, check=True)
    [line] = result.stdout.decode().splitlines()
    shown = json.loads(line)
    assert base64.b64decode(shown["raw"]) == raw
    assert (shown["stream"], shown["entry_id"], shown["row"]) == (stream, bad_id, 1)
    assert shown["error"].startswith("invalid UTF-8 at byte")


async def test_huge_payload_integers_and_non_ascii_text_land_byte_exact(ctx: Context) -> None:
    """2^64 and beyond (which msgpack cannot carry) are kept as their decimal text."""
    stream = ctx.keys.stream("east", channels.INGEST)
    huge = str(2**200)
    entry = with_payload(b'{"id":"1","name":"Gr\xc3\xbc\xc3\x9fe \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f'
                         b'\x9a\x9a","qty":18446744073709551616,"weight":' + huge.encode()
                         + b',"unit":"LB","extra_col":-18446744073709551617}')
    await ctx.redis.xadd(stream, {b"json": entry})
    await make_consumer("bronze", ctx).run(burst=True)
    assert await dead_letters(ctx) == []
    [row] = await bronze_rows(ctx)
    assert row["name"] == "Grüße 東京 🚚"
    assert row["qty"] == "18446744073709551616"
    assert row["weight"] == huge
    assert msgspec.json.decode(row["_extra"]) == {"extra_col": "-18446744073709551617"}
    # Silver then decides by the column's type: qty is a number and fits PostgreSQL numeric.
    await make_consumer("silver", ctx).run(burst=True)
    qty = await ctx.pool.fetchval(f'SELECT qty::text FROM "{ctx.plan.schema}"."silver_item"')
    assert qty == "18446744073709551616"


async def test_an_integer_too_large_for_its_column_is_quarantined_by_silver(
        ctx: Context) -> None:
    stream = ctx.keys.stream("east", channels.INGEST)
    await ctx.redis.xadd(stream, {b"json": with_payload(b'{"id":18446744073709551616}')})
    await ctx.redis.xadd(stream, {b"json": with_payload(b'{"id":"1e999999999"}')
                                  .replace(b'"row":1', b'"row":2')})
    await make_consumer("bronze", ctx).run(burst=True)
    await make_consumer("silver", ctx).run(burst=True)
    held = await ctx.pool.fetch(
        f'SELECT "row", rule, field FROM "{ctx.plan.schema}"."quarantine" ORDER BY "row"')
    assert [(r["row"], r["rule"], r["field"]) for r in held] == [(1, "type", "id"),
                                                                (2, "type", "id")]
    assert await dead_letters(ctx) == []


async def test_a_bad_element_of_a_batch_costs_its_batch_mates_nothing(ctx: Context) -> None:
    """Each element of a record batch decodes alone: the bad one is dead-lettered naming its
    row, the others land, and the barrier completes the window (partial)."""
    records = [js(record(row=i, payload={**GOOD["payload"], "id": str(i)})) for i in (1, 2, 4)]
    records.insert(2, with_payload(b'{"id":"3","\xff":1}').replace(b'"row":1', b'"row":3'))
    batch = b'{"type":"record_batch","records":[' + b",".join(records) + b"]}"
    stream = ctx.keys.stream("east", channels.INGEST)
    await ctx.redis.xadd(stream, {b"json": batch})
    await ctx.redis.xadd(stream, {b"json": js({"type": "table_end", "division": "east",
                                               "table": "item", "window": "w", "rows": 4})})
    for layer in ("bronze", "silver", "barrier"):
        await make_consumer(layer, ctx).run(burst=True)
    [letter] = await dead_letters(ctx)
    assert (letter.row, letter.table, letter.window) == (3, "item", "w")
    assert "invalid UTF-8" in letter.error and letter.raw == records[2]
    assert [r["_row"] for r in await bronze_rows(ctx)] == [1, 2, 4]
    [window] = await WindowStore(ctx.redis, ctx.keys).windows("east")
    assert window["status"] == "partial" and window["item:failed"] == "1"


@pytest.mark.parametrize("channel", [channels.BRONZE, channels.ACCOUNTED, channels.DEAD,
                                     channels.WINDOWS])
async def test_every_layer_dead_letters_undecodable_entries_of_its_streams(
        ctx: Context, channel: str) -> None:
    layer = {channels.BRONZE: "silver", channels.ACCOUNTED: "barrier", channels.DEAD: "barrier",
             channels.WINDOWS: "gold"}[channel]
    stream = ctx.keys.stream("east", channel)
    bad_id = (await ctx.redis.xadd(stream, {b"msgpack": b"\x81\xa4type\xa3\xff\xfe\xfd"})
              ).decode()
    await ctx.redis.xadd(stream, {b"json": b'{"type":"landed","bronze_id":"\xff"}'})
    consumer = make_consumer(layer, ctx)
    await consumer.run(burst=True)
    if channel == channels.DEAD:
        await consumer.run(burst=True)  # the barrier reads its own letters: no loop
    letters = [d for d in await dead_letters(ctx) if d.stream == stream]
    assert sorted(d.entry_id for d in letters)[0] == bad_id
    assert len(letters) == 2 and all("invalid UTF-8" in d.error for d in letters)
    assert await pending(ctx, channel, layer) == 0


async def test_the_monitor_leaves_dead_letters_of_the_windows_stream_to_gold(
        ctx: Context) -> None:
    stream = ctx.keys.stream("east", channels.WINDOWS)
    await ctx.redis.xadd(stream, {b"json": b"\xff"})
    await make_consumer("gold", ctx).run(burst=True)
    processor = make_consumer("gold", ctx).processor
    watcher = Consumer(ctx.redis, ctx.keys, processor, ["east"], [channels.WINDOWS],
                       name="watch", dead_letters=False)
    watcher.group = ctx.keys.group("monitor")
    await watcher.run(burst=True)
    assert len(await dead_letters(ctx)) == 1


async def test_the_barrier_dead_letters_one_bad_row_not_its_entry(ctx: Context) -> None:
    """Row 2^63-1 in an accounted entry used to fail the barrier's script for the whole
    entry, so the window of its three good rows never completed."""
    accounted = ctx.keys.stream("east", channels.ACCOUNTED)
    await ctx.redis.xadd(accounted, encode(Accounted(
        division="east", table="item", window="w", layer="silver",
        applied=[1, 2**63 - 1, 2], quarantined=[3, -5])))
    await ctx.redis.xadd(accounted, encode(TableEnd(division="east", table="item", window="w",
                                                    rows=3)))
    await make_consumer("barrier", ctx).run(burst=True)
    letters = await dead_letters(ctx)
    assert sorted((d.error, d.row) for d in letters) == [
        ("row number -5 outside 1…4294967295", None),
        ("row number 9223372036854775807 outside 1…4294967295", None)]
    [window] = await WindowStore(ctx.redis, ctx.keys).windows("east")
    assert window["status"] == "partial" and window["item:seen"] == "3"
    events = await ctx.redis.xrange(ctx.keys.stream("east", channels.WINDOWS))
    assert len(events) == 1


async def test_a_refused_state_update_is_split_down_to_its_row(ctx: Context) -> None:
    """When the window state refuses an update (here: a key of the wrong type for one
    table), only that table's rows are dead-lettered, each alone, naming its row; the
    rest of the batch is accounted."""
    await ctx.redis.hset(ctx.keys.state("east", "rows:w:item"), "not", "a bitmap")
    accounted = ctx.keys.stream("east", channels.ACCOUNTED)
    await ctx.redis.xadd(accounted, encode(Accounted(
        division="east", table="item", window="w", layer="silver", applied=[1, 2])))
    await ctx.redis.xadd(accounted, encode(Accounted(
        division="east", table="item", window="w2", layer="silver", applied=[1])))
    await make_consumer("barrier", ctx).run(burst=True)
    letters = await dead_letters(ctx)
    assert sorted(d.row for d in letters) == [1, 2]  # type: ignore[type-var]
    assert all("WRONGTYPE" in d.error and d.window == "w" for d in letters)
    states = {w["window"]: w for w in await WindowStore(ctx.redis, ctx.keys).windows("east")}
    assert states["w2"]["item:seen"] == "1"


async def test_accounting_of_another_division_is_refused(ctx: Context) -> None:
    accounted = ctx.keys.stream("east", channels.ACCOUNTED)
    await ctx.redis.xadd(accounted, encode(Accounted(
        division="west", table="item", window="w", layer="silver", applied=[1])))
    await make_consumer("barrier", ctx).run(burst=True)
    [letter] = await dead_letters(ctx)
    assert "another division" in letter.error
    assert await WindowStore(ctx.redis, ctx.keys).windows("west") == []


async def test_silver_refuses_a_landed_record_of_another_division(ctx: Context) -> None:
    """Bronze checks the division at the door; an entry put straight onto the bronze
    stream is checked again, so a west row never lands in east's accounting."""
    payload = {"id": "1", "name": "n", "qty": "1", "weight": "1", "unit": "LB"}
    batch = LandedBatch(items=[
        Landed(record=Record(division=division, table="item", window="w", row=row,
                             payload=payload), derived={}, bronze_id=f"1-0:{row}")
        for division, row in (("east", 1), ("west", 2))])
    await ctx.redis.xadd(ctx.keys.stream("east", channels.BRONZE), encode(batch))
    await make_consumer("silver", ctx).run(burst=True)
    [letter] = await dead_letters(ctx)
    assert "another division" in letter.error
    rows = await ctx.pool.fetch(f'SELECT id FROM "{ctx.plan.schema}"."silver_item"')
    assert [r["id"] for r in rows] == [1]


async def test_gold_refuses_a_window_event_of_another_division(ctx: Context) -> None:
    windows = ctx.keys.stream("east", channels.WINDOWS)
    event = WindowEvent(division="north", window="w", status="completed", tables={},
                        failed={}, at=1.0)
    await ctx.redis.xadd(windows, encode(event))
    await make_consumer("gold", ctx).run(burst=True)
    [letter] = await dead_letters(ctx)
    assert "another division" in letter.error


async def test_forwarded_landed_batches_never_carry_what_cannot_be_encoded(
        ctx: Context) -> None:
    """A payload integer between 2^63 and 2^64 from msgpack is kept as text as well."""
    stream = ctx.keys.stream("east", channels.INGEST)
    packed = msgspec.msgpack.encode(record(payload={"id": "1", "qty": 2**64 - 1}))
    await ctx.redis.xadd(stream, {b"msgpack": packed})
    await make_consumer("bronze", ctx).run(burst=True)
    [(_, fields)] = await ctx.redis.xrange(ctx.keys.stream("east", channels.BRONZE))
    [landed] = msgpack_decoder.decode(fields[b"msgpack"]).items  # type: ignore[attr-defined]
    assert isinstance(msgpack_decoder.decode(fields[b"msgpack"]), LandedBatch)
    assert landed.record.payload["qty"] == str(2**64 - 1)


async def test_dead_letters_stay_after_the_barrier_has_read_them(ctx: Context) -> None:
    """The barrier trims the streams it reads, but never the dead letters' one place."""
    stream = ctx.keys.stream("east", channels.INGEST)
    for _ in range(5):
        await ctx.redis.xadd(stream, {b"json": b"\xff"})
    await make_consumer("bronze", ctx).run(burst=True)
    barrier = make_consumer("barrier", ctx)
    barrier.settings = RuntimeSettings(batch_size=1, trim_every=1)
    await barrier.run(burst=True)
    assert await pending(ctx, channels.DEAD, "barrier") == 0
    assert len(await dead_letters(ctx)) == 5


@pytest.mark.parametrize(("payload", "seq", "derived", "expected"), [
    ({"a": "x\x00"}, None, None, True),
    ({"a\x00": "x"}, None, None, True),
    ({"a": "\\u0000"}, None, None, False),  # the six characters, not NUL
    ({"a": "\\\x00"}, None, None, True),
    ({"a": "\\u0000"}, "\x00", None, True),
    ({}, None, {"d": "\x00"}, True),
    ({"a": 5, "b": None}, 7, {"d": None}, False),
])
def test_nul_is_found_wherever_a_record_holds_text(
        payload: dict[str, Any], seq: Any, derived: dict[str, Any] | None,
        expected: bool) -> None:
    record = Record(division="e", table="t", window="w", row=1, payload=payload, seq=seq)
    assert holds_nul(record, derived) is expected


async def test_the_python_producer_sends_huge_integers_as_their_text(ctx: Context) -> None:
    producer = Producer(ctx.redis, ctx.keys)
    await producer.send_table(TableTarget("east", "item", "w"),
                              [{"id": 1, "name": "ok", "qty": 2**70}])
    await make_consumer("bronze", ctx).run(burst=True)
    [row] = await bronze_rows(ctx)
    assert (row["id"], row["qty"]) == ("1", str(2**70))


class EmitsTheUnencodable:
    """Forwards each record; record 2 with a payload integer msgpack cannot carry."""

    layer = "bronze"

    async def process(self, items: Sequence[Item]) -> Output:
        out = Output()
        for item in items:
            record = item.message
            assert isinstance(record, Record)
            payload = {"n": 2**70} if record.row == 2 else {}
            out.emits.append((channels.BRONZE, msgspec.structs.replace(record, payload=payload)))
        return out


async def test_a_batch_whose_output_cannot_be_encoded_is_split_not_crashed(
        ctx: Context) -> None:
    stream = ctx.keys.stream("east", channels.INGEST)
    for row in (1, 2, 3):
        await ctx.redis.xadd(stream, {b"json": js(record(row=row))})
    consumer = Consumer(ctx.redis, ctx.keys, EmitsTheUnencodable(), ["east"],
                        [channels.INGEST], settings=RuntimeSettings(block_ms=10))
    await consumer.run(burst=True)
    [letter] = await dead_letters(ctx)
    assert letter.row == 2 and "OverflowError" in letter.error
    forwarded = await ctx.redis.xrange(ctx.keys.stream("east", channels.BRONZE))
    assert sorted(msgpack_decoder.decode(f[b"msgpack"]).row  # type: ignore[attr-defined]
                  for _, f in forwarded) == [1, 3]
    assert await pending(ctx, channels.INGEST, "bronze") == 0


FOREIGN = {
    channels.BRONZE: ("silver", WindowEvent(division="east", window="w", status="completed",
                                            tables={}, failed={}, at=1.0)),
    channels.ACCOUNTED: ("barrier", Record(division="east", table="item", window="w", row=1,
                                           payload={})),
    channels.DEAD: ("barrier", WindowEvent(division="east", window="w", status="partial",
                                           tables={}, failed={}, at=1.0)),
    channels.WINDOWS: ("gold", TableEnd(division="east", table="item", window="w", rows=1)),
}


@pytest.mark.parametrize("channel", list(FOREIGN))
async def test_a_message_of_another_stream_is_dead_lettered_once(
        ctx: Context, channel: str) -> None:
    layer, message = FOREIGN[channel]
    stream = ctx.keys.stream("east", channel)
    entry_id = (await ctx.redis.xadd(stream, encode(message))).decode()
    consumer = make_consumer(layer, ctx)
    await consumer.run(burst=True)
    await consumer.run(burst=True)
    letters = [d for d in await dead_letters(ctx) if d.entry_id == entry_id]
    assert len(letters) == 1 and "unexpected" in letters[0].error, letters
    assert await pending(ctx, channel, layer) == 0


async def test_invalid_utf8_in_an_unknown_field_fails_only_its_batch_element(
        ctx: Context) -> None:
    elements = [js(record(row=1)), js(record(row=2)).replace(b'"row":2', b'"row":2,"x":"\xff"')]
    batch = b'{"type":"record_batch","records":[' + b",".join(elements) + b"]}"
    await ctx.redis.xadd(ctx.keys.stream("east", channels.INGEST), {b"json": batch})
    await make_consumer("bronze", ctx).run(burst=True)
    [letter] = await dead_letters(ctx)
    assert letter.row == 2 and "invalid UTF-8" in letter.error
    assert [r["_row"] for r in await bronze_rows(ctx)] == [1]


@pytest.mark.parametrize(("row", "name"), [
    (b'"row":1,"row":2', b'"name":"first","name":"last"'),
    # The first occurrence would be refused on its own; the last one is what counts.
    (b'"row":18446744073709551616,"row":2', b'"name":18446744073709551616,"name":"last"'),
    (b'"row":0,"row":2', b'"name":null,"name":"last"'),
    (b'"row":"x","row":2', b'"name":{"deep":[1]},"name":"last"'),
])
async def test_a_repeated_key_keeps_its_last_value_and_the_entry_lands_once(
        ctx: Context, row: bytes, name: bytes) -> None:
    entry = (b'{"type":"record","division":"east","table":"item","window":"w",' + row
             + b',"payload":{"id":"1",' + name + b'}}')
    await ctx.redis.xadd(ctx.keys.stream("east", channels.INGEST), {b"json": entry})
    await make_consumer("bronze", ctx).run(burst=True)
    assert [(r["_row"], r["name"]) for r in await bronze_rows(ctx)] == [(2, "last")]
    assert await dead_letters(ctx) == []
    assert await pending(ctx, channels.INGEST, "bronze") == 0


async def test_max_row_caps_what_one_record_can_make_redis_allocate(
        tmp_path: Path, schema: str, open_ctx: OpenContext) -> None:
    """With ``max_row`` 1000 a row or a table_end beyond it is dead-lettered at Bronze's
    door, and the barrier refuses such a row put straight onto its stream: no bitmap grows
    past 1000 bits (with the default, a row near 2^32 costs 512 MB)."""
    ctx = await open_ctx(write_config(tmp_path / "capped", schema, max_row=1000))
    ingest = ctx.keys.stream("east", channels.INGEST)
    for message in (record(row=1000), record(row=1001),
                    {"type": "table_end", "division": "east", "table": "item", "window": "w",
                     "rows": 1001}):
        await ctx.redis.xadd(ingest, {b"json": js(message)})
    await ctx.redis.xadd(ctx.keys.stream("east", channels.ACCOUNTED), encode(Accounted(
        division="east", table="item", window="x", layer="silver", applied=[7, 4_000_000_000])))
    for layer in ("bronze", "silver", "barrier"):
        await make_consumer(layer, ctx).run(burst=True)
    assert [r["_row"] for r in await bronze_rows(ctx)] == [1000]
    errors = sorted(d.error for d in await dead_letters(ctx))
    assert errors == ["row 1001 above max_row=1000", "row number 4000000000 outside 1…1000",
                      "rows 1001 above max_row=1000"]
    sizes = [await ctx.redis.strlen(key) async for key in ctx.redis.scan_iter(
        match=f"{ctx.keys.prefix}:*", _type="string")]
    assert sizes and max(sizes) <= 1000 // 8 + 1


@pytest.mark.parametrize("bad", [0, 2**32])
def test_max_row_is_within_what_a_bitmap_addresses(tmp_path: Path, schema: str,
                                                    bad: int) -> None:
    with pytest.raises(ConfigError, match="max_row"):
        load_config(write_config(tmp_path / "bad", schema, max_row=bad))
