"""Alert rules raise once and resolve once; the monitor ties snapshots, metrics and alerts."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from assay.contracts.messages import WindowEvent
from assay.contracts.ops import (
    AlertsConfig,
    BatchFailed,
    ConsumerIdle,
    DeadLetterGrowth,
    LagAbove,
    NotificationsConfig,
    PendingOlderThan,
    WebhookConfig,
    WindowTimedOut,
)
from assay.ops.alerts import Alerts, AlertStore
from assay.ops.metrics import Metrics
from assay.ops.monitor import Monitor, serve
from assay.ops.notify import Notifier, from_batch
from assay.ops.observe import worker_observer
from assay.streams.codec import encode
from assay.streams.consumer import BatchResult, RuntimeSettings
from assay.streams.keys import INGEST, WINDOWS, Keys
from assay.streams.lag import ConsumerLag, DeadLetters, GroupLag, LagReport, LagTracker, StreamLag
from tests.ops_helpers import HttpReceiver, captured_logs, events

READERS = {INGEST: ["bronze"]}


def report(at: float = 0.0, lag: int = 0, pending: int = 0, oldest_ms: int | None = None,
           idle_ms: int = 0, dead_added: int = 0) -> LagReport:
    """One division (east), bronze's group on its ingest stream."""
    group = GroupLag(group="t:bronze", layer="bronze", lag=lag, lag_source="xinfo",
                     pending=pending, oldest_pending_ms=oldest_ms, entries_read=0,
                     last_delivered_id="0-0", consumers=(ConsumerLag("bronze-1", pending,
                                                                     idle_ms),))
    stream = StreamLag(stream="t:{east}:ingest", division="east", channel=INGEST, length=lag,
                       entries_added=lag, groups=(group,))
    return LagReport(at, (stream,), (DeadLetters("east", 0, dead_added),))


def window(status: Any, name: str = "w1") -> WindowEvent:
    return WindowEvent(division="east", window=name, status=status, tables={"item": 10},
                       failed={}, at=0.0)


async def backlog(redis: aioredis.Redis, keys: Keys, entries: int, read: int) -> str:
    stream = keys.stream("east", INGEST)
    for i in range(entries):
        await redis.xadd(stream, {b"n": str(i).encode()})
    await redis.xgroup_create(stream, keys.group("bronze"), id="0")
    await redis.xreadgroup(keys.group("bronze"), "c1", {stream: ">"}, count=read)
    return stream


async def test_lag_alert_is_raised_once_and_resolved_once(redis: aioredis.Redis,
                                                          keys: Keys) -> None:
    stream = await backlog(redis, keys, entries=100, read=40)
    tracker = LagTracker(redis, keys, ["east"], READERS)
    alerts = Alerts([LagAbove(entries=50)], divisions={"east": "East"})
    with captured_logs() as logs:
        for _ in range(3):
            await alerts.check(await tracker.take())
        await redis.xreadgroup(keys.group("bronze"), "c1", {stream: ">"}, count=20)
        for _ in range(3):
            await alerts.check(await tracker.take())
    [raised] = events(logs, "alert_raised")
    [resolved] = events(logs, "alert_resolved")
    assert (raised["rule"], raised["log_level"], raised["message"]) == (
        "lag_above", "warning", "bronze lag 60 > 50 on ingest")
    assert (resolved["subject"], resolved["log_level"]) == (raised["subject"], "info")
    assert alerts.active == {}


async def test_alerts_and_resolutions_reach_the_sinks() -> None:
    async with HttpReceiver() as hook:
        notifier = Notifier(NotificationsConfig(webhook=WebhookConfig(url=hook.url)), "PROD")
        alerts = Alerts([LagAbove(entries=50)], notifier=notifier, divisions={"east": "East"})
        for lag in (60, 70, 10, 5):
            await alerts.check(report(lag=lag))
    assert [b["line"] for b in hook.bodies] == [
        "[PROD] [ALERT] LAG_ABOVE — EAST — bronze lag 60 > 50 on ingest",
        "[PROD] [RESOLVED] LAG_ABOVE — EAST — bronze lag 60 > 50 on ingest",
    ]


