"""Config reload without a restart: ``assay reload`` signals the running layers through their
pidfiles; a valid config applies from the next batch, an invalid one is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from assay.reloading import ReloadingProcessor
from assay.runner import Context, make_processor
from assay.streams import keys as channels
from assay.streams.producer import Producer, TableTarget
from tests.conftest import ITEM_TABLE, item_rows
from tests.ops_helpers import HttpReceiver
from tests.test_processes import eventually


def write_tables(folder: Path, to: str = "kilogram", max_qty: int | None = None) -> None:
    table = json.loads(json.dumps(ITEM_TABLE))
    table["formulas"]["weight_kg"]["to"] = to
    if max_qty is not None:
        table["validation"] = {"qty": {"max": max_qty}}
    (folder / "tables.json").write_text(json.dumps({"tables": {"item": table}}))


class Layers:
    """Bronze and Silver as their own processes, logging JSON lines to files."""

    def __init__(self, ctx: Context, folder: Path, data: Path, env: dict[str, str]) -> None:
        self.ctx, self.folder, self.data, self.env = ctx, folder, data, env
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for layer in ("bronze", "silver"):
            with (self.data / f"{layer}.log").open("wb") as log:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", "assay", "run", layer, "--config", str(self.folder)],
                    env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def events(self, layer: str, name: str) -> list[dict[str, Any]]:
        lines = (self.data / f"{layer}.log").read_text().splitlines()
        found = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in found if e.get("event") == name]

    async def logged(self, name: str, times: int = 1) -> None:
        async def both() -> bool:
            return all(len(self.events(layer, name)) >= times for layer in ("bronze", "silver"))
        await eventually(both)

    def reload(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "assay", "reload", "--config",
                               str(self.folder)], env=self.env, capture_output=True,
                              text=True, check=False, timeout=60)

    def stop(self) -> list[int]:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        return [process.wait(timeout=30) for process in self.processes]


@pytest.fixture
async def layers(ctx: Context, config_dir: Path, tmp_path: Path, redis_url: str,
                 database_url: str) -> AsyncIterator[Layers]:
    data = tmp_path / "data"
    data.mkdir()
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": ctx.keys.prefix, "ASSAY_DATA_DIR": str(data),
           "ASSAY_LOG_FORMAT": "json", "ASSAY_LOG_LEVEL": "INFO"}
    running = Layers(ctx, config_dir, data, env)
    yield running
    for process in running.processes:
        if process.poll() is None:
            process.kill()
            process.wait()


async def silver(ctx: Context, window: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await ctx.pool.fetch(
        f'SELECT id, qty, weight_kg FROM "{ctx.plan.schema}".silver_item'
        ' WHERE "_window" = $1 ORDER BY id', window)]


async def landed(ctx: Context) -> int:
    """Rows in their final place: Silver or the quarantine."""
    return int(await ctx.pool.fetchval(
        f'SELECT (SELECT count(*) FROM "{ctx.plan.schema}".silver_item)'
        f' + (SELECT count(*) FROM "{ctx.plan.schema}".quarantine)'))


async def test_a_reload_switches_running_layers_between_batches(
        ctx: Context, config_dir: Path, layers: Layers) -> None:
    async with HttpReceiver() as hook:
        pipeline = json.loads((config_dir / "pipeline.json").read_text())
        pipeline["notifications"] = {"webhook": {"url": hook.url}}
        (config_dir / "pipeline.json").write_text(json.dumps(pipeline))
        write_tables(config_dir)
        layers.start()
        producer = Producer(ctx.redis, ctx.keys, chunk_size=25)

        async def send(window: str, start: int, total: int) -> None:
            await producer.send_table(TableTarget("east", "item", window),
                                      item_rows(100, start=start))

            async def arrived() -> bool:
                return await landed(ctx) == total
            await eventually(arrived)

        await send("before", 1, 100)
        write_tables(config_dir, to="gram", max_qty=5)  # a formula changed, a rule added
        reload = layers.reload()
        assert reload.returncode == 0, reload.stderr
        assert sorted(line.split()[1] for line in reload.stdout.splitlines()) == [
            "bronze", "silver"]
        await layers.logged("config_reload_accepted")
        await send("after", 101, 200)

        write_tables(config_dir, to="ton")  # refused at check: plain ton is ambiguous
        refused = layers.reload()
        assert "ambiguous" in refused.stderr and refused.returncode == 1
        assert len(refused.stdout.splitlines()) == 2  # signalled all the same
        await layers.logged("config_reload_refused")

        async def alerted() -> bool:
            return len(hook.bodies) == 2
        await eventually(alerted)
        await send("still", 201, 300)  # the last good config keeps running
        assert layers.stop() == [0, 0]

    before, after, still = [await silver(ctx, w) for w in ("before", "after", "still")]
    assert len(before) == 100 and all(r["weight_kg"] < 2 for r in before)  # kilograms
    assert 6 in {r["qty"] for r in before}  # no max rule yet
    for rows in (after, still):
        assert all(r["weight_kg"] >= 2.5 for r in rows)  # grams
        assert max(r["qty"] for r in rows) == 5
    held = await ctx.pool.fetch(f'SELECT "window", rule FROM "{ctx.plan.schema}".quarantine')
    assert {(r["window"], r["rule"]) for r in held} == {("after", "max"), ("still", "max")}
    assert len(after) + len(still) + len(held) == 200
    for layer in ("bronze", "silver"):
        [line] = layers.events(layer, "config_reload_refused")
        assert "ambiguous" in line["reason"]
    assert sorted((b["rule"], b["status"], b["subject"]) for b in hook.bodies) == [
        ("config_reload_failed", "ALERT", "bronze"), ("config_reload_failed", "ALERT", "silver")]
    dead = await ctx.redis.xlen(ctx.keys.stream("east", channels.DEAD))
    assert dead == 0


async def test_a_reload_that_needs_a_migration_waits_for_it(
        ctx: Context, config_dir: Path, open_ctx: Any) -> None:
    reloading = ReloadingProcessor("silver", ctx, config_dir, make_processor("silver", ctx),
                                   lambda c: make_processor("silver", c))
    table = json.loads(json.dumps(ITEM_TABLE))
    table["columns"]["colour"] = "text"
    (config_dir / "tables.json").write_text(json.dumps({"tables": {"item": table}}))
    assert not await reloading.reload()
    await open_ctx(config_dir)  # what `assay migrate` does
    assert await reloading.reload()
    await reloading.process([])
    assert "colour" in reloading.ctx.plan.tables["item"].config.columns
