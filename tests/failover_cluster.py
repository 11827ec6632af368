"""A master killed mid-run on a 6-node cluster: the pipeline resumes by itself (``make
cluster-failover``; not part of ``make test``: the file name keeps pytest from collecting it).

Three masters with one replica each. The demo's layers run as their own processes; while the
producer sends, the master serving one division is SIGKILLed. Its replica takes over after
``cluster-node-timeout``; every process reconnects, refreshes its slot map and reads its
pending entries again. Writes the old master acknowledged but had not yet replicated are
gone (Redis replication is asynchronous): those records never complete their windows, so
the producer, once the pipeline has drained, sends the incomplete windows again (same row
numbers: nothing is counted twice). The KPIs must then equal a clean run's. The test prints
the loss window and the time to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.crc import key_slot

from assay.db import report
from assay.demo.run import (
    DONE,
    DemoOptions,
    division_routes,
    start_layers,
    stop_layers,
    wait_until_done,
)
from assay.demo.simulator import DEFAULT_DATA_DIR, Simulator
from assay.runner import LAYERS, Context, open_context
from assay.services.cluster import LocalCluster, Node
from assay.streams import keys as channels
from assay.streams.lag import by_channel, snapshot
from assay.streams.producer import Producer, TableTarget
from assay.streams.windows import WindowStore
from tests.test_cluster import SPREAD, demo_config

ROOT = Path(__file__).resolve().parents[1]
FIRST, LAST = "2011-05", "2011-10"
VICTIM = "emea"
"""The division whose master is killed."""
LAGGING = os.environ.get("ASSAY_FAILOVER_LAG", "1") != "0"
"""Make the replica lag before the kill (see ``kill_and_watch``), so that writes are lost
and the re-send is needed; ``ASSAY_FAILOVER_LAG=0`` kills a master with an up-to-date
replica instead."""
LAG_S = 1.0
"""The longest the victim's replica is paused before its master is killed (< node timeout)."""
LAG_BYTES = 32_768
"""Replication stream the master writes past the lagging replica before it is killed."""


class CountingClient:
    """The producer's client, counting the XADDs each stream acknowledged."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.acked: dict[str, int] = {}

    async def xadd(self, name: str, fields: Any, *args: Any, **kwargs: Any) -> Any:
        entry = await self.client.xadd(name, fields, *args, **kwargs)
        self.acked[name] = self.acked.get(name, 0) + 1
        return entry

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@dataclass
class Run:
    kpis: list[dict[str, Any]]
    summary: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)


async def drained(ctx: Context) -> bool:
    """Every group of every stream has read and acked everything."""
    lag = await snapshot(ctx.redis, ctx.keys, list(SPREAD), by_channel(LAYERS))
    return all(g.lag == 0 and g.pending == 0 for _, g in lag.groups())


async def incomplete(ctx: Context, windows: list[str]) -> list[tuple[str, str]]:
    store = WindowStore(ctx.redis, ctx.keys)
    done = {(d, w["window"]) for d in SPREAD for w in await store.windows(d)
            if w.get("status") in DONE}
    return [(d, w) for d in SPREAD for w in windows if (d, w) not in done]


async def poll(condition: Any, timeout_s: float, what: str) -> float:
    """Ask until true (every 50 ms, up to the deadline); returns when it became true."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic()


async def bronze_idle_ms(ctx: Context) -> int | None:
    """Milliseconds since a Bronze consumer last read the victim's ingest stream."""
    consumers: Any = await ctx.redis.xinfo_consumers(
        ctx.keys.stream(VICTIM, channels.INGEST), ctx.keys.group("bronze"))
    return min((int(c["idle"]) for c in consumers), default=None)


def offset(node: Node, field: str) -> int:
    with node.client() as client:
        info: Any = client.info("replication")
    return int(info[field])


