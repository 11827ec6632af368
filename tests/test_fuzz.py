"""Property-based fuzzing of live layer processes: hostile entries on every input stream.

Every layer runs as its own OS process, as the Procfile starts them. Hypothesis (fixed
seed, ``ASSAY_FUZZ_EXAMPLES`` examples per input stream, 200 in ``make test``, more in
``make fuzz``) XADDs arbitrary bytes, arbitrary JSON, arbitrary entry fields and
structured envelopes with extreme values into the ingest, bronze, accounted, dead and
windows streams of two divisions. Afterwards:

* every layer process is still alive, and every stream is drained by every group;
* no entry is dead-lettered more often than it has elements, and a malformed one names
  its source stream and entry id;
* every record sent to ingest with a valid place (its division's stream, a row in
  1…2^32-1) ends applied, quarantined or dead-lettered;
* per window and table, the barrier's count of accounted rows equals its bitmap and the
  rows applied + quarantined (the ledger) + dead-lettered for it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.contracts.messages import MAX_ROW, DeadLetter
from assay.runner import LAYERS
from assay.streams import keys as channels
from assay.streams.codec import decode_entry
from assay.streams.keys import Keys
from tests.conftest import write_config

# Decoding does not depend on the server versions: once, not again on the standard ports.
pytestmark = pytest.mark.once

EXAMPLES = int(os.environ.get("ASSAY_FUZZ_EXAMPLES", "200"))
DIVISIONS = ("east", "west")
WINDOWS = ("w1", "w2", "w3")
"""Windows of records that enter at ingest; envelopes put straight onto later streams use
windows starting with ``x``, so the ledger identity is checked on the ingest path only."""
LAYER_NAMES = ("bronze", "silver", "barrier", "gold", "monitor")

EXTREME_INTS = st.sampled_from([0, -1, 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63,
                                2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**40, -(10**40)])
ROWS = st.one_of(st.integers(1, 40), EXTREME_INTS)
TEXT = st.one_of(st.text(max_size=20), st.sampled_from(["", "\x00", "a\x00b", "Grüße 東京 🚚",
                                                        "x" * 5000, "1e999999999", "NaN",
                                                        " 42 ", "-0", "9" * 30]))
SCALARS = st.one_of(st.none(), st.booleans(), TEXT, st.integers(), EXTREME_INTS,
                    st.floats(allow_nan=False, allow_infinity=False))
COLUMNS = st.sampled_from(["id", "name", "qty", "weight", "unit", "other", "", "\x00"])
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), TEXT,
                              st.floats(allow_nan=False, allow_infinity=False)),
                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                            st.dictionaries(st.text(max_size=8), inner,
                                                            max_size=4)),
                    max_leaves=20)


def records(windows: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"type": st.just("record"),
         "division": st.sampled_from([*DIVISIONS, "north", ""]),
         "table": st.sampled_from(["item", "item", "item", "nope"]),
         "window": st.sampled_from(windows),
         "row": ROWS,
         "payload": st.dictionaries(COLUMNS, SCALARS, max_size=6)},
        optional={"op": st.sampled_from(["upsert", "delete", "merge"]),
                  "seq": st.one_of(TEXT, EXTREME_INTS, st.integers()),
                  "v": EXTREME_INTS, "replay": st.booleans(), "unknown": JSON})


def table_ends(windows: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"type": st.just("table_end"), "division": st.sampled_from([*DIVISIONS, "north"]),
         "table": st.sampled_from(["item", "nope"]), "window": st.sampled_from(windows),
         "rows": st.one_of(st.integers(0, 40), EXTREME_INTS)})


XWINDOWS = ("x1", "x2")
ENVELOPES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    channels.INGEST: st.one_of(
        records(WINDOWS), records(WINDOWS), table_ends(WINDOWS),
        st.fixed_dictionaries({"type": st.just("record_batch"),
                               "records": st.lists(records(WINDOWS), max_size=5)})),
    channels.BRONZE: st.one_of(
        st.fixed_dictionaries({"type": st.just("landed"), "record": records(XWINDOWS),
                               "derived": st.dictionaries(st.text(max_size=8),
                                                          st.one_of(st.none(), TEXT),
                                                          max_size=3),
                               "bronze_id": st.sampled_from(["1-0:0", "x", "", "9" * 40])}),
        st.fixed_dictionaries({"type": st.just("landed_batch"),
                               "items": st.lists(st.fixed_dictionaries(
                                   {"type": st.just("landed"), "record": records(XWINDOWS),
                                    "derived": st.just({}),
                                    "bronze_id": st.just("1-0:0")}), max_size=4)}),
        table_ends(XWINDOWS)),
    channels.ACCOUNTED: st.one_of(
        st.fixed_dictionaries({"type": st.just("accounted"),
                               "division": st.sampled_from([*DIVISIONS, "north"]),
                               "table": st.sampled_from(["item", "nope"]),
                               "window": st.sampled_from(XWINDOWS),
                               "layer": st.just("silver"),
                               "applied": st.lists(ROWS, max_size=6),
                               "quarantined": st.lists(ROWS, max_size=3)}),
        table_ends(XWINDOWS)),
    channels.DEAD: st.fixed_dictionaries(
        {"type": st.just("dead_letter"), "layer": st.sampled_from(["bronze", "x"]),
         "stream": TEXT, "entry_id": TEXT, "error": TEXT, "deliveries": EXTREME_INTS},
        optional={"division": st.sampled_from([*DIVISIONS, "north"]),
                  "table": st.sampled_from(["item", "nope"]),
                  "window": st.sampled_from(XWINDOWS), "row": ROWS, "raw": st.just("AAE=")}),
    channels.WINDOWS: st.fixed_dictionaries(
        {"type": st.just("window"), "division": st.sampled_from([*DIVISIONS, "north"]),
         "window": st.sampled_from(XWINDOWS),
         "status": st.sampled_from(["completed", "partial", "amended", "timed_out", "odd"]),
         "tables": st.dictionaries(st.sampled_from(["item", "nope"]), ROWS),
         "failed": st.dictionaries(st.sampled_from(["item"]), ROWS),
         "at": st.floats(allow_nan=False)},
        optional={"missing": st.dictionaries(TEXT, TEXT, max_size=2),
                  "opened_at": st.floats(allow_nan=False, allow_infinity=False)}),
}


def as_json(message: Any) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def entries(draw: st.DrawFn, channel: str) -> tuple[dict[bytes, bytes], Any, bool]:
    """One entry's fields, the structured message it holds when it holds one intact (for
    a damaged one: how many elements it had), and whether it is malformed for certain (no
    message at all can be read from it)."""
    kind = draw(st.sampled_from(["envelope", "envelope", "envelope", "envelope", "damaged",
                                 "json", "bytes", "fields", "msgpack"]))
    if kind in ("envelope", "damaged", "msgpack"):
        message = draw(ENVELOPES[channel])
        if kind == "msgpack":
            try:
                return {b"msgpack": msgspec.msgpack.encode(message)}, message, False
            except OverflowError:  # msgpack cannot carry it: send it as JSON instead
                return {b"json": as_json(message)}, message, False
        data = as_json(message)
        if kind == "envelope":
            return {b"json": data}, message, False
        at = draw(st.integers(0, len(data)))
        elements = len(message.get("records", message.get("items", [None]))) or 1
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"{", b'"', b"\\u0000"]))
        return {b"json": data[:at] + junk + data[at:]}, elements, False
    if kind == "json":
        return {b"json": as_json(draw(JSON))}, None, True
    if kind == "bytes":
        field = draw(st.sampled_from([b"json", b"msgpack"]))
        return {field: draw(st.binary(max_size=64))}, None, True
    fields = draw(st.dictionaries(st.binary(max_size=8), st.binary(max_size=16), max_size=3))
    return fields or {b"": b""}, None, True


def fuzz_settings() -> Any:
    return settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


class Sent(msgspec.Struct, frozen=True):
    """One entry the fuzzer XADDed."""

    stream: str
    entry_id: str
    message: Any
    """The structured message it holds intact, if it does."""
    malformed: bool
    """Certainly unreadable: must be dead-lettered exactly once."""
    elements: int = 1


def feed(client: redis.Redis, keys: Keys, channel: str) -> list[Sent]:
    """XADD ``EXAMPLES`` generated entries into one channel of either division."""
    sent: list[Sent] = []

    @fuzz_settings()
    @given(division=st.sampled_from(DIVISIONS), entry=entries(channel))
    def one(division: str, entry: tuple[dict[bytes, bytes], Any, bool]) -> None:
        fields, message, malformed = entry
        stream = keys.stream(division, channel)
        entry_id: Any = client.xadd(stream, fields)  # type: ignore[arg-type]
        elements = message if isinstance(message, int) else 1
        if isinstance(message, dict):  # each element, or each row accounted, fails alone
            parts = [*message.get("records", []), *message.get("items", []),
                     *message.get("applied", []), *message.get("quarantined", [])]
            elements = max(1, len(parts))
        sent.append(Sent(stream, entry_id.decode(), message, malformed, elements))

    one()
    return sent


async def start(layer: str, config: Path, prefix: str, redis_url: str, database_url: str
                ) -> asyncio.subprocess.Process:
    """A layer as the Procfile runs it; its log goes to ``<layer>.log`` next to its config."""
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": prefix, "ASSAY_LOG_LEVEL": "ERROR"}
    with open(config.parent / f"{layer}.log", "wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "assay", "run", layer, "--config", str(config), env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=log)


async def drained(client: aioredis.Redis, keys: Keys) -> bool:
    """Every group of every stream has read everything and acked it."""
    for layer, layer_channels in LAYERS.items():
        for division in DIVISIONS:
            for channel in layer_channels:
                stream = keys.stream(division, channel)
                if not await client.exists(stream):
                    continue
                info: Any = await client.xinfo_stream(stream)
                groups = {g["name"].decode(): g for g in await client.xinfo_groups(stream)}
                group = groups.get(keys.group(layer))
                if group is None or group["pending"] or (
                        group["last-delivered-id"] != info["last-generated-id"]):
                    return False
    return True


async def dead_letters(client: aioredis.Redis, keys: Keys, division: str) -> list[DeadLetter]:
    raw = await client.xrange(keys.stream(division, channels.DEAD))
    return [m for _, f in raw if isinstance(m := decode_entry(f).message, DeadLetter)]


def placed(message: Any, division: str) -> list[tuple[str, str, str, int]]:
    """The rows an intact ingest message of this division's stream must account for."""
    if not isinstance(message, dict):
        return []
    if message.get("type") == "record_batch":
        return [r for m in message["records"] for r in placed(m, division)]
    if message.get("type") != "record" or message.get("division") != division:
        return []
    if not 1 <= message["row"] <= MAX_ROW:
        return []
    return [(division, message["window"], message["table"], message["row"])]