async def test_a_restarted_monitor_neither_repeats_nor_forgets_its_alerts(
        redis: aioredis.Redis, keys: Keys) -> None:
    store = AlertStore(redis, keys.alerts())
    async with HttpReceiver() as hook:
        notifier = Notifier(NotificationsConfig(webhook=WebhookConfig(url=hook.url)), "PROD")

        async def monitor_process() -> Alerts:
            alerts = Alerts([LagAbove(entries=50), WindowTimedOut()], notifier=notifier,
                            divisions={"east": "East"}, store=store)
            await alerts.restore()
            return alerts

        first = await monitor_process()
        await first.check(report(lag=60))
        await first.window(window("timed_out"))
        restarted = await monitor_process()
        assert set(restarted.active) == set(first.active)
        await restarted.check(report(lag=70))  # still lagging: nothing new to say
        await restarted.window(window("timed_out", "w2"))  # still timing out: nothing new
        await restarted.check(report(lag=10))
        again = await monitor_process()
        assert [key[0] for key in again.active] == ["window_timed_out"]
        await again.window(window("completed", "w3"))
        assert (await monitor_process()).active == {}
    assert [b["line"] for b in hook.bodies] == [
        "[PROD] [ALERT] LAG_ABOVE — EAST — bronze lag 60 > 50 on ingest",
        "[PROD] [ALERT] WINDOW_TIMED_OUT — EAST — window w1 timed out",
        "[PROD] [RESOLVED] LAG_ABOVE — EAST — bronze lag 60 > 50 on ingest",
        "[PROD] [RESOLVED] WINDOW_TIMED_OUT — EAST — window w1 timed out",
    ]


async def test_an_alert_is_logged_at_its_rule_severity() -> None:
    alerts = Alerts([LagAbove(entries=50, severity="error")])
    with captured_logs() as logs:
        await alerts.check(report(lag=60))
    assert [e["log_level"] for e in events(logs, "alert_raised")] == ["error"]


async def test_old_pending_entry_raises(redis: aioredis.Redis, keys: Keys) -> None:
    stream = await backlog(redis, keys, entries=10, read=5)
    [(first, _)] = await redis.xrange(stream, count=1)
    await redis.xclaim(stream, keys.group("bronze"), "c1", 0, [first], idle=400_000,
                       justid=True)
    alerts = Alerts([PendingOlderThan(seconds=300)])
    await alerts.check(await LagTracker(redis, keys, ["east"], READERS).take())
    assert [(a.rule, a.finding.subject) for a in alerts.active.values()] == [
        ("pending_older_than", f"{stream} {keys.group('bronze')}")]


async def test_idle_consumer_alerts_only_while_its_group_has_lag() -> None:
    alerts = Alerts([ConsumerIdle(seconds=600)])
    await alerts.check(report(lag=0, idle_ms=700_000))
    quiet = dict(alerts.active)
    await alerts.check(report(lag=5, idle_ms=700_000))
    assert (quiet, [a.finding.subject for a in alerts.active.values()]) == (
        {}, ["t:{east}:ingest t:bronze bronze-1"])


async def test_dead_letter_growth_resolves_once_the_window_passes() -> None:
    alerts = Alerts([DeadLetterGrowth(entries=2, within_s=300)])
    seen = []
    for at, added in ((0, 0), (15, 2), (30, 2), (400, 2)):
        await alerts.check(report(at=at, dead_added=added))
        seen.append(len(alerts.active))
    assert seen == [0, 1, 1, 0]


async def test_timed_out_window_raises_until_the_next_outcome() -> None:
    alerts = Alerts([WindowTimedOut()])
    seen = []
    for event in (window("timed_out", "w1"), window("timed_out", "w2"), window("completed")):
        await alerts.window(event)
        seen.append(len(alerts.active))
    assert seen == [1, 1, 0]


async def test_failed_batch_raises_until_the_next_batch() -> None:
    alerts = Alerts([BatchFailed()])
    seen = []
    for processed, failed in ((0, 10), (0, 3), (8, 2)):
        await alerts.batch(from_batch("PROD", "silver", "East", processed, failed))
        seen.append(len(alerts.active))
    assert seen == [1, 1, 0]


