"""Turning pipeline events into notifications, alerts and metrics.

``BatchObserver`` is a consumer's ``on_batch`` hook (in every layer process);
``WindowWatcher`` is the monitor's processor on the windows channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import structlog

from assay.contracts.messages import WindowEvent
from assay.contracts.ops import AlertsConfig, BatchFailed, NotificationsConfig
from assay.ops.alerts import Alerts
from assay.ops.metrics import Metrics
from assay.ops.notify import Notification, Notifier, from_result, from_window
from assay.streams.codec import Item
from assay.streams.consumer import BatchResult, Output
from assay.streams.tasks import cancel_until_done

log = structlog.get_logger("assay.observe")


class BatchObserver:
    """``on_batch`` hook: count the batch, then send its line and check it, in order.

    The hook is called synchronously by the consumer loop; lines are queued (at most
    ``max_queued``, beyond that they are dropped and counted) and sent by one task.
    """

    def __init__(self, notifier: Notifier, divisions: Mapping[str, str], *,
                 metrics: Metrics | None = None, alerts: Alerts | None = None,
                 max_queued: int = 10_000) -> None:
        self.notifier = notifier
        self.divisions = dict(divisions)
        self.metrics = metrics
        self.alerts = alerts
        self.dropped = 0
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(max_queued)
        self._sender: asyncio.Task[None] | None = None

    def __call__(self, result: BatchResult) -> None:
        if self.metrics is not None:
            self.metrics.observe_batch(result)
        division = self.divisions.get(result.division, result.division)
        try:
            self._queue.put_nowait(from_result(self.notifier.environment, result, division))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("notification_dropped", layer=result.layer, division=result.division,
                        dropped=self.dropped)
            return
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def close(self) -> None:
        """Send what is queued, then flush the notifier."""
        await self._queue.join()
        if self._sender is not None:
            cancel_until_done(self._sender)
            await asyncio.wait([self._sender])
        await self.notifier.close()

    async def _send(self) -> None:
        while True:
            n = await self._queue.get()
            try:
                await self.notifier.notify(n, batch=True)
                if self.alerts is not None:
                    await self.alerts.batch(n)
            finally:
                self._queue.task_done()


def worker_observer(notifications: NotificationsConfig | None, alerts: AlertsConfig | None,
                    environment: str, divisions: Mapping[str, str],
                    metrics: Metrics | None = None) -> BatchObserver:
    """The ``on_batch`` hook of a layer process: batch lines, ``batch_failed`` rules, metrics."""
    notifier = Notifier(notifications, environment)
    rules = [r for r in (alerts or AlertsConfig()).rules if isinstance(r, BatchFailed)]
    checks = Alerts(rules, notifier=notifier, metrics=metrics, divisions=divisions)
    return BatchObserver(notifier, divisions, metrics=metrics, alerts=checks)


class WindowWatcher:
    """The monitor's processor: each window outcome is notified and checked."""

    layer = "monitor"

    def __init__(self, notifier: Notifier, alerts: Alerts, divisions: Mapping[str, str],
                 metrics: Metrics | None = None) -> None:
        self.notifier = notifier
        self.alerts = alerts
        self.divisions = dict(divisions)
        self.metrics = metrics

    async def process(self, items: Sequence[Item]) -> Output:
        for item in items:
            event = item.message
            if isinstance(event, WindowEvent):
                if self.metrics is not None and event.opened_at and event.status != "amended":
                    self.metrics.observe_window(event.at - event.opened_at)
                division = self.divisions.get(event.division, event.division)
                await self.notifier.notify(from_window(self.notifier.environment, event,
                                                       division))
                await self.alerts.window(event)
        return Output()
