"""Property-based fuzzing of live layer processes: hostile entries on every input stream.

Every layer runs as its own OS process, as the Procfile starts them. Hypothesis (fixed
seed, ``ASSAY_FUZZ_EXAMPLES`` examples per input stream, 200 in ``make test``, more in
``make fuzz``) XADDs arbitrary bytes, arbitrary JSON, arbitrary entry fields and
structured envelopes with extreme values into the ingest, bronze, accounted, dead and
windows streams of two divisions, one example at a time. After each example, once every
group of every stream has read and acked everything (stream and group state, read in one
transaction):

* every layer process is still alive;
* the example's entry is dead-lettered no more often than it has elements, exactly once
  when it is malformed, and no entry of an earlier example is dead-lettered again;
* every record of the example sent to ingest with a valid place (its division's stream, a
  row in 1…2^32-1) has ended applied, quarantined or dead-lettered;
* per window and table, the barrier's count of accounted rows equals its bitmap and the
  rows applied + quarantined (the ledger) + dead-lettered for it.

Each check reads only what the example added (the dead letters after the last one read)
and state of bounded size (the ingest windows), so an example costs the same at the
2,000th as at the first. The bulk test XADDs entries of every stream at once, in one
transaction, so the layers read large mixed batches and split the bad entries out of
them; it checks the same invariants when they have drained.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from assay.contracts.messages import MAX_ROW, DeadLetter
from assay.runner import LAYERS
from assay.streams import keys as channels
from assay.streams.codec import decode_entry
from assay.streams.keys import Keys
from tests.conftest import eventually, write_config

# Decoding does not depend on the server versions: once, not again on the standard ports.
pytestmark = pytest.mark.once

EXAMPLES = int(os.environ.get("ASSAY_FUZZ_EXAMPLES", "200"))
BULK = int(os.environ.get("ASSAY_FUZZ_BULK", "200"))
"""Entries per input stream that the bulk test XADDs at once."""
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



def fuzz_settings(examples: int) -> Any:
    """A fixed seed; no shrinking: live layers keep their state from one example to the
    next, so a shrunk example would not run on the state that failed (the failing example
    is reported as generated)."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


Place = tuple[str, str, str, int]
"""Where a row ends: division, window, table, row number."""
Entry = tuple[dict[bytes, bytes], Any, bool]
"""What ``entries`` draws: fields, the message it holds (or its element count), malformed."""


class Sent(msgspec.Struct, frozen=True):
    """One entry the fuzzer XADDed."""

    stream: str
    entry_id: str
    message: Any
    """The structured message it holds intact, if it does."""
    malformed: bool
    """Certainly unreadable: must be dead-lettered exactly once."""
    elements: int = 1


def sent(stream: str, entry_id: str, entry: Entry) -> Sent:
    _, message, malformed = entry
    elements = message if isinstance(message, int) else 1
    if isinstance(message, dict):  # each element, or each row accounted, fails alone
        parts = [*message.get("records", []), *message.get("items", []),
                 *message.get("applied", []), *message.get("quarantined", [])]
        elements = max(1, len(parts))
    return Sent(stream, entry_id, message, malformed, elements)


def placed(message: Any, division: str) -> list[Place]:
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


