"""The consumer-group loop, written once for every layer.

Read a batch (own pending entries first, then entries of consumers that are gone —
no heartbeat — then entries idle past ``claim_idle_ms``, then new ones), decode it
into typed items, hand them to the layer's processor, and only after the processor
has committed its effects forward its output, write dead letters and ack, in one
Redis transaction per division stream.

A batch whose processing fails is split in halves until the failing item is
isolated; that item alone is retried and finally dead-lettered, its batch-mates
commit. Infrastructure errors (``TransientError``, lost connections) retry the
whole batch with capped backoff and never dead-letter anything; a stop ends the
retrying (what was not acked stays pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import redis.exceptions
import structlog

from assay.contracts.errors import TransientError
from assay.contracts.messages import (
    MAX_ROW,
    Accounted,
    DeadLetter,
    Landed,
    Message,
    Record,
    TableEnd,
)
from assay.streams import keys as channels
from assay.streams.backlog import backlog
from assay.streams.client import CLUSTER_CHANGING, Client
from assay.streams.codec import (
    MALFORMED,
    Fields,
    Item,
    Undecodable,
    decode_entry,
    encode,
    entry_size,
    flatten,
)
from assay.streams.keys import Keys
from assay.streams.reads import by_slot, read_group
from assay.streams.tasks import cancel_until_done

log = structlog.get_logger("assay.streams")

TRANSIENT = (TransientError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
             redis.exceptions.ReadOnlyError, redis.exceptions.TryAgainError,
             ConnectionError, OSError, *CLUSTER_CHANGING)
"""Server faults (BusyLoadingError, a Valkey reading its append-only file, is a
ConnectionError) and a cluster in the middle of a failover: retried with capped backoff
for as long as they last."""


RELEASE = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""
"""Remove a consumer from a group only if it holds nothing, atomically (one stream key)."""


class Stopped(Exception):
    """The consumer was stopped while waiting for a server; what it held stays pending."""

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RuntimeSettings:
    """How a consumer reads, retries and recovers."""

    batch_size: int = 500
    block_ms: int = 1000
    max_deliveries: int = 3
    claim_idle_ms: int = 60_000
    trim_every: int = 20
    max_backlog_entries: int = 100
    """Backpressure: wait after a batch while a stream this layer writes to is this far behind."""
    backoff_start_s: float = 0.2
    backoff_max_s: float = 10.0
    heartbeat_s: float = 1.0
    """How often a consumer renews its heartbeat and looks for consumers that are gone."""
    heartbeat_ttl_ms: int = 3_000
    """A consumer without a heartbeat for this long, and idle as long, is gone: its
    pending entries are claimed, and once it holds nothing it leaves the group."""


@dataclass
class Output:
    """What a processor returns after committing: messages to forward, items to reject.

    ``emits`` are (channel, message) pairs for the division being processed.
    ``rejected`` items are dead-lettered at once with the reason (bad input that no
    retry can fix, such as an unknown table).
    """

    emits: list[tuple[str, Message]] = field(default_factory=list)
    rejected: list[tuple[Item, str]] = field(default_factory=list)
    processed: int = 0
    """Records that reached this layer's table."""
    quarantined: int = 0
    """Records this layer put in quarantine."""


@dataclass
class Done:
    """What processing a batch (or the parts it was split into) came to."""

    emits: list[tuple[str, Fields]] = field(default_factory=list)
    """Messages to forward, encoded already (so one that cannot be encoded fails its batch)."""
    dead: list[DeadLetter] = field(default_factory=list)
    processed: int = 0
    quarantined: int = 0

    def merge(self, other: Done) -> Done:
        return Done(self.emits + other.emits, self.dead + other.dead,
                    self.processed + other.processed, self.quarantined + other.quarantined)


class Processor(Protocol):
    """A layer's logic: receives a typed batch of one division, commits, returns output."""

    layer: str

    async def process(self, items: Sequence[Item]) -> Output: ...


@dataclass
class BatchResult:
    """Counts of one committed batch, for logs, notifications and metrics."""

    layer: str
    division: str
    stream: str
    first_id: str
    last_id: str
    items: int
    dead: int
    emitted: int
    seconds: float
    processed: int = 0
    quarantined: int = 0


