"""The monitor service (``assay run monitor``).

Two loops in one process: every ``check_every_s`` a lag snapshot updates the
stream gauges and is checked against the alert rules; and a consumer of the
windows channel (group ``monitor``) turns every window outcome into a
notification and an alert check.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import asyncpg
import structlog

from assay.contracts.ops import AlertsConfig, NotificationsConfig
from assay.ops.alerts import Alerts, AlertStore
from assay.ops.gold_watch import GoldWatch
from assay.ops.metrics import Metrics, start_metrics_server
from assay.ops.notify import Notifier
from assay.ops.observe import WindowWatcher
from assay.streams import keys as channels
from assay.streams.client import Client
from assay.streams.consumer import TRANSIENT, Consumer, RuntimeSettings
from assay.streams.keys import Keys
from assay.streams.lag import LagReport, LagTracker, by_channel
from assay.streams.windows import WindowStore

log = structlog.get_logger("assay.monitor")

Sleep = Callable[[float], Awaitable[None]]


class Monitor:
    """Every ``interval_s``: snapshot the streams, update the gauges, evaluate the alerts."""

    def __init__(self, tracker: LagTracker, metrics: Metrics, alerts: Alerts,
                 interval_s: float, sleep: Sleep = asyncio.sleep,
                 gold: GoldWatch | None = None) -> None:
        self.tracker = tracker
        self.metrics = metrics
        self.alerts = alerts
        self.interval_s = interval_s
        self.sleep = sleep
        self.gold = gold

    async def check(self) -> LagReport | None:
        """One round; a Redis that does not answer is logged and tried again next round."""
        try:
            report = await self.tracker.take()
        except TRANSIENT as exc:
            log.warning("lag_snapshot_failed", error=f"{type(exc).__name__}: {exc}")
            return None
        self.metrics.observe_lag(report)
        await self.alerts.check(report)
        await self._check_gold(report.at)
        return report

    async def _check_gold(self, now: float) -> None:
        lookback = self.alerts.lookback_s
        if self.gold is None or lookback is None:
            return
        try:
            late = await self.gold.unapplied(now, lookback)
        except (*TRANSIENT, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("gold_check_failed", error=f"{type(exc).__name__}: {exc}")
            return
        await self.alerts.unapplied(late, now)

    async def run(self, stop: asyncio.Event, once: bool = False) -> None:
        """Check until ``stop`` is set; with ``once``, check once and return."""
        while not stop.is_set():
            await self.check()
            if once:
                return
            await self._pause(stop)

    async def _pause(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(self.sleep(self.interval_s)),
                 asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()


async def _restore(rules: Alerts, stop: asyncio.Event) -> None:
    """Take back the active alerts, waiting for Redis however long it is down (or a stop)."""
    delay = 0.2
    while not stop.is_set():
        try:
            await rules.restore()
            return
        except TRANSIENT as exc:
            log.warning("alerts_restore_failed", error=f"{type(exc).__name__}: {exc}",
                        retry_in_s=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)


async def serve(client: Client, keys: Keys, divisions: Mapping[str, str],
                layers: Mapping[str, Sequence[str]], *, environment: str,
                notifications: NotificationsConfig | None, alerts: AlertsConfig | None,
                settings: RuntimeSettings, stop: asyncio.Event, burst: bool = False,
                metrics_port: int | None = None, name: str | None = None,
                clock: Callable[[], float] = time.time,
                gold: tuple[asyncpg.Pool, str] | None = None) -> None:
    """Run the monitor until ``stop`` is set (with ``burst``: one check, windows drained).

    ``divisions`` maps division names to display names; ``layers`` is the runner's
    ``{layer: [channels]}``. With ``metrics_port`` the metrics are served over HTTP.
    With ``gold`` (a pool and the pipeline's schema), completed windows Gold has not
    applied are checked against the ``window_not_applied`` rules.
    """
    config = alerts or AlertsConfig()
    metrics = Metrics()
    server = (start_metrics_server(metrics_port, metrics.registry)
              if metrics_port is not None else None)
    notifier = Notifier(notifications, environment, clock=clock)
    rules = Alerts(config.rules, notifier=notifier, metrics=metrics, clock=clock,
                   divisions=divisions, store=AlertStore(client, keys.alerts()))
    await _restore(rules, stop)
    tracker = LagTracker(client, keys, list(divisions), by_channel(layers), clock=clock,
                         scan_bound=config.scan_bound)
    watch = None if gold is None else GoldWatch(WindowStore(client, keys), gold[0], gold[1],
                                                list(divisions))
    monitor = Monitor(tracker, metrics, rules, config.check_every_s, gold=watch)
    watcher = Consumer(client, keys, WindowWatcher(notifier, rules, divisions, metrics),
                       divisions=list(divisions), read_channels=[channels.WINDOWS],
                       settings=settings, name=name, dead_letters=False)

    async def stop_watcher() -> None:
        await stop.wait()
        watcher.stop()

    stopper = asyncio.create_task(stop_watcher())
    log.info("monitor_started", interval_s=config.check_every_s, rules=len(config.rules),
             metrics_port=server.port if server else None)
    try:
        await asyncio.gather(monitor.run(stop, once=burst), watcher.run(burst=burst))
    finally:
        stop.set()
        await stopper
        await notifier.close()
        if server is not None:
            server.close()
    log.info("monitor_stopped", active_alerts=len(rules.active))