async def test_live_layers_survive_hostile_entries_on_every_stream(
        tmp_path: Path, prefix: str, schema: str, redis_url: str, database_url: str,
        redis: aioredis.Redis, pool: asyncpg.Pool) -> None:
    config = write_config(tmp_path / "config", schema, block_ms=50)
    keys = Keys(prefix)
    processes = {layer: await start(layer, config, prefix, redis_url, database_url)
                 for layer in LAYER_NAMES}
    try:
        sync = redis_sync(redis_url)  # fed while the layers start: groups read from 0
        sent: list[Sent] = []
        for channel in channels.CHANNELS:
            sent += feed(sync, keys, channel)
        sync.close()
        await wait_for(lambda: groups_ready(redis, keys), "every layer's groups")
        await wait_for(lambda: drained(redis, keys), "all streams drained")
        exited = {k: p.returncode for k, p in processes.items() if p.returncode is not None}
        assert not exited, [(k, (tmp_path / f"{k}.log").read_text()[-2000:]) for k in exited]
        await check_invariants(redis, pool, keys, schema, sent)
    finally:
        for process in processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            await asyncio.wait_for(process.wait(), 60)


def redis_sync(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=60)


async def groups_ready(client: aioredis.Redis, keys: Keys) -> bool:
    for layer, layer_channels in LAYERS.items():
        for channel in layer_channels:
            stream = keys.stream(DIVISIONS[-1], channel)
            if not await client.exists(stream):
                return False
            names = {g["name"].decode() for g in await client.xinfo_groups(stream)}
            if keys.group(layer) not in names:
                return False
    return True


