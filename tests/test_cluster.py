"""assay on a real Redis Cluster: 3 valkey-server masters formed by ``LocalCluster``.

The client is chosen by asking the server; every multi-key command, transaction and script
stays in one slot (recorded as sent, and refused by the cluster otherwise); divisions on
three masters give the same results as on one server; two Silver processes share a division.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.crc import key_slot

from assay.db.ident import qualified
from assay.runner import Context, make_consumer, open_context, run_layer
from assay.services.cluster import LocalCluster
from assay.streams import keys as channels
from assay.streams.client import RedisSettingsError, cluster_override, connect, persists
from assay.streams.keys import Keys
from assay.streams.lag import by_channel, snapshot
from assay.streams.producer import Producer, TableTarget
from assay.streams.windows import WindowStore
from tests.conftest import ITEM_TABLE, item_rows

pytestmark = pytest.mark.embedded  # starts its own cluster: not run again on the standard ports

ROOT = Path(__file__).resolve().parents[1]

SPREAD = {"north_america": "North America", "asia_pacific": "Pacific", "emea": "Europe"}
"""Division ids whose hash tags fall on the three masters (slots 4561, 7050, 13557); the
display names route the demo's territory groups to them."""


def test_cluster_override_reads_yes_no_and_auto() -> None:
    assert [cluster_override(v) for v in ("yes", "NO", "auto", "", None)] == [
        True, False, None, None, None]
    with pytest.raises(RedisSettingsError, match="ASSAY_REDIS_CLUSTER='maybe'"):
        cluster_override("maybe")


async def test_connect_asks_the_server_which_client_it_needs(cluster: LocalCluster,
                                                             redis_url: str) -> None:
    on_cluster = await connect(cluster.url)
    assert isinstance(on_cluster, RedisCluster)
    assert len(on_cluster.get_primaries()) == 3
    plain = await connect(redis_url)
    assert type(plain) is aioredis.Redis
    forced = await connect(cluster.url, cluster=False)
    assert type(forced) is aioredis.Redis
    for client in (on_cluster, plain, forced):
        await client.aclose()


async def test_persistence_is_asked_of_every_master(cluster: LocalCluster) -> None:
    client = await connect(cluster.url)
    assert await persists(client)
    last = cluster.nodes[2]
    with last.client() as node:
        node.config_set("appendonly", "no")
        try:
            assert not await persists(client)  # one master that keeps nothing is enough
        finally:
            node.config_set("appendonly", "yes")
    await client.aclose()


async def test_a_database_other_than_0_on_a_cluster_is_refused(cluster: LocalCluster) -> None:
    with pytest.raises(RedisSettingsError, match=r"selects database 2.*only database 0"):
        await connect(cluster.url.removesuffix("/0") + "/2")


def test_the_spread_divisions_live_on_three_masters(cluster: LocalCluster) -> None:
    keys = Keys()
    masters = {cluster.master_of_slot(key_slot(keys.stream(d, channels.INGEST).encode())).port
               for d in SPREAD}
    assert len(masters) == 3


# -- one slot per multi-key command -------------------------------------------------------


class Sent:
    """Every command sent on any connection, as its arguments; a pipeline or transaction
    (MULTI … EXEC) as one group."""

    def __init__(self) -> None:
        self.groups: list[list[tuple[Any, ...]]] = []
        self._inside = False

    @contextmanager
    def recording(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sent]:
        one, many = Connection.pack_command, Connection.pack_commands

        def pack_command(conn: Connection, *args: Any) -> Any:
            if not self._inside:
                self.groups.append([args])
            return one(conn, *args)

        def pack_commands(conn: Connection, commands: Any) -> Any:
            commands = [tuple(c) for c in commands]
            self.groups.append(commands)
            self._inside = True
            try:
                return many(conn, commands)
            finally:
                self._inside = False

        monkeypatch.setattr(Connection, "pack_command", pack_command)
        monkeypatch.setattr(Connection, "pack_commands", pack_commands)
        yield self


SINGLE_KEY = {"XADD", "XACK", "XTRIM", "XLEN", "XAUTOCLAIM", "XPENDING", "XRANGE", "HGETALL",
              "HSET", "HDEL", "HVALS", "ZRANGE", "ZRANGEBYSCORE", "XGROUP", "XINFO", "DEL",
              "UNLINK"}