class Run:
    """Live layer processes under fuzzing, and what the checks carry from one example to
    the next: the last dead letter read per division, the rows dead-lettered so far (of the
    ingest windows: a bounded set) and the ids of every entry fed."""

    def __init__(self, client: aioredis.Redis, pool: asyncpg.Pool, keys: Keys, schema: str,
                 processes: dict[str, asyncio.subprocess.Process], logs: Path) -> None:
        self.redis = client
        self.pool = pool
        self.keys = keys
        self.schema = schema
        self.processes = processes
        self.logs = logs
        self.streams = [keys.stream(d, c) for d in DIVISIONS for c in channels.CHANNELS]
        self.groups = {keys.stream(d, c): [keys.group(layer)
                                           for layer, read in LAYERS.items() if c in read]
                       for d in DIVISIONS for c in channels.CHANNELS}
        self.dead_read = dict.fromkeys(DIVISIONS, "0-0")
        self.dead_rows: set[Place] = set()
        self.fed: set[tuple[str, str]] = set()
        self.bits_checked: set[Place] = set()

    async def feed(self, batch: list[tuple[str, Entry]], whole: bool = False) -> list[Sent]:
        """XADD entries (stream, drawn entry) in one transaction, so a layer reads them in
        one batch; wait until every group has drained them, then check the invariants."""
        pipe = self.redis.pipeline(transaction=True)
        for stream, (fields, _, _) in batch:
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        ids = await pipe.execute()
        added = [sent(stream, entry_id.decode(), entry)
                 for (stream, entry), entry_id in zip(batch, ids, strict=True)]
        await eventually(self.drained, timeout=120, interval=0.005)
        self.check_alive()
        await self.check(added, whole)
        return added

    async def drained(self) -> bool:
        """Every group of every stream has read everything and acked it, at one instant
        (one transaction: a layer acks an entry and XADDs what it forwards atomically, so
        nothing is in flight between streams then). O(streams), not O(entries)."""
        pipe = self.redis.pipeline(transaction=True)
        for stream in self.streams:
            pipe.xinfo_stream(stream)
            pipe.xinfo_groups(stream)
        try:
            replies = await pipe.execute()
        except ResponseError:  # a stream its layer has not created yet
            return False
        for stream, info, groups in zip(self.streams, replies[::2], replies[1::2],
                                        strict=True):
            found = {g["name"].decode(): g for g in groups}
            for name in self.groups[stream]:
                group = found.get(name)
                if group is None or group["pending"] or (
                        group["last-delivered-id"] != info["last-generated-id"]):
                    return False
        return True

    def check_alive(self) -> None:
        exited = {k: p.returncode for k, p in self.processes.items() if p.returncode is not None}
        assert not exited, [(k, c, (self.logs / f"{k}.log").read_text()[-2000:])
                            for k, c in exited.items()]

    async def new_dead_letters(self, division: str) -> list[DeadLetter]:
        """The dead letters of a division after the last one read (the dead stream is never
        trimmed: reading it whole after each example would cost O(examples so far))."""
        after = self.dead_read[division]
        raw: Any = await self.redis.xrange(self.keys.stream(division, channels.DEAD),
                                           min=f"({after}")
        if raw:
            self.dead_read[division] = raw[-1][0].decode()
        return [m for _, f in raw if isinstance(m := decode_entry(f).message, DeadLetter)]

    async def check(self, added: list[Sent], whole: bool = False) -> None:
        letters = {division: await self.new_dead_letters(division) for division in DIVISIONS}
        per_entry = Counter((d.stream, d.entry_id) for ds in letters.values() for d in ds)
        ours = {(e.stream, e.entry_id) for e in added}
        again = [k for k in per_entry if k in self.fed and k not in ours]
        assert not again, f"entries of earlier examples dead-lettered again: {again[:10]}"
        self.fed |= ours
        for entry in added:
            count = per_entry[(entry.stream, entry.entry_id)]
            if entry.malformed:
                assert count == 1, f"malformed {entry} dead-lettered {count} times"
            assert count <= entry.elements, f"{entry} dead-lettered {count} times"
        self.dead_rows |= {(d.division, d.window, d.table, d.row)
                           for division, ds in letters.items() for d in ds
                           if d.division == division and d.window in WINDOWS
                           and d.table is not None and d.row is not None
                           and 1 <= d.row <= MAX_ROW}
        ledger = {(r["division"], r["window"], r["table_name"], r["row"])
                  for r in await self.pool.fetch(
                      f'SELECT division, "window", table_name, "row" FROM "{self.schema}"."_rows"'
                      ' WHERE "window" = ANY($1::text[])', list(WINDOWS))}
        ended = ledger | self.dead_rows
        expected = {p for e in added if e.stream.endswith(f":{channels.INGEST}")
                    for p in placed(e.message, self.keys.division_of(e.stream))}
        missing = expected - ended
        assert not missing, f"rows that ended nowhere: {sorted(missing)[:10]}"
        await self.check_identity(ended, whole)

    async def check_identity(self, ended: set[Place], whole: bool = False) -> None:
        """Per ingest window and table: accounted (the barrier's count) = its bitmap =
        applied + quarantined + dead-lettered.

        The bitmap is checked by the bits of the rows that ended since the last check (a
        row's bit is never cleared): its bits are set exactly when the count grows, so
        count = rows ended with each of their bits set means count = bits = rows ended.
        ``whole`` also counts every bit: BITCOUNT reads the whole bitmap, and a row near
        2^32 makes it 512 MB, so that is done once, at the end, not after each example."""
        windows = [(d, w) for d in DIVISIONS for w in WINDOWS]
        pipe = self.redis.pipeline(transaction=True)
        for division, window in windows:
            pipe.hgetall(self.keys.state(division, f"w:{window}"))
        states = await pipe.execute()
        seen = {(division, window, field.decode().removesuffix(":seen")): int(value)
                for (division, window), state in zip(windows, states, strict=True)
                for field, value in state.items() if field.endswith(b":seen")}
        rows = Counter(p[:3] for p in ended)
        for key in seen.keys() | rows.keys():
            assert seen.get(key, 0) == rows[key], ("accounted ≠ rows ended", key, seen.get(key),
                                                   rows[key])
        fresh = sorted(ended - self.bits_checked)
        pipe = self.redis.pipeline(transaction=False)
        for division, window, table, row in fresh:
            pipe.getbit(self.keys.state(division, f"rows:{window}:{table}"), row)
        unset = [p for p, bit in zip(fresh, await pipe.execute(), strict=True) if not bit]
        assert not unset, f"rows ended without their bit: {unset[:10]}"
        self.bits_checked |= set(fresh)
        if whole:
            pipe = self.redis.pipeline(transaction=False)
            for division, window, table in seen:
                pipe.bitcount(self.keys.state(division, f"rows:{window}:{table}"))
            bits = dict(zip(seen, await pipe.execute(), strict=True))
            assert bits == seen, ("bitmap ≠ accounted", bits, seen)


