"""Lag snapshots against a real Redis, and how ``assay lag`` shows them."""

from __future__ import annotations

import io

import msgspec
import redis.asyncio as aioredis

from assay.ops.lag_view import CLEAR, render_json, render_table, watch
from assay.streams.keys import BRONZE, DEAD, INGEST, Keys
from assay.streams.lag import (
    ConsumerLag,
    DeadLetters,
    GroupLag,
    LagReport,
    LagTracker,
    StreamLag,
    by_channel,
    snapshot,
)

READERS = {INGEST: ["bronze"]}


async def backlog(redis: aioredis.Redis, keys: Keys, entries: int = 100, read: int = 40,
                  acked: int = 25) -> tuple[str, list[bytes]]:
    """A stream of ``entries``; bronze's group read ``read`` of them and acked ``acked``."""
    stream = keys.stream("east", INGEST)
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(entries):
            pipe.xadd(stream, {b"n": str(i).encode()})
        ids: list[bytes] = await pipe.execute()
    await redis.xgroup_create(stream, keys.group("bronze"), id="0")
    await redis.xreadgroup(keys.group("bronze"), "c1", {stream: ">"}, count=read)
    if acked:
        await redis.xack(stream, keys.group("bronze"), *ids[:acked])
    return stream, ids


def only_group(report: LagReport, stream: str) -> tuple[StreamLag, GroupLag]:
    [found] = [s for s in report.streams if s.stream == stream]
    [group] = found.groups
    return found, group


async def test_lag_and_pending_are_what_xinfo_reports(redis: aioredis.Redis, keys: Keys) -> None:
    stream, _ = await backlog(redis, keys)
    found, group = only_group(await snapshot(redis, keys, ["east"], READERS), stream)
    [info] = await redis.xinfo_groups(stream)
    assert (found.length, group.lag, group.pending, group.lag_source) == (100, 60, 15, "xinfo")
    assert (group.lag, group.pending, group.entries_read) == (
        info["lag"], info["pending"], info["entries-read"])


async def test_oldest_pending_age_is_xpending_idle(redis: aioredis.Redis, keys: Keys) -> None:
    stream, ids = await backlog(redis, keys)
    await redis.xclaim(stream, keys.group("bronze"), "c1", 0, [ids[25]], idle=90_000,
                       justid=True)
    _, group = only_group(await snapshot(redis, keys, ["east"], READERS), stream)
    assert group.oldest_pending_ms is not None
    assert 90_000 <= group.oldest_pending_ms < 95_000


async def test_lag_is_counted_when_redis_reports_none(redis: aioredis.Redis,
                                                      keys: Keys) -> None:
    stream, ids = await backlog(redis, keys)
    await redis.xdel(stream, ids[70])
    [info] = await redis.xinfo_groups(stream)
    _, group = only_group(await snapshot(redis, keys, ["east"], READERS), stream)
    assert (info["lag"], group.lag, group.lag_source) == (None, 59, "range")


async def test_counted_lag_stops_at_the_bound(redis: aioredis.Redis, keys: Keys) -> None:
    stream, ids = await backlog(redis, keys)
    await redis.xdel(stream, ids[70])
    report = await snapshot(redis, keys, ["east"], READERS, scan_bound=10)
    _, group = only_group(report, stream)
    assert (group.lag, group.lag_source) == (10, "range_bounded")


async def test_consumers_show_their_pending_entries(redis: aioredis.Redis, keys: Keys) -> None:
    stream, _ = await backlog(redis, keys, read=40, acked=0)
    await redis.xreadgroup(keys.group("bronze"), "c2", {stream: ">"}, count=5)
    _, group = only_group(await snapshot(redis, keys, ["east"], READERS), stream)
    assert sorted((c.name, c.pending) for c in group.consumers) == [("c1", 40), ("c2", 5)]


async def test_a_stream_without_the_group_names_the_missing_layer(redis: aioredis.Redis,
                                                                  keys: Keys) -> None:
    report = await snapshot(redis, keys, ["west"], {INGEST: ["bronze"], BRONZE: ["silver"]})
    assert [(s.channel, s.length, s.groups, s.missing) for s in report.streams] == [
        (INGEST, 0, (), ("bronze",)), (BRONZE, 0, (), ("silver",))]


async def test_dead_letters_count_entries_ever_added(redis: aioredis.Redis, keys: Keys) -> None:
    for i in range(3):
        await redis.xadd(keys.stream("east", DEAD), {b"n": str(i).encode()})
    await redis.xtrim(keys.stream("east", DEAD), maxlen=1, approximate=False)
    report = await snapshot(redis, keys, ["east", "west"], READERS)
    assert report.dead_letters == (DeadLetters("east", 1, 3), DeadLetters("west", 0, 0))


async def test_rate_is_entries_read_per_second_between_snapshots(redis: aioredis.Redis,
                                                                 keys: Keys) -> None:
    stream, _ = await backlog(redis, keys)
    now = [1000.0]
    tracker = LagTracker(redis, keys, ["east"], READERS, clock=lambda: now[0])
    _, first = only_group(await tracker.take(), stream)
    await redis.xreadgroup(keys.group("bronze"), "c1", {stream: ">"}, count=30)
    now[0] += 10
    _, second = only_group(await tracker.take(), stream)
    assert (first.rate, second.rate) == (None, 3.0)


def test_readers_by_channel_inverts_the_layers() -> None:
    layers = {"bronze": [INGEST], "silver": [BRONZE], "barrier": ["accounted", DEAD]}
    assert by_channel(layers) == {INGEST: ["bronze"], BRONZE: ["silver"],
                                  "accounted": ["barrier"], DEAD: ["barrier"]}


REPORT = LagReport(
    at=1_700_000_000.0,
    streams=(
        StreamLag(stream="assay:{east}:ingest", division="east", channel="ingest", length=100,
                  entries_added=100, groups=(GroupLag(
                      group="assay:bronze", layer="bronze", lag=60, lag_source="xinfo",
                      pending=15, oldest_pending_ms=90_500, entries_read=40,
                      last_delivered_id="1-39", rate=12.5,
                      consumers=(ConsumerLag("bronze-a", 15, 1200),
                                 ConsumerLag("bronze-b", 0, 300))),)),
        StreamLag(stream="assay:{east}:bronze", division="east", channel="bronze", length=7,
                  entries_added=7, groups=(), missing=("silver",)),
    ),
    dead_letters=(DeadLetters("east", 3, 5),),
)


def test_table_shows_one_row_per_group() -> None:
    assert render_table(REPORT).splitlines() == [
        "assay lag at 2023-11-14 22:13:20 UTC",
        "",
        "STREAM       GROUP              LENGTH  LAG  PENDING  OLDEST  CONSUMERS  IDLE  RATE/S",
        "east/ingest  bronze             100     60   15       90.5s   2          0.3s  12.5",
        "east/bronze  silver (no group)  7",
        "",
        "dead letters: east 3",
    ]


def test_json_decodes_back_into_the_report() -> None:
    assert msgspec.json.decode(render_json(REPORT), type=LagReport) == REPORT


async def test_watch_redraws_in_place_each_round() -> None:
    out = io.StringIO()
    slept: list[float] = []

    async def take() -> LagReport:
        return REPORT

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    await watch(take, render_table, out, interval_s=2.0, sleep=sleep, times=3)
    screens = out.getvalue().split(CLEAR)
    assert (screens[0], len(screens), slept) == ("", 4, [2.0, 2.0])
    assert screens[1] == render_table(REPORT) + "\n"