def command_keys(args: Sequence[Any]) -> list[bytes]:
    """The keys of one command as sent (the commands assay uses)."""
    words = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    name = words[0].upper().decode()
    if name in ("XGROUP", "XINFO"):
        return words[2:3]
    if name in ("XREADGROUP", "XREAD"):
        rest = words[[w.upper() for w in words].index(b"STREAMS") + 1:]
        return rest[: len(rest) // 2]
    if name in ("EVALSHA", "EVAL"):
        return words[3: 3 + int(words[2])]
    if name in SINGLE_KEY:
        return words[1:2]
    return []


def name_of(args: Sequence[Any]) -> str:
    first = args[0]
    return (first.decode() if isinstance(first, bytes) else str(first)).upper()


def spread_config(folder: Path, schema: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.json").write_text(json.dumps({
        "pipeline": {"db_schema": schema, "batch_size": 100, "block_ms": 50,
                     "claim_idle_ms": 60000},
        "divisions": {d: {"name": name, "tables": ["item"]} for d, name in SPREAD.items()},
    }))
    (folder / "tables.json").write_text(json.dumps({"tables": {"item": ITEM_TABLE}}))
    return folder


@pytest.fixture
async def cluster_ctx(cluster: LocalCluster, database_url: str, prefix: str, tmp_path: Path,
                      pool: asyncpg.Pool) -> AsyncIterator[Context]:
    """A pipeline context on the cluster: three divisions on three masters, own prefix."""
    ctx = await open_context(spread_config(tmp_path / "config", prefix), cluster.url,
                             database_url, prefix)
    yield ctx
    await drop_keys(ctx.redis, prefix)
    await ctx.close()


async def drop_keys(client: Any, prefix: str) -> None:
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        await client.delete(key)