def consumer_name(layer: str) -> str:
    return f"{layer}-{socket.gethostname()}-{os.getpid()}"


class Consumer:
    """One consumer of a layer's group, reading every division stream of its channels."""

    def __init__(
        self,
        client: Client,
        keys: Keys,
        processor: Processor,
        divisions: Sequence[str],
        read_channels: Sequence[str],
        settings: RuntimeSettings | None = None,
        name: str | None = None,
        sleep: Sleep = asyncio.sleep,
        on_batch: Callable[[BatchResult], Any] | None = None,
        dead_letters: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.processor = processor
        self.layer = processor.layer
        self.group = keys.group(self.layer)
        self.streams = [keys.stream(d, c) for d in divisions for c in read_channels]
        self.kept = {keys.stream(d, channels.DEAD) for d in divisions}
        """Streams never trimmed: a dead letter's one place is its dead stream."""
        self.settings = settings or RuntimeSettings()
        self.name = name or consumer_name(self.layer)
        self.sleep = sleep
        self.clock = clock
        self.on_batch = on_batch
        self.dead_letters = dead_letters
        """False for a group that only watches a stream another group works on (the
        monitor on the windows stream): that group dead-letters, so an entry has one."""
        self.stopping = asyncio.Event()
        self.dead_lettered = 0
        self.batches = 0
        self.interruptions = 0  # transient errors seen: lost connections, a failover
        self._per_entry: dict[str, float] = {}
        self._looked: dict[str, float] = {}
        self._release = client.register_script(RELEASE)

    async def ensure_groups(self) -> None:
        """Create the group on every stream it reads, idempotently."""
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def leave(self) -> None:
        """At a clean exit, remove this consumer from its groups when it holds nothing.

        A server fault ends the leaving at once: each further command would wait as long
        (a hung Redis: the socket timeout, once per stream, past the grace of a stop). A
        consumer that did not leave is removed by a live one of its group once its
        heartbeat has expired (``_claim_from_gone``)."""
        try:
            await self.redis.delete(self.keys.alive(self.layer, self.name))
            for stream in self.streams:
                try:
                    info: Any = await self.redis.xpending_range(
                        stream, self.group, min="-", max="+", count=1, consumername=self.name)
                    if not info:
                        await self.redis.xgroup_delconsumer(stream, self.group, self.name)
                except redis.exceptions.ResponseError as exc:
                    log.warning("consumer_leave_failed", stream=stream, error=str(exc))
        except (redis.exceptions.RedisError, *TRANSIENT) as exc:
            log.warning("consumer_leave_failed", layer=self.layer, error=str(exc))

    def stop(self) -> None:
        """Stop reading; the batch in hand is finished, committed and acked."""
        self.stopping.set()

    async def run(self, burst: bool = False) -> None:
        """Consume until stopped; with ``burst`` return once every stream is drained.

        Stopped while a server is down, it returns at once: the batch in hand was not
        acked and stays pending for whoever reads the stream next.
        """
        done = asyncio.Event()
        beat = asyncio.create_task(self._beat(done))
        try:
            await self._retrying(self.beat_once)
            await self._retrying(self.ensure_groups)
            await asyncio.gather(*(self._run_slot(s, burst) for s in by_slot(self.streams)))
        except Stopped:
            log.warning("consumer_stopped_while_retrying", layer=self.layer, consumer=self.name)
        finally:
            # The heartbeat ends by itself once ``done`` is set, even if a command in flight
            # turned its cancel into a connection error; asyncio.wait lets a cancel of this
            # task through (the grace's cancel must never be swallowed here).
            done.set()
            cancel_until_done(beat)
            await asyncio.wait({beat})

    async def beat_once(self) -> None:
        """Announce that this consumer is alive for the next ``heartbeat_ttl_ms``."""
        await self.redis.set(self.keys.alive(self.layer, self.name), b"1",
                             px=self.settings.heartbeat_ttl_ms)

    async def _beat(self, done: asyncio.Event) -> None:
        """Renew the heartbeat every ``heartbeat_s`` until ``done`` is set."""
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.settings.heartbeat_s)
            if done.is_set():
                return
            try:
                await self.beat_once()
            except TRANSIENT as exc:
                log.warning("heartbeat_failed", layer=self.layer, error=str(exc))

    async def _run_slot(self, streams: list[str], burst: bool) -> None:
        """The streams of one cluster slot: each in turn while any has work, then one
        blocking read on all of them together (``streams.reads``)."""
        bounds = {s: log.bind(layer=self.layer, stream=s, group=self.group, consumer=self.name)
                  for s in streams}
        history = set(streams)
        batches = dict.fromkeys(streams, 0)
        interruptions = self.interruptions
        while not self.stopping.is_set():
            if self.interruptions != interruptions:
                # After a lost connection or a failover, what was read but not acked may
                # still be ours: read our pending entries again before anything new.
                interruptions, history = self.interruptions, set(streams)
            work: list[tuple[str, list[tuple[str, dict[bytes, bytes], int]]]] = []
            for stream in streams:
                entries = await self._next(stream, history)
                if entries:
                    work.append((stream, entries))
            if not work:
                work = await self._retrying(partial(self._read, streams, block=not burst))
                if not work and burst:
                    return
            for stream, entries in work:  # everything read is handled, also when stopping
                emitted = await self._handle(bounds[stream], stream, entries)
                batches[stream] += 1
                if not burst:
                    await self._wait_downstream(bounds[stream], emitted)
                if batches[stream] % self.settings.trim_every == 0 and stream not in self.kept:
                    await self._retrying(partial(self.trim, stream))

    async def _next(self, stream: str, history: set[str]
                    ) -> list[tuple[str, dict[bytes, bytes], int]]:
        """A stream's next batch without waiting: own pending entries (until there are
        none; ``history`` holds the streams still being looked at), entries of consumers
        that are gone (looked for once a heartbeat), reclaimed ones, new ones."""
        if stream in history:
            entries = await self._retrying(partial(self._history, stream))
            if entries:
                return entries
            history.discard(stream)
        if self._time_to_look(stream):
            entries = await self._retrying(partial(self._claim_from_gone, stream))
            if entries:
                return entries
        entries = await self._retrying(partial(self._claim, stream))
        if entries:
            return entries
        fresh = await self._retrying(partial(self._read, [stream]))
        return fresh[0][1] if fresh else []

    def _count(self, stream: str) -> int:
        """Entries to read so that a batch holds about ``batch_size`` records."""
        per_entry = self._per_entry.get(stream, float(self.settings.batch_size))
        return max(1, int(self.settings.batch_size / per_entry))

    async def _read(self, streams: list[str], block: bool = False
                    ) -> list[tuple[str, list[tuple[str, dict[bytes, bytes], int]]]]:
        """New entries of streams of one slot, in one read (blocking, ``block_ms``, or not)."""
        found = await read_group(self.redis, self.group, self.name, dict.fromkeys(streams, ">"),
                                 count=min(self._count(s) for s in streams),
                                 block_ms=self.settings.block_ms if block else None)
        return [(stream, [(i, f, 1) for i, f in entries if f is not None])
                for stream, entries in found.items() if entries]

    async def _history(self, stream: str) -> list[tuple[str, dict[bytes, bytes], int]]:
        """This consumer's own pending entries (from before a restart), oldest first."""
        found = await read_group(self.redis, self.group, self.name, {stream: "0"},
                                 count=self._count(stream))
        raw = found.get(stream, [])
        gone = [i for i, f in raw if f is None]
        if gone:
            # Trimmed while pending: nothing left to process; ack so they stop blocking us.
            log.error("pending_entries_deleted", stream=stream, ids=gone)
            await self.redis.xack(stream, self.group, *gone)
        entries = [(i, f) for i, f in raw if f is not None]
        return await self._with_deliveries(stream, entries) if entries else []

    def _time_to_look(self, stream: str) -> bool:
        now = self.clock()
        if now - self._looked.get(stream, float("-inf")) < self.settings.heartbeat_s:
            return False
        self._looked[stream] = now
        return True

    async def _claim_from_gone(self, stream: str) -> list[tuple[str, dict[bytes, bytes], int]]:
        """Entries pending with consumers that are gone become ours; gone consumers that
        hold nothing are removed from the group.

        Gone: no heartbeat, and no read for ``heartbeat_ttl_ms`` either (so a live
        consumer that lost its heartbeat for a moment keeps its entries).
        """
        ttl = self.settings.heartbeat_ttl_ms
        consumers: Any = await self.redis.xinfo_consumers(stream, self.group)
        for consumer in consumers:
            name = _text(consumer["name"])
            if name == self.name or int(consumer["idle"]) < ttl:
                continue
            if await self.redis.exists(self.keys.alive(self.layer, name)):
                continue
            if int(consumer["pending"]) == 0:
                if int(await self._release(keys=[stream], args=[self.group, name])) >= 0:
                    log.warning("consumer_removed", layer=self.layer, stream=stream,
                             gone=name, idle_ms=int(consumer["idle"]))
                continue
            pending: Any = await self.redis.xpending_range(
                stream, self.group, min="-", max="+", count=self._count(stream),
                consumername=name)
            ids = [p["message_id"] for p in pending]
            if not ids:
                continue
            reply: Any = await self.redis.xclaim(stream, self.group, self.name,
                                                 min_idle_time=ttl, message_ids=ids)
            claimed = [(_text(i), f) for i, f in reply if f is not None]
            if claimed:
                log.warning("entries_claimed_from_gone_consumer", stream=stream, gone=name,
                            count=len(claimed), first_id=claimed[0][0],
                            last_id=claimed[-1][0])
                return await self._with_deliveries(stream, claimed)
        return []

    async def _claim(self, stream: str) -> list[tuple[str, dict[bytes, bytes], int]]:
        """Entries left pending by a consumer idle past the threshold become ours."""
        reply: Any = await self.redis.xautoclaim(
            stream, self.group, self.name, min_idle_time=self.settings.claim_idle_ms,
            start_id="0-0", count=self._count(stream))
        claimed = [(_text(i), f) for i, f in reply[1] if f is not None]
        deleted = reply[2] if len(reply) > 2 else []
        if deleted:
            # Entries trimmed away while pending cannot be processed; say so, loudly.
            log.error("pending_entries_deleted", stream=stream, ids=[_text(i) for i in deleted])
        if claimed:
            log.warning("entries_reclaimed", stream=stream, count=len(claimed),
                        first_id=claimed[0][0], last_id=claimed[-1][0])
            return await self._with_deliveries(stream, claimed)
        return []

    async def _with_deliveries(self, stream: str, entries: list[tuple[str, dict[bytes, bytes]]]
                               ) -> list[tuple[str, dict[bytes, bytes], int]]:
        pending: Any = await self.redis.xpending_range(
            stream, self.group, min=entries[0][0], max=entries[-1][0],
            count=len(entries) * 2, consumername=self.name)
        counts = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return [(i, f, counts.get(i, 1)) for i, f in entries]

    async def _handle(self, bound: Any, stream: str,
                      entries: list[tuple[str, dict[bytes, bytes], int]]) -> set[str]:
        started = time.perf_counter()
        items: list[Item] = []
        dead: list[DeadLetter] = []
        largest = 0
        for entry_id, fields, deliveries in entries:
            decoded = decode_entry(fields)
            dead.extend(self._undecodable(stream, entry_id, deliveries, failure)
                        for failure in decoded.failures)
            message = decoded.message
            if message is None:
                continue
            if deliveries > self.settings.max_deliveries:
                # Delivered again and again without an ack: a consumer died on it each time.
                reason = (f"delivered {deliveries} times without an ack "
                          f"(max_deliveries={self.settings.max_deliveries})")
                dead.extend(self._dead_letter(i, reason)
                            for i in flatten(stream, entry_id, message, deliveries))
                continue
            flat = flatten(stream, entry_id, message, deliveries, entry_size(fields))
            if not flat:  # an empty batch: nothing to process, but it must end somewhere
                dead.append(self._undecodable(stream, entry_id, deliveries, Undecodable(
                    f"{type(message).__name__} without elements", b"".join(fields.values()))))
                continue
            largest = max(largest, len(flat))
            items.extend(flat)
        # Entries may carry whole batches: size reads by the largest entry seen (forgotten only
        # slowly), so a batch stays near batch_size records however entry sizes mix.
        previous = self._per_entry.get(stream, 0.0)
        self._per_entry[stream] = max(float(largest), previous * 0.99, 1.0)
        batch_log = bound.bind(first_id=entries[0][0], last_id=entries[-1][0],
                               division=self.keys.division_of(stream))
        done = Done()
        if items:
            done = await self._retrying(lambda: self._isolating(batch_log, items))
        dead.extend(done.dead)
        if not self.dead_letters:
            dead = []
        await self._retrying(
            lambda: self._commit(stream, [e[0] for e in entries], done.emits, dead))
        self.dead_lettered += len(dead)
        self.batches += 1
        result = BatchResult(self.layer, self.keys.division_of(stream), stream, entries[0][0],
                             entries[-1][0], len(items), len(dead), len(done.emits),
                             time.perf_counter() - started, done.processed, done.quarantined)
        batch_log.debug("batch_committed", items=result.items, processed=result.processed,
                        quarantined=result.quarantined, dead=result.dead,
                        emitted=result.emitted, seconds=round(result.seconds, 4))
        if self.on_batch is not None:
            self.on_batch(result)
        division = self.keys.division_of(stream)
        return {self.keys.stream(division, channel) for channel, _ in done.emits}

    async def _wait_downstream(self, bound: Any, streams: set[str]) -> None:
        """Backpressure between layers: don't run further ahead of the next layer."""
        for target in streams:
            delay = 0.05
            while not self.stopping.is_set():
                behind = await self._retrying(partial(backlog, self.redis, target))
                if behind is None or behind <= self.settings.max_backlog_entries:
                    break
                bound.debug("waiting_for_downstream", target=target, behind=behind)
                await self.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _isolating(self, batch_log: Any, items: Sequence[Item]) -> Done:
        """Process items; on failure split until the failing item is alone."""
        try:
            output = await self.processor.process(items)
            done = self._done(batch_log, output)
        except TRANSIENT:
            raise
        except Exception as exc:
            if len(items) > 1:
                batch_log.warning("batch_failed_splitting", items=len(items),
                                  error=f"{type(exc).__name__}: {exc}")
                mid = len(items) // 2
                left = await self._isolating(batch_log, items[:mid])
                return left.merge(await self._isolating(batch_log, items[mid:]))
            return await self._retry_alone(batch_log, items[0], exc)
        return done

    async def _retry_alone(self, batch_log: Any, item: Item, error: Exception) -> Done:
        deliveries = item.deliveries
        while deliveries < self.settings.max_deliveries:
            deliveries += 1
            try:
                output = await self.processor.process([item])
                done = self._done(batch_log, output)
            except TRANSIENT:
                raise
            except Exception as exc:
                error = exc
                continue
            return done
        letter = self._dead_letter(item, f"{type(error).__name__}: {error}", deliveries)
        batch_log.error("item_dead_lettered", entry_id=item.entry_id, index=item.index,
                        error=letter.error, deliveries=deliveries)
        return Done(dead=[letter])

    def _done(self, batch_log: Any, output: Output) -> Done:
        dead = [self._dead_letter(item, reason) for item, reason in output.rejected]
        for letter in dead:
            batch_log.warning("item_rejected", entry_id=letter.entry_id, error=letter.error)
        emits = [(channel, encode(message)) for channel, message in output.emits]
        return Done(emits, dead, output.processed, output.quarantined)

    def _undecodable(self, stream: str, entry_id: str, deliveries: int,
                     failure: Undecodable) -> DeadLetter:
        log.warning("entry_undecodable", layer=self.layer, stream=stream, entry_id=entry_id,
                    error=failure.reason)
        return DeadLetter(layer=self.layer, stream=stream, entry_id=entry_id,
                          error=failure.reason, deliveries=deliveries, raw=failure.raw,
                          fields=list(failure.fields), division=failure.division,
                          table=failure.table, window=failure.window, row=failure.row)

    def _dead_letter(self, item: Item, reason: str, deliveries: int | None = None) -> DeadLetter:
        message = item.message
        division = table = window = None
        row = None
        if isinstance(message, Landed):
            message = message.record
        if isinstance(message, Record | TableEnd | Accounted):
            division, table, window = message.division, message.table, message.window
        if isinstance(message, Record):
            row = message.row
        elif isinstance(message, Accounted) and len(message.applied + message.quarantined) == 1:
            row = (message.applied + message.quarantined)[0]  # one row of an entry, alone
        if row is not None and not 1 <= row <= MAX_ROW:
            row = None
        try:
            raw = encode(item.message)[b"msgpack"]
        except MALFORMED as exc:  # cannot happen for a decoded message; never crash on it
            raw, reason = b"", f"{reason} (not re-encodable: {exc})"
        return DeadLetter(layer=self.layer, stream=item.stream, entry_id=item.entry_id,
                          error=reason, deliveries=deliveries or item.deliveries,
                          division=division, table=table, window=window, row=row, raw=raw)

    async def _commit(self, stream: str, ids: list[str], emits: list[tuple[str, Fields]],
                      dead: list[DeadLetter]) -> None:
        """Forward, dead-letter and ack in one transaction on the division's slot."""
        division = self.keys.division_of(stream)
        async with self.redis.pipeline(transaction=True) as pipe:
            for channel, fields in emits:
                pipe.xadd(self.keys.stream(division, channel), fields)
            for letter in dead:
                pipe.xadd(self.keys.stream(division, channels.DEAD), encode(letter))
            pipe.xack(stream, self.group, *ids)
            await pipe.execute()

    async def trim(self, stream: str) -> int:
        """Trim entries that every group has delivered and acked; never anything else.

        Each group keeps everything after the last entry delivered to it when the groups
        were listed, and every entry it still had pending when asked a moment later. The
        group may ack or read in between: an entry it acks leaves its pending list and
        one it reads comes after the listed position, so both bounds stay safe.
        """
        groups: Any = await self.redis.xinfo_groups(stream)
        if not groups:
            return 0
        floor: str | None = None
        for group in groups:
            candidate = _next_id(_text(group["last-delivered-id"]))
            if int(group["pending"]) > 0:
                summary: Any = await self.redis.xpending(stream, group["name"])
                if summary["min"] is not None:  # None: all acked since the listing
                    candidate = min(candidate, _text(summary["min"]), key=_id_key)
            if floor is None or _id_key(candidate) < _id_key(floor):
                floor = candidate
        if floor is None or floor == "0-1":
            return 0
        trimmed = int(await self.redis.xtrim(stream, minid=floor, approximate=False))
        log.debug("stream_trimmed", layer=self.layer, stream=stream, below=floor,
                  entries=trimmed, groups=[(_text(g["name"]), int(g["pending"]),
                                            _text(g["last-delivered-id"])) for g in groups])
        return trimmed

    async def _retrying(self, action: Callable[[], Awaitable[Any]]) -> Any:
        """Run an action, retrying server faults with capped exponential backoff.

        Forever, however long the outage; a stop ends the waiting (``Stopped``).
        """
        delay = self.settings.backoff_start_s
        while True:
            try:
                return await action()
            except TRANSIENT as exc:
                self.interruptions += 1
                if self.stopping.is_set():
                    raise Stopped from exc
                log.warning("transient_error", layer=self.layer, error=f"{type(exc).__name__}: "
                            f"{exc}", retry_in_s=delay)
                await self._pause(delay)
                delay = min(delay * 2, self.settings.backoff_max_s)

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short by a stop."""
        waits = [asyncio.ensure_future(self.sleep(seconds)),
                 asyncio.ensure_future(self.stopping.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _next_id(entry_id: str) -> str:
    ms, seq = _id_key(entry_id)
    return f"{ms}-{seq + 1}"
