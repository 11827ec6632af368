"""The metrics endpoint, scraped over HTTP and parsed as Prometheus text."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from assay.ops.metrics import Metrics, MetricsServer, entry_seconds, start_metrics_server
from assay.ops.notify import Notifier
from assay.ops.observe import BatchObserver
from assay.streams.consumer import BatchResult
from assay.streams.keys import INGEST, Keys
from assay.streams.lag import LagReport, snapshot

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def server(metrics: Metrics) -> Iterator[MetricsServer]:
    server = start_metrics_server(0, metrics.registry, addr="127.0.0.1")
    yield server
    server.close()


async def scrape(server: MetricsServer) -> tuple[Samples, dict[str, str]]:
    """GET /metrics; (samples by name and labels, metric types by family name)."""
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(await asyncio.to_thread(get)):
        if not family.name.endswith("_created"):
            types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


def batch(items: int, dead: int, seconds: float = 0.2, quarantined: int = 0) -> BatchResult:
    return BatchResult("silver", "europe", "assay:{europe}:bronze", "1-0", "9-0", items=items,
                       dead=dead, emitted=1, seconds=seconds,
                       processed=items - dead - quarantined, quarantined=quarantined)


async def test_every_metric_is_exposed_with_its_type(server: MetricsServer) -> None:
    _, types = await scrape(server)
    assert types == {
        "assay_records_processed": "counter", "assay_records_failed": "counter",
        "assay_records_quarantined": "counter", "assay_batch_duration_seconds": "histogram",
        "assay_end_to_end_latency_seconds": "histogram",
        "assay_window_completion_seconds": "histogram", "assay_stream_length": "gauge",
        "assay_stream_lag": "gauge", "assay_stream_pending": "gauge",
        "assay_alert_active": "gauge"}


async def test_batches_count_records_by_layer_and_division(metrics: Metrics,
                                                           server: MetricsServer) -> None:
    metrics.observe_batch(batch(items=100, dead=3))
    metrics.observe_batch(batch(items=50, dead=0, quarantined=5))
    samples, _ = await scrape(server)
    where = labels(layer="silver", division="europe")
    assert (samples[("assay_records_processed_total", where)],
            samples[("assay_records_failed_total", where)],
            samples[("assay_records_quarantined_total", where)]) == (142.0, 8.0, 5.0)


async def test_the_batch_hook_counts_at_once(metrics: Metrics, server: MetricsServer) -> None:
    observer = BatchObserver(Notifier(None, "PROD"), {"europe": "Europe"}, metrics=metrics)
    observer(batch(items=10, dead=1))
    samples, _ = await scrape(server)
    await observer.close()
    where = labels(layer="silver", division="europe")
    assert (samples[("assay_records_processed_total", where)],
            samples[("assay_records_failed_total", where)]) == (9.0, 1.0)


async def test_batch_durations_form_a_histogram_per_layer(metrics: Metrics,
                                                          server: MetricsServer) -> None:
    metrics.observe_batch(batch(100, 0, seconds=0.2))
    metrics.observe_batch(batch(100, 0, seconds=0.6))
    samples, _ = await scrape(server)
    assert (samples[("assay_batch_duration_seconds_count", labels(layer="silver"))],
            samples[("assay_batch_duration_seconds_sum", labels(layer="silver"))],
            samples[("assay_batch_duration_seconds_bucket", labels(layer="silver", le="0.5"))]
            ) == (2.0, pytest.approx(0.8), 1.0)


async def test_a_lag_snapshot_sets_the_stream_gauges(metrics: Metrics, server: MetricsServer,
                                                     redis: aioredis.Redis, keys: Keys) -> None:
    stream = keys.stream("east", INGEST)
    ids = [await redis.xadd(stream, {b"n": b"1"}) for _ in range(100)]
    await redis.xgroup_create(stream, keys.group("bronze"), id="0")
    await redis.xreadgroup(keys.group("bronze"), "c1", {stream: ">"}, count=40)
    await redis.xack(stream, keys.group("bronze"), *ids[:25])
    metrics.observe_lag(await snapshot(redis, keys, ["east"], {INGEST: ["bronze"]}))
    samples, _ = await scrape(server)
    group = labels(stream=stream, group=keys.group("bronze"))
    assert (samples[("assay_stream_length", labels(stream=stream))],
            samples[("assay_stream_lag", group)],
            samples[("assay_stream_pending", group)]) == (100.0, 60.0, 15.0)


async def test_gauges_of_a_stream_gone_are_dropped(metrics: Metrics, server: MetricsServer,
                                                   redis: aioredis.Redis, keys: Keys) -> None:
    stream = keys.stream("east", INGEST)
    await redis.xgroup_create(stream, keys.group("bronze"), id="0", mkstream=True)
    metrics.observe_lag(await snapshot(redis, keys, ["east"], {INGEST: ["bronze"]}))
    metrics.observe_lag(LagReport(0.0, (), ()))
    samples, _ = await scrape(server)
    assert [name for name, _ in samples if name.startswith("assay_stream_")] == []


async def test_latency_hook_observes_ingest_to_silver(metrics: Metrics,
                                                      server: MetricsServer) -> None:
    metrics.observe_latency(1_700_000_003.5 - entry_seconds("1700000000000-7"))
    samples, _ = await scrape(server)
    assert (samples[("assay_end_to_end_latency_seconds_sum", labels())],
            samples[("assay_end_to_end_latency_seconds_bucket", labels(le="5.0"))]) == (3.5, 1.0)


@pytest.mark.parametrize("amount", [0.0, 0.1, 0.1000001, 2.5, 599.0, 1800.0, 5000.0])
def test_observe_many_records_what_as_many_observes_do(amount: float) -> None:
    one_by_one, at_once = Metrics(), Metrics()
    for _ in range(7):
        one_by_one.observe_latency(amount)
    at_once.observe_latency(amount, 7)
    at_once.observe_latency(amount, 0)

    def samples(m: Metrics) -> list[tuple[str, dict[str, str], float]]:
        return [(s.name, s.labels, s.value) for family in m.latency.collect()
                for s in family.samples if not s.name.endswith("_created")]
    exact = [s for s in samples(at_once) if not s[0].endswith("_sum")]
    assert exact == [s for s in samples(one_by_one) if not s[0].endswith("_sum")]
    assert ("assay_end_to_end_latency_seconds_count", {}, 7.0) in exact
    [sum_once] = [s[2] for s in samples(at_once) if s[0].endswith("_sum")]
    [sum_each] = [s[2] for s in samples(one_by_one) if s[0].endswith("_sum")]
    assert sum_once == pytest.approx(sum_each)  # 7 × amount, rounded once instead of 7 times