async def test_every_multi_key_command_and_script_stays_in_one_slot(
        cluster_ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = cluster_ctx
    assert isinstance(ctx.redis, RedisCluster)
    sent = Sent()
    with sent.recording(monkeypatch):
        producer = Producer(ctx.redis, ctx.keys, chunk_size=40)
        rows = item_rows(100)
        rows[7]["id"] = "not a number"  # a quarantined row: the windows end partial
        for division, window in [(d, "2024-01") for d in SPREAD] + [("emea", "2024-02")]:
            await producer.send_table(TableTarget(division, "item", window), rows)
        await ctx.redis.xadd(ctx.keys.stream("emea", channels.INGEST), {"json": b"{oops"})
        for layer in ("bronze", "silver", "barrier"):
            await make_consumer(layer, ctx).run(burst=True)
        assert await run_layer("monitor", ctx, burst=True) == 0
        await snapshot(ctx.redis, ctx.keys, list(SPREAD), by_channel({"bronze": ["ingest"]}))
        windows = {d: await WindowStore(ctx.redis, ctx.keys).windows(d) for d in SPREAD}
    assert {d: [(w["window"], w["status"]) for w in ws] for d, ws in windows.items()} == {
        "north_america": [("2024-01", "partial")], "asia_pacific": [("2024-01", "partial")],
        "emea": [("2024-01", "partial"), ("2024-02", "partial")]}
    multi = [(group, [k for c in group for k in command_keys(c)]) for group in sent.groups]
    multi = [(g, ks) for g, ks in multi if len(ks) > 1]
    for group, keys in multi:
        assert len({key_slot(k) for k in keys}) == 1, [name_of(c) for c in group]
    kinds = {name_of(c) for g, _ in multi for c in g}
    assert {"XREADGROUP", "EVALSHA", "MULTI", "HGETALL"} <= kinds  # every kind was exercised
    assert any(name_of(g[0]) == "XREADGROUP" and len(command_keys(g[0])) == 2
               for g, _ in multi)  # the barrier's one read over its two streams of a slot


# -- the same run on three masters and on one server ---------------------------------------


def demo_config(folder: Path, schema: str) -> Path:
    """The demo's config with the spread division ids (same display names, same tables)."""
    folder.mkdir(parents=True)
    by_name = {name: d for d, name in SPREAD.items()}
    for file in (ROOT / "config").glob("*.json"):
        data = json.loads(file.read_text())
        if file.name == "pipeline.json":
            data["pipeline"]["db_schema"] = schema
            data["divisions"] = {by_name[c["name"]]: c for c in data["divisions"].values()}
        (folder / file.name).write_text(json.dumps(data))
    return folder


def run_demo(config: Path, redis_url: str, database_url: str, prefix: str, data: Path
             ) -> list[dict[str, Any]]:
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": prefix, "ASSAY_DATA_DIR": str(data)}
    result = subprocess.run(
        [sys.executable, "-m", "assay", "demo", "--json", "--config", str(config),
         "--first", "2011-05", "--last", "2011-07"],
        capture_output=True, text=True, env=env, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


async def outcome(redis_url: str, database_url: str, prefix: str, schema: str
                  ) -> dict[str, Any]:
    """What a run left behind: window states in Redis, Silver rows, quarantine, row ledger."""
    client = await connect(redis_url)
    store = WindowStore(client, Keys(prefix))
    windows = {}
    for division in SPREAD:
        for w in await store.windows(division):
            windows[(division, w["window"])] = {
                k: v for k, v in w.items()
                if k == "status" or k.endswith((":expected", ":seen", ":failed"))}
    await client.aclose()
    conn = await asyncpg.connect(database_url)
    try:
        tables = [r["table_name"] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1"
            " AND table_name LIKE 'silver\\_%' ORDER BY 1", schema)]
        silver = {}
        for table in tables:
            rows = await conn.fetch(f"SELECT * FROM {qualified(schema, table)}")
            silver[table] = sorted(
                tuple((k, str(v)) for k, v in r.items() if k != "_entry") for r in rows)
        quarantine = sorted(tuple(map(str, r)) for r in await conn.fetch(
            'SELECT "division", "table_name", "window", "row", "key", "rule", "field",'
            ' "message", "payload"::text FROM'
            f" {qualified(schema, 'quarantine')}"))
        ledger = sorted(tuple(map(str, r)) for r in await conn.fetch(
            'SELECT "division", "window", "table_name", "row", "outcome", "layer" FROM'
            f" {qualified(schema, '_rows')}"))
    finally:
        await conn.close()
    return {"windows": windows, "silver": silver, "quarantine": quarantine, "ledger": ledger}


@pytest.fixture
def cluster_prefix(cluster: LocalCluster, database_url: str) -> Iterator[str]:
    """A second prefix and schema for the cluster run, dropped afterwards."""
    name = f"c{os.urandom(6).hex()}"
    yield name
    asyncio.run(_drop(cluster.url, database_url, name))


async def _drop(redis_url: str, database_url: str, name: str) -> None:
    client = await connect(redis_url)
    await drop_keys(client, name)
    await client.aclose()
    conn = await asyncpg.connect(database_url)
    await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    await conn.close()


def test_the_demo_on_three_masters_equals_the_demo_on_one_server(
        tmp_path: Path, cluster: LocalCluster, redis_url: str, database_url: str,
        prefix: str, cluster_prefix: str, redis: object, pool: object) -> None:
    """Same Silver rows, window outcomes and Gold KPIs; the fixtures drop both runs' data."""
    data = tmp_path / "data"
    single = run_demo(demo_config(tmp_path / "single", prefix), redis_url, database_url,
                      prefix, data)
    spread = run_demo(demo_config(tmp_path / "spread", cluster_prefix), cluster.url,
                      database_url, cluster_prefix, data)
    *kpis, summary = spread
    assert kpis and summary["summary"]["windows_completed"] == 3 * 3
    assert kpis == single[:-1]
    strip = {"seconds"}
    assert ({k: v for k, v in summary["summary"].items() if k not in strip}
            == {k: v for k, v in single[-1]["summary"].items() if k not in strip})
    one = asyncio.run(outcome(redis_url, database_url, prefix, prefix))
    three = asyncio.run(outcome(cluster.url, database_url, cluster_prefix, cluster_prefix))
    assert len(three["windows"]) == 9 and sum(map(len, three["silver"].values())) > 1000
    assert three == one


# -- two Silver processes, one division ---------------------------------------------------


def start_silver(config: Path, url: str, database_url: str, prefix: str, log: Path
                 ) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": prefix, "ASSAY_LOG_FORMAT": "json", "ASSAY_LOG_LEVEL": "debug"}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "assay", "run", "silver", "--config",
                                 str(config)], env=env, stdout=out, stderr=out)


async def until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        await asyncio.sleep(0.05)


