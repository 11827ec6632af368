"""What the HTTP face holds while it runs: the pipeline context and what reads it."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from prometheus_client import Counter

from assay.contracts.config import HttpToken
from assay.ops.metrics import Metrics
from assay.runner import LAYERS, Context
from assay.streams.lag import LagReport, LagTracker, by_channel
from assay.streams.parts import TableParts
from assay.streams.producer import Producer

log = structlog.get_logger("assay.web")

HISTORY = 150
"""Lag snapshots kept for the sparklines (one per ``sample_s``: five minutes at 2 s)."""


@dataclass
class Web:
    """One ``assay serve`` process: connections (shared by every request), the producer,
    the lag tracker and the lag history of the status page, and the metrics."""

    ctx: Context
    producer: Producer
    parts: TableParts
    tracker: LagTracker
    metrics: Metrics = field(default_factory=Metrics)
    history: collections.deque[LagReport] = field(
        default_factory=lambda: collections.deque(maxlen=HISTORY))
    rows_accepted: Counter | None = None
    ready: bool = False
    tokens: tuple[HttpToken, ...] = ()

    @classmethod
    def open(cls, ctx: Context, extra_tokens: Sequence[HttpToken] = ()) -> Web:
        """Over an opened context; ``extra_tokens`` join the configured ones (the demo's)."""
        config = ctx.plan.config
        producer = Producer(ctx.redis, ctx.keys,
                            known={d: c.tables for d, c in config.divisions.items()},
                            chunk_size=config.pipeline.batch_size,
                            max_backlog=config.pipeline.max_backlog_entries)
        tracker = LagTracker(ctx.redis, ctx.keys, list(config.divisions), by_channel(LAYERS),
                             scan_bound=config.alerts.scan_bound)
        web = cls(ctx, producer, TableParts(ctx.redis, ctx.keys, config.http.idempotency_ttl_s),
                  tracker, tokens=(*config.http.tokens, *extra_tokens))
        web.rows_accepted = Counter("assay_http_rows_accepted", "Rows the HTTP API accepted.",
                                    ["division", "table"], registry=web.metrics.registry)
        return web

    async def sample(self) -> LagReport:
        """A lag snapshot, remembered for the sparklines and set on the metrics."""
        report = await self.tracker.take()
        self.history.append(report)
        self.metrics.observe_lag(report)
        return report

    async def sample_forever(self, interval_s: float) -> None:
        import asyncio

        from assay.streams.consumer import TRANSIENT
        from assay.streams.tasks import cancel_requested

        while not cancel_requested():
            with contextlib.suppress(*TRANSIENT):
                await self.sample()
            await asyncio.sleep(interval_s)
