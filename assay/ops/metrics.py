"""Prometheus metrics of assay, on a registry of their own, and the endpoint serving them."""

from __future__ import annotations

import bisect
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from assay.ops.notify import batch_counts
from assay.streams.consumer import BatchResult
from assay.streams.lag import LagReport

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
WINDOW_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)


def observe_many(histogram: Histogram, amount: float, count: int) -> None:
    """What ``count`` calls of ``histogram.observe(amount)`` record, at the cost of one.

    prometheus_client has no weighted observe; this adds to the sum and to the one bucket the
    amount falls in, as its ``observe`` does (its internals, pinned with the package;
    ``tests/test_metrics.py`` compares the two)."""
    if count <= 0:
        return
    values: Any = histogram
    values._sum.inc(amount * count)
    values._buckets[bisect.bisect_left(values._upper_bounds, amount)].inc(count)


class Metrics:
    """Every assay metric, registered on ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.processed = Counter("assay_records_processed", "Records that reached their layer's"
                                 " table.", ["layer", "division"], registry=r)
        self.failed = Counter("assay_records_failed", "Records quarantined or dead-lettered.",
                              ["layer", "division"], registry=r)
        self.quarantined = Counter("assay_records_quarantined", "Records quarantined.",
                                   ["layer", "division"], registry=r)
        self.batch_duration = Histogram("assay_batch_duration_seconds", "Time to process and"
                                        " commit one batch.", ["layer"], buckets=BATCH_BUCKETS,
                                        registry=r)
        self.latency = Histogram("assay_end_to_end_latency_seconds", "From a record's ingest to"
                                 " its Silver row.", buckets=LATENCY_BUCKETS, registry=r)
        self.window_completion = Histogram("assay_window_completion_seconds", "From a window's"
                                           " first record to its outcome.",
                                           buckets=WINDOW_BUCKETS, registry=r)
        self.stream_length = Gauge("assay_stream_length", "Entries in a stream.", ["stream"],
                                   registry=r)
        self.stream_lag = Gauge("assay_stream_lag", "Entries not yet delivered to a group.",
                                ["stream", "group"], registry=r)
        self.stream_pending = Gauge("assay_stream_pending", "Entries delivered, not yet acked.",
                                    ["stream", "group"], registry=r)
        self.alert_active = Gauge("assay_alert_active", "Alerts of a rule now active.", ["rule"],
                                  registry=r)
        self._streams: set[str] = set()
        self._groups: set[tuple[str, str]] = set()

    def observe_batch(self, result: BatchResult) -> None:
        processed, failed = batch_counts(result)
        labels = (result.layer, result.division)
        self.processed.labels(*labels).inc(processed)
        self.failed.labels(*labels).inc(failed)
        self.quarantined.labels(*labels).inc(result.quarantined)
        self.batch_duration.labels(result.layer).observe(result.seconds)

    def observe_latency(self, seconds: float, records: int = 1) -> None:
        """Silver calls this with now minus the ingest stream entry time of ``records`` records
        (those of one ingest entry share it): one observation per record."""
        observe_many(self.latency, max(seconds, 0.0), records)

    def observe_window(self, seconds: float) -> None:
        self.window_completion.observe(max(seconds, 0.0))

    def observe_lag(self, report: LagReport) -> None:
        """Set the stream gauges from a snapshot; streams and groups now gone are dropped."""
        streams = {s.stream for s in report.streams}
        groups = {(s.stream, g.group) for s, g in report.groups()}
        for stream in self._streams - streams:
            self.stream_length.remove(stream)
        for pair in self._groups - groups:
            self.stream_lag.remove(*pair)
            self.stream_pending.remove(*pair)
        self._streams, self._groups = streams, groups
        for s in report.streams:
            self.stream_length.labels(s.stream).set(s.length)
        for s, g in report.groups():
            self.stream_lag.labels(s.stream, g.group).set(g.lag)
            self.stream_pending.labels(s.stream, g.group).set(g.pending)

    def set_alerts_active(self, rule: str, count: int) -> None:
        self.alert_active.labels(rule).set(count)


def entry_seconds(entry_id: str) -> float:
    """The time a stream entry was added, from its id (epoch seconds)."""
    return int(entry_id.partition("-")[0]) / 1000


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        return


class MetricsServer:
    """The HTTP endpoint serving a registry at ``/metrics``, in a thread of its own."""

    def __init__(self, port: int, registry: CollectorRegistry, addr: str) -> None:
        self.server = make_server(addr, port, make_wsgi_app(registry), _ThreadingServer,
                                  handler_class=_QuietHandler)
        self.port = int(self.server.server_port)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       name="metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def start_metrics_server(port: int, registry: CollectorRegistry,
                         addr: str = "0.0.0.0") -> MetricsServer:
    """Serve ``registry`` at ``http://addr:port/metrics``; port 0 picks a free one."""
    return MetricsServer(port, registry, addr)