async def test_two_silver_processes_share_one_division_without_duplicates(
        cluster_ctx: Context, tmp_path: Path, database_url: str, prefix: str,
        cluster: LocalCluster) -> None:
    ctx = cluster_ctx
    config = tmp_path / "config"
    division, n = "emea", 3000
    stream = ctx.keys.stream(division, channels.BRONZE)
    consumer = make_consumer("silver", ctx)
    await consumer.ensure_groups()
    logs = [tmp_path / f"silver-{i}.log" for i in (1, 2)]
    silvers = [start_silver(config, cluster.url, database_url, prefix, log) for log in logs]
    try:
        async def both_joined() -> bool:
            return len(await ctx.redis.xinfo_consumers(stream, ctx.keys.group("silver"))) == 2

        await until(both_joined, 60, "two Silver consumers in the group")
        await Producer(ctx.redis, ctx.keys, chunk_size=50).send_table(
            TableTarget(division, "item", "2024-01"), item_rows(n))
        await make_consumer("bronze", ctx).run(burst=True)
        silver_rows = f"SELECT count(*) FROM {qualified(prefix, 'silver_item')}"

        async def all_in_silver() -> bool:
            return bool(await ctx.pool.fetchval(silver_rows) == n)

        await until(all_in_silver, 60, f"{n} rows in Silver")
        await make_consumer("barrier", ctx).run(burst=True)
    finally:
        for process in silvers:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(30) for process in silvers]
    assert codes == [0, 0]
    ledger = await ctx.pool.fetch(
        f'SELECT "row", count(*) AS n FROM {qualified(prefix, "_rows")} GROUP BY "row"')
    assert len(ledger) == n and all(r["n"] == 1 for r in ledger)
    [window] = await WindowStore(ctx.redis, ctx.keys).windows(division)
    assert window["status"] == "completed" and window.get("duplicates", "0") == "0"
    assert window["item:seen"] == str(n)
    shares = [sum(e.get("processed", 0) for e in map(json.loads, log.read_text().splitlines())
                  if e.get("event") == "batch_committed") for log in logs]
    assert all(share > 0 for share in shares) and sum(shares) == n, shares


# -- resilience ---------------------------------------------------------------------------


async def test_entries_read_when_the_connection_broke_are_read_again(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read the server delivered but whose reply was lost (a connection cut, a master
    failing over) leaves entries pending for this consumer: it reads them again at once,
    not only when they are reclaimed after ``claim_idle_ms``."""
    from assay.streams import consumer as loop

    real = loop.read_group
    cuts = []

    async def reply_lost(*args: Any, **kwargs: Any) -> Any:
        found = await real(*args, **kwargs)
        if found and not cuts:
            cuts.append(found)
            raise redis.exceptions.ConnectionError("connection lost while reading the reply")
        return found

    monkeypatch.setattr(loop, "read_group", reply_lost)
    await Producer(ctx.redis, ctx.keys, chunk_size=25).send_table(
        TableTarget("east", "item", "2024-01"), item_rows(100))
    consumer = make_consumer("bronze", ctx)

    async def no_wait(_: float) -> None:
        return None

    consumer.sleep = no_wait
    await consumer.run(burst=True)
    assert cuts and consumer.interruptions == 1
    stream = ctx.keys.stream("east", channels.INGEST)
    assert (await ctx.redis.xpending(stream, ctx.keys.group("bronze")))["pending"] == 0
    landed = f"SELECT count(*) FROM {qualified(ctx.plan.schema, 'bronze_item')}"
    assert await ctx.pool.fetchval(landed) == 100


# -- the command line on the cluster ------------------------------------------------------


def test_produce_run_lag_windows_and_replay_on_the_cluster(
        cluster: LocalCluster, database_url: str, cluster_prefix: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from assay.cli import main

    config = str(spread_config(tmp_path / "config", cluster_prefix))
    rows = tmp_path / "items.jsonl"
    lines = item_rows(30)
    lines[4]["id"] = "five"  # quarantined in Silver: something for replay to find
    rows.write_text("".join(json.dumps(r) + "\n" for r in lines))
    runner = CliRunner(env={"REDIS_URL": cluster.url, "DATABASE_URL": database_url,
                            "ASSAY_KEY_PREFIX": cluster_prefix, "ASSAY_REDIS_CLUSTER": None})

    def assay(*args: str) -> str:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    assert "sent 30 rows" in assay("produce", str(rows), "--division", "emea", "--table",
                                   "item", "--window", "2024-01", "--config", config)
    for layer in ("bronze", "silver", "barrier"):
        assay("run", layer, "--burst", "--config", config)
    lag = json.loads(assay("lag", "--json", "--config", config))
    ingest = next(s for s in lag["streams"] if s["stream"].endswith("{emea}:ingest"))
    assert [(g["layer"], g["lag"], g["pending"]) for g in ingest["groups"]] == [("bronze", 0, 0)]
    windows = [json.loads(line) for line in assay("windows", "--json", "--config",
                                                  config).splitlines()]
    assert [(w["division"], w["window"], w["status"], w["failed"]) for w in windows] == [
        ("emea", "2024-01", "partial", 1)]
    assert "would re-drive: 1 quarantined rows" in assay("replay", "--dry-run", "--config",
                                                         config)