async def run(cluster: LocalCluster, database_url: str, tmp: Path, prefix: str,
              kill: bool) -> Run:
    config = demo_config(tmp / "config", prefix)
    ctx = await open_context(config, cluster.url, database_url, prefix)
    options = DemoOptions(config_dir=config, data_dir=DEFAULT_DATA_DIR,
                          procfile=ROOT / "Procfile", log_dir=tmp / "logs", key_prefix=prefix)
    processes = await start_layers(options, cluster.url, database_url)
    simulator = Simulator(DEFAULT_DATA_DIR, first=FIRST, last=LAST)
    route = division_routes(ctx.plan.config.divisions, simulator.divisions)
    client = CountingClient(ctx.redis)
    producer = Producer(client, ctx.keys,  # type: ignore[arg-type]
                        chunk_size=ctx.plan.config.pipeline.batch_size, retries=30,
                        max_backlog=ctx.plan.config.pipeline.max_backlog_entries)
    exports = list(simulator.exports())
    figures: dict[str, Any] = {}
    killing = None
    sent = 0
    try:
        for index, export in enumerate(exports):
            if (kill and killing is None and index >= len(exports) // 3
                    and route[export.division] == VICTIM):
                lagging = asyncio.Event()
                killing = asyncio.ensure_future(
                    kill_and_watch(cluster, ctx, client, figures, lagging))
                await lagging.wait()  # this export goes to a master whose replica lags
                if killing.done():
                    killing.result()  # the kill went wrong: say how
            sent += await producer.send_table(
                TableTarget(route[export.division], export.table, export.window), export.rows)
        if killing is not None:
            await killing
        try:
            await poll(lambda: drained(ctx), 180, "the pipeline drained")
        except AssertionError:
            lag = await snapshot(ctx.redis, ctx.keys, list(SPREAD), by_channel(LAYERS))
            print("not drained:", [(s.stream, g.layer, g.lag, g.lag_source, g.pending,
                                    g.consumers) for s, g in lag.groups()
                                   if g.lag or g.pending])
            raise
        short = await incomplete(ctx, simulator.windows())
        figures["windows_resent"] = len(short)
        if short:
            missing = await missing_rows(ctx, short)
            figures["rows_missing_before_resend"] = missing
            for export in exports:
                if (route[export.division], export.window) in short:
                    sent += await producer.send_table(TableTarget(
                        route[export.division], export.table, export.window), export.rows)
        completed = await wait_until_done(ctx, list(SPREAD), simulator.windows(), processes,
                                          300)
        stream = ctx.keys.stream(VICTIM, channels.INGEST)
        info: Any = await ctx.redis.xinfo_stream(stream)
        figures["ingest_entries_acked_not_kept"] = client.acked[stream] - int(
            info["entries-added"])
    finally:
        codes = await stop_layers(processes)
    names = {d: c.name for d, c in ctx.plan.config.divisions.items()}
    kpis = await report.kpi_rows(ctx.pool, ctx.plan.schema, "shipped_vs_goal", names)
    summary = await report.summary(ctx.pool, ctx.redis, ctx.keys, ctx.plan.schema, list(SPREAD),
                                   sent, ctx.plan.config.gold.linkage, completed)
    await ctx.close()
    assert codes == [0] * len(codes)
    return Run(kpis, summary, figures)


async def missing_rows(ctx: Context, short: list[tuple[str, str]]) -> int:
    store = WindowStore(ctx.redis, ctx.keys)
    missing = 0
    for division in {d for d, _ in short}:
        for state in await store.windows(division):
            if (division, state["window"]) in short:
                for table in ctx.plan.config.divisions[division].tables:
                    expected = int(state.get(f"{table}:expected", "0"))
                    missing += max(expected - int(state.get(f"{table}:seen", "0")), 0)
    return missing


