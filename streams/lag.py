"""How far behind each consumer group is: one snapshot of every division stream.

Read with XINFO STREAM / XINFO GROUPS / XINFO CONSUMERS / XPENDING only, so it
works on Redis 7.0. A group's lag is what XINFO GROUPS reports; Redis reports nil
when entries were deleted ahead of the group (XDEL) or its read counter is unknown,
and then the entries after the group's last-delivered id are counted with XRANGE,
up to a bound (``lag_source`` says which figure it is).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import msgspec
import redis.exceptions

from assay.streams import keys as channels
from assay.streams.client import Client
from assay.streams.keys import Keys

LagSource = Literal["xinfo", "range", "range_bounded"]
"""``xinfo``: Redis's own figure; ``range``: counted; ``range_bounded``: at least this many."""


class ConsumerLag(msgspec.Struct, frozen=True):
    """A consumer of a group: its pending entries and ms since it last talked to Redis."""

    name: str
    pending: int
    idle_ms: int


class GroupLag(msgspec.Struct, frozen=True, kw_only=True):
    """A consumer group on one stream.

    ``rate`` is the entries per second the group read since the previous snapshot
    (from ``entries_read``; ``None`` on the first snapshot or when Redis has no counter).
    """

    group: str
    layer: str
    lag: int
    lag_source: LagSource
    pending: int
    oldest_pending_ms: int | None
    entries_read: int | None
    last_delivered_id: str
    consumers: tuple[ConsumerLag, ...]
    rate: float | None = None


class StreamLag(msgspec.Struct, frozen=True, kw_only=True):
    """One division stream: its length and every group reading it.

    ``missing`` names the layers expected to read this channel that have no group yet.
    """

    stream: str
    division: str
    channel: str
    length: int
    entries_added: int
    groups: tuple[GroupLag, ...]
    missing: tuple[str, ...] = ()


class DeadLetters(msgspec.Struct, frozen=True):
    """A division's dead-letter stream: entries now, and ever added (it is trimmed)."""

    division: str
    length: int
    entries_added: int


class LagReport(msgspec.Struct, frozen=True):
    """Every stream of every division at one instant (``at``, epoch seconds)."""

    at: float
    streams: tuple[StreamLag, ...]
    dead_letters: tuple[DeadLetters, ...]

    def groups(self) -> Iterable[tuple[StreamLag, GroupLag]]:
        for stream in self.streams:
            for group in stream.groups:
                yield stream, group


def by_channel(layers: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Invert ``{layer: [channels]}`` into ``{channel: [layers]}``."""
    inverted: dict[str, list[str]] = {}
    for layer, read in layers.items():
        for channel in read:
            inverted.setdefault(channel, []).append(layer)
    return inverted


async def snapshot(client: Client, keys: Keys, divisions: Sequence[str],
                   layers_by_channel: Mapping[str, Sequence[str]], *,
                   clock: Callable[[], float] = time.time,
                   scan_bound: int = 10_000) -> LagReport:
    """Lag of every group on every stream of ``layers_by_channel``, and the dead letters."""
    streams: list[StreamLag] = []
    dead: list[DeadLetters] = []
    for division in divisions:
        for channel, layers in layers_by_channel.items():
            streams.append(await _stream(client, keys, division, channel, layers, scan_bound))
        info = await _stream_info(client, keys.stream(division, channels.DEAD))
        dead.append(DeadLetters(division, int(info.get("length", 0)),
                                int(info.get("entries-added", 0))))
    return LagReport(clock(), tuple(streams), tuple(dead))


def with_rates(report: LagReport, previous: LagReport | None) -> LagReport:
    """The report with each group's read rate since ``previous`` filled in."""
    elapsed = report.at - previous.at if previous else 0.0
    if previous is None or elapsed <= 0:
        return report
    before = {(s.stream, g.group): g.entries_read for s, g in previous.groups()}
    streams = []
    for stream in report.streams:
        groups = []
        for group in stream.groups:
            read_before = before.get((stream.stream, group.group))
            rate = None
            if group.entries_read is not None and read_before is not None:
                rate = max(group.entries_read - read_before, 0) / elapsed
            groups.append(msgspec.structs.replace(group, rate=rate))
        streams.append(msgspec.structs.replace(stream, groups=tuple(groups)))
    return msgspec.structs.replace(report, streams=tuple(streams))


class LagTracker:
    """Takes snapshots and keeps the previous one, so each carries its read rates."""

    def __init__(self, client: Client, keys: Keys, divisions: Sequence[str],
                 layers_by_channel: Mapping[str, Sequence[str]], *,
                 clock: Callable[[], float] = time.time, scan_bound: int = 10_000) -> None:
        self.redis = client
        self.keys = keys
        self.divisions = list(divisions)
        self.layers_by_channel = dict(layers_by_channel)
        self.clock = clock
        self.scan_bound = scan_bound
        self.previous: LagReport | None = None

    async def take(self) -> LagReport:
        report = await snapshot(self.redis, self.keys, self.divisions, self.layers_by_channel,
                                clock=self.clock, scan_bound=self.scan_bound)
        report = with_rates(report, self.previous)
        self.previous = report
        return report


async def _stream(client: Client, keys: Keys, division: str, channel: str,
                  layers: Sequence[str], scan_bound: int) -> StreamLag:
    name = keys.stream(division, channel)
    info = await _stream_info(client, name)
    groups = await client.xinfo_groups(name) if info else []
    found = [await _group(client, keys, name, g, scan_bound) for g in groups]
    present = {g.layer for g in found}
    return StreamLag(stream=name, division=division, channel=channel,
                     length=int(info.get("length", 0)),
                     entries_added=int(info.get("entries-added", 0)), groups=tuple(found),
                     missing=tuple(layer for layer in layers if layer not in present))


async def _stream_info(client: Client, name: str) -> dict[str, Any]:
    """XINFO STREAM, or an empty dict when the stream does not exist yet."""
    try:
        return dict(await client.xinfo_stream(name))
    except redis.exceptions.ResponseError as exc:
        if "no such key" in str(exc):
            return {}
        raise


async def _group(client: Client, keys: Keys, stream: str, info: dict[str, Any],
                 scan_bound: int) -> GroupLag:
    group = _text(info["name"])
    last_id = _text(info["last-delivered-id"])
    lag = info.get("lag")
    source: LagSource = "xinfo"
    if lag is None:
        lag, source = await _count_after(client, stream, last_id, scan_bound)
    oldest = None
    if int(info["pending"]):
        first = await client.xpending_range(stream, group, min="-", max="+", count=1)
        oldest = int(first[0]["time_since_delivered"]) if first else None
    consumers = await client.xinfo_consumers(stream, group)
    read = info.get("entries-read")
    return GroupLag(
        group=group, layer=group.removeprefix(f"{keys.prefix}:"), lag=int(lag),
        lag_source=source, pending=int(info["pending"]), oldest_pending_ms=oldest,
        entries_read=None if read is None else int(read), last_delivered_id=last_id,
        consumers=tuple(ConsumerLag(_text(c["name"]), int(c["pending"]), int(c["idle"]))
                        for c in consumers))


async def _count_after(client: Client, stream: str, last_id: str, bound: int
                       ) -> tuple[int, LagSource]:
    """Entries after ``last_id``, counted up to ``bound`` (then: at least ``bound``)."""
    entries = await client.xrange(stream, min=f"({last_id}", max="+", count=bound + 1) or []
    if len(entries) > bound:
        return bound, "range_bounded"
    return len(entries), "range"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