async def test_batches_from_the_hook_raise_and_resolve() -> None:
    observer = worker_observer(None, None, "PROD", {"east": "East"})
    with captured_logs() as logs:
        for items in (0, 0, 10):
            observer(BatchResult("silver", "east", "s", "1-0", "2-0", items=items, dead=3,
                                 emitted=0, seconds=0.1, processed=items))
        await observer.close()
    assert [e["event"] for e in logs if e["event"].startswith("alert_")] == [
        "alert_raised", "alert_resolved"]


async def test_active_alerts_are_a_gauge_per_rule() -> None:
    metrics = Metrics()
    alerts = Alerts([LagAbove(entries=50), BatchFailed()], metrics=metrics)
    await alerts.check(report(lag=60))
    value = metrics.registry.get_sample_value
    assert (value("assay_alert_active", {"rule": "lag_above"}),
            value("assay_alert_active", {"rule": "batch_failed"})) == (1.0, 0.0)


def test_rules_decode_from_json() -> None:
    raw = b"""{"check_every_s": 5, "rules": [
        {"rule": "lag_above", "entries": 5000, "layer": "silver", "severity": "error"},
        {"rule": "window_timed_out"}]}"""
    config = msgspec.json.decode(raw, type=AlertsConfig)
    assert config.rules == [LagAbove(entries=5000, layer="silver", severity="error"),
                            WindowTimedOut()]
    assert [r.id for r in config.rules] == ["lag_above:silver", "window_timed_out"]


def test_an_unknown_rule_is_refused_with_its_path() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"at `\$\.rules\[0\]\.rule`"):
        msgspec.json.decode(b'{"rules": [{"rule": "lag_abov", "entries": 1}]}',
                            type=AlertsConfig)


async def test_monitor_round_sets_gauges_and_checks_alerts(redis: aioredis.Redis,
                                                           keys: Keys) -> None:
    stream = await backlog(redis, keys, entries=20, read=5)
    metrics = Metrics()
    alerts = Alerts([LagAbove(entries=10)], metrics=metrics)
    monitor = Monitor(LagTracker(redis, keys, ["east"], READERS), metrics, alerts, 15.0)
    await monitor.run(asyncio.Event(), once=True)
    labels = {"stream": stream, "group": keys.group("bronze")}
    value = metrics.registry.get_sample_value
    assert (value("assay_stream_lag", labels), value("assay_stream_pending", labels),
            value("assay_alert_active", {"rule": "lag_above"})) == (15.0, 5.0, 1.0)


def service(redis: aioredis.Redis, keys: Keys, stop: asyncio.Event, hook: HttpReceiver,
            burst: bool) -> Coroutine[Any, Any, None]:
    return serve(redis, keys, {"east": "East"}, {"monitor": [WINDOWS]}, environment="PROD",
                 notifications=NotificationsConfig(webhook=WebhookConfig(url=hook.url)),
                 alerts=AlertsConfig(rules=[WindowTimedOut()]),
                 settings=RuntimeSettings(block_ms=20), stop=stop, burst=burst)


async def test_monitor_service_notifies_each_window_outcome(redis: aioredis.Redis,
                                                            keys: Keys) -> None:
    await redis.xadd(keys.stream("east", WINDOWS), encode(window("timed_out")))
    async with HttpReceiver() as hook:
        await service(redis, keys, asyncio.Event(), hook, burst=True)
    assert [b["line"] for b in hook.bodies] == [
        "[PROD] [FAILED] WINDOW — EAST — 10 / 0",
        "[PROD] [ALERT] WINDOW_TIMED_OUT — EAST — window w1 timed out",
    ]


async def test_monitor_service_returns_once_stopped(redis: aioredis.Redis, keys: Keys) -> None:
    stop = asyncio.Event()
    async with HttpReceiver() as hook:
        running = asyncio.create_task(service(redis, keys, stop, hook, burst=False))
        stop.set()
        async with asyncio.timeout(5):
            await running
    assert running.exception() is None