async def kill_and_watch(cluster: LocalCluster, ctx: Context, client: CountingClient,
                         figures: dict[str, Any], lagging: asyncio.Event) -> None:
    """Make the victim's replica lag, kill its master, and time the way back.

    The master is killed once it has written ``LAG_BYTES`` and two producer entries since
    the producer began this export (or after ``LAG_S``). On one machine a replica is a
    fraction of a millisecond behind its master, so such a kill lost nothing in every run
    tried. A replica that lags is what loses writes (a slow network, a busy host): with
    ``LAGGING`` the replica is paused (SIGSTOP) and the master drops its link to it (so
    nothing more reaches the replica's socket buffer) before, and resumed after, the kill.
    """
    slot = key_slot(ctx.keys.stream(VICTIM, channels.INGEST).encode())
    master = cluster.master_of_slot(slot)
    replica = next(n for n in cluster.alive() if n.master_of == master.node_id)
    if LAGGING:
        cluster.pause(replica)
    try:
        if LAGGING:
            with master.client() as link:
                link.execute_command("CLIENT", "KILL", "TYPE", "replica")
        start = offset(master, "master_repl_offset")
        ingest = ctx.keys.stream(VICTIM, channels.INGEST)
        sent = client.acked.get(ingest, 0)
        lagging.set()

        async def behind() -> bool:  # the producer's writes too, not only the layers'
            return (offset(master, "master_repl_offset") >= start + LAG_BYTES
                    and client.acked.get(ingest, 0) >= sent + 2)

        with contextlib.suppress(AssertionError):  # else kill with what was written by then
            await poll(behind, LAG_S, "writes past the lagging replica")
        written = offset(master, "master_repl_offset")  # acknowledged to its clients
        began = time.monotonic()
        await asyncio.to_thread(cluster.kill, master)
    finally:
        lagging.set()
        if LAGGING:
            cluster.resume(replica)

    async def promoted() -> bool:
        try:
            return cluster.master_of_slot(slot).port != master.port
        except Exception:
            return False

    figures["failover_s"] = round(await poll(promoted, 120, "a replica promoted") - began, 2)

    async def resumed() -> bool:  # Bronze has talked to the new master since the kill
        try:
            idle = await bronze_idle_ms(ctx)
        except Exception:
            return False
        return idle is not None and idle < (time.monotonic() - began) * 1000

    figures["resumed_s"] = round(await poll(resumed, 120, "Bronze reading again") - began, 2)
    # The promoted replica starts its own history at the old master's offset it had reached.
    replicated = offset(cluster.master_of_slot(slot), "second_repl_offset") - 1
    figures["not_replicated_bytes"] = max(written - replicated, 0)


@pytest.mark.timeout(900)  # two runs of the demo's first six months, on a shared machine
def test_a_killed_master_loses_nothing_after_the_resend(tmp_path: Path,
                                                       database_url: str) -> None:
    prefixes = [f"f{os.urandom(6).hex()}" for _ in range(2)]
    load = os.getloadavg()[0]
    try:
        with LocalCluster(tmp_path / "cluster", masters=3, replicas=1) as cluster:
            clean = asyncio.run(run(cluster, database_url, tmp_path / "clean", prefixes[0],
                                    kill=False))
            chaos = asyncio.run(run(cluster, database_url, tmp_path / "chaos", prefixes[1],
                                    kill=True))
    finally:
        asyncio.run(drop_schemas(database_url, prefixes))
    print(f"\nfailover: {chaos.figures} (load {load:.2f} → {os.getloadavg()[0]:.2f})")
    print(f"clean: {clean.summary}\nchaos: {chaos.summary}")
    assert "resumed_s" in chaos.figures  # the master was killed, the pipeline went on
    assert clean.kpis and chaos.kpis == clean.kpis
    same = ("records_landed", "records_quarantined", "records_dead_lettered",
            "accounts_linked", "accounts_unmatched", "windows_completed")
    assert {k: chaos.summary[k] for k in same} == {k: clean.summary[k] for k in same}


async def drop_schemas(database_url: str, names: list[str]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for name in names:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()