async def wait_for(check: Any, what: str, timeout: float = 120.0) -> None:
    """Poll a condition until it holds (a bounded wait, not a sleep that hopes)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def check_invariants(client: aioredis.Redis, pool: asyncpg.Pool, keys: Keys, schema: str,
                           sent: list[Sent]) -> None:
    letters = {division: await dead_letters(client, keys, division) for division in DIVISIONS}
    per_entry = Counter((d.stream, d.entry_id) for ds in letters.values() for d in ds)
    for entry in sent:
        count = per_entry[(entry.stream, entry.entry_id)]
        if entry.malformed:
            assert count == 1, f"malformed {entry} dead-lettered {count} times"
        assert count <= entry.elements, f"{entry} dead-lettered {count} times"
    ledger = {(r["division"], r["window"], r["table_name"], r["row"])
              for r in await pool.fetch(
                  f'SELECT division, "window", table_name, "row" FROM "{schema}"."_rows"')}
    dead_rows = {(d.division, d.window, d.table, d.row)
                 for division, ds in letters.items() for d in ds
                 if d.division == division and d.row is not None and 1 <= d.row <= MAX_ROW
                 and d.window is not None and d.table is not None}
    expected = {p for e in sent if e.stream.endswith(f":{channels.INGEST}")
                for p in placed(e.message, keys.division_of(e.stream))}
    missing = expected - ledger - dead_rows
    assert not missing, f"rows that ended nowhere: {sorted(missing)[:10]}"
    checked = 0
    for division in DIVISIONS:
        for window in WINDOWS:
            state = {k.decode(): v.decode() for k, v in (await client.hgetall(
                keys.state(division, f"w:{window}"))).items()}
            for field, seen in state.items():
                if not field.endswith(":seen"):
                    continue
                table = field.removesuffix(":seen")
                bits = await client.bitcount(keys.state(division, f"rows:{window}:{table}"))
                ended = {p for p in ledger | dead_rows if p[:3] == (division, window, table)}
                assert int(seen) == bits == len(ended), (division, window, table)
                checked += 1
    assert checked > 0 and len(expected) > 0  # the fuzzer reached the barrier at all