async def start(layer: str, config: Path, prefix: str, redis_url: str, database_url: str
                ) -> asyncio.subprocess.Process:
    """A layer as the Procfile runs it; its log goes to ``<layer>.log`` next to its config."""
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": prefix, "ASSAY_LOG_LEVEL": "ERROR"}
    with open(config.parent / f"{layer}.log", "wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "assay", "run", layer, "--config", str(config), env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=log)


@pytest.fixture
async def run(tmp_path: Path, prefix: str, schema: str, redis_url: str, database_url: str,
              redis: aioredis.Redis, pool: asyncpg.Pool) -> AsyncIterator[Run]:
    """All five layers as OS processes, their groups created and their streams empty."""
    config = write_config(tmp_path / "config", schema, block_ms=50)
    processes = {layer: await start(layer, config, prefix, redis_url, database_url)
                 for layer in LAYER_NAMES}
    try:
        live = Run(redis, pool, Keys(prefix), schema, processes, config.parent)
        await eventually(live.drained, timeout=120)
        yield live
    finally:
        for process in processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            await asyncio.wait_for(process.wait(), 60)


def on_loop(loop: asyncio.AbstractEventLoop) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a coroutine on the test's event loop from Hypothesis's thread, to its end."""
    def call(coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()
    return call


async def test_each_example_leaves_every_layer_alive_and_every_entry_accounted(run: Run
                                                                               ) -> None:
    """One example at a time into the live layers' streams, every invariant after each."""
    await_ = on_loop(asyncio.get_running_loop())

    def fuzz(channel: str) -> None:
        @fuzz_settings(EXAMPLES)
        @given(division=st.sampled_from(DIVISIONS), entry=entries(channel))
        def example(division: str, entry: Entry) -> None:
            await_(run.feed([(run.keys.stream(division, channel), entry)]))

        example()

    for channel in channels.CHANNELS:  # Hypothesis runs in a thread: the loop runs on
        await asyncio.to_thread(fuzz, channel)
    await run.check([], whole=True)
    assert run.dead_rows and run.bits_checked  # the fuzzer reached the barrier


def drawn(channel: str, count: int) -> list[tuple[str, Entry]]:
    """``count`` generated entries of one channel, each for a division (not yet sent)."""
    found: list[tuple[str, Entry]] = []

    @fuzz_settings(count)
    @given(division=st.sampled_from(DIVISIONS), entry=entries(channel))
    def one(division: str, entry: Entry) -> None:
        found.append((division, entry))

    one()
    return found


async def test_hostile_entries_split_out_of_large_mixed_batches(run: Run) -> None:
    """Entries of every stream XADDed at once: the layers read batches of good and hostile
    entries together and must split each bad one out; the same invariants at the end."""
    batch = [(run.keys.stream(division, channel), entry)
             for channel in channels.CHANNELS for division, entry in drawn(channel, BULK)]
    added = await run.feed(batch, whole=True)
    assert any(e.malformed for e in added) and any(not e.malformed for e in added)
