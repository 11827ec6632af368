"""Replay closes the loop: quarantine → fixed config → replay → window restated → Gold's KPIs.

Every layer runs for real (Producer → Bronze → Silver → barrier → Gold, drained in burst
mode) on the Gold test config, with a validation rule on the order lines' quantity.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from assay.replay import Filters, follow, replay
from assay.runner import Context, make_consumer
from assay.streams import keys as channels
from tests import test_gold
from tests.conftest import OpenContext
from tests.test_gold import CATALOGUE, DIVISION, fetch, gold, merged, sale, send_window

WINDOW = "2024-03"


def write_config(folder: Path, schema: str, max_qty: int) -> Path:
    folder = test_gold.write_config(folder, schema)
    data = json.loads((folder / "pipeline.json").read_text())
    data["tables"] = copy.deepcopy(data["tables"])
    data["tables"]["erp_order_line"]["validation"] = {"qty": {"max": max_qty}}
    (folder / "pipeline.json").write_text(json.dumps(data))
    return folder


def assay(ctx: Context, urls: tuple[str, str], folder: Path, *args: str
          ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": urls[0], "DATABASE_URL": urls[1],
           "ASSAY_KEY_PREFIX": ctx.keys.prefix, "ASSAY_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "assay", *args, "--config", str(folder)],
                          capture_output=True, text=True, env=env, check=False, timeout=60)


async def drain(ctx: Context) -> None:
    for layer in ("bronze", "silver", "barrier", "gold"):
        await make_consumer(layer, ctx).run(burst=True)


async def window_events(ctx: Context) -> list[str]:
    events: Any = await ctx.redis.xrange(ctx.keys.stream(DIVISION, channels.WINDOWS))
    return [json.loads(f[b"json"])["status"] for _, f in events]


async def bikes_2024(ctx: Context) -> int:
    [row] = await fetch(ctx, f"SELECT shipped_qty FROM {gold(ctx, 'kpi_shipped')} WHERE"
                             " period = 'year' AND category = 'Bikes' AND year = 2024")
    return int(row["shipped_qty"])


@pytest.mark.parametrize("legacy", [False, True], ids=["new", "window_from_before_failed_bits"])
async def test_replay_restates_the_window_and_gold_once(
        open_ctx: OpenContext, tmp_path: Path, schema: str, legacy: bool,
        service_urls: tuple[str, str]) -> None:
    folder = tmp_path / "config"
    ctx = await open_ctx(write_config(folder, schema, max_qty=100))
    lines = [(1, 10, "2"), (2, 10, "150"), (3, 11, "200"), (4, 20, "250000")]
    await send_window(ctx, WINDOW, merged(CATALOGUE, sale(1, "AW1", "2024-03-10 10:00:00",
                                                          lines)))
    state = ctx.keys.state(DIVISION, f"w:{WINDOW}")
    assert await ctx.redis.hget(state, "erp_order_line:failed") == b"3"
    assert await window_events(ctx) == ["partial"]
    assert await bikes_2024(ctx) == 2
    if legacy:  # the state an older barrier left: no bits of its own for failed rows
        await ctx.redis.delete(ctx.keys.state(DIVISION, f"failed:{WINDOW}:erp_order_line"))
        await ctx.redis.hdel(state, "failed_bits")
    dry = await replay(ctx, Filters(rule="max", key="4"), dry_run=True)
    assert dry.lines() == [f"{DIVISION} {WINDOW} erp_order_line: would re-drive 1 (max 1)"]
    if not legacy:
        shown = assay(ctx, service_urls, folder, "replay", "--dry-run", "--division", DIVISION,
                      "--window", WINDOW, "--table", "erp_order_line", "--rule", "max")
        assert shown.stdout.splitlines() == [
            f"{DIVISION} {WINDOW} erp_order_line: would re-drive 3 (max 3)",
            "would re-drive: 3 quarantined rows"], shown.stderr

    fixed = await open_ctx(write_config(folder, schema, max_qty=1000))
    # Two operators at once: every row is re-driven twice.
    first, second = await asyncio.gather(replay(fixed), replay(fixed))
    assert first.rows == second.rows == 3
    await drain(fixed)
    report = await follow(fixed, first, wait_s=10)
    assert report.lines() == [f"{DIVISION} {WINDOW} erp_order_line: re-driven 3,"
                              " moved to Silver 2, failed again 1"]

    assert await ctx.redis.hget(state, "erp_order_line:failed") == b"1"
    assert await ctx.redis.hget(state, "duplicates") in (None, b"0")
    assert await window_events(ctx) == ["partial", "amended"]
    ledger = await fetch(ctx, f'SELECT outcome, count(*) AS n FROM "{schema}"."_rows"'
                              " WHERE table_name = 'erp_order_line' GROUP BY 1 ORDER BY 1")
    assert ledger == [{"outcome": "applied", "n": 3}, {"outcome": "quarantined", "n": 1}]
    shipped = await fetch(ctx, f"SELECT line_id FROM {gold(ctx, 'shipment')} ORDER BY 1")
    assert [r["line_id"] for r in shipped] == [1, 2, 3]
    assert await bikes_2024(ctx) == 2 + 150 + 200
    [held] = await fetch(ctx, f'SELECT key, seen, released_at FROM "{schema}".quarantine'
                              " WHERE released_at IS NULL")
    assert (held["key"], held["seen"]) == ("4", 3)  # quarantined once, failed twice more

    again = await replay(fixed)  # the row that still fails: nothing moves, no new event
    await drain(fixed)
    assert again.rows == 1
    assert await ctx.redis.hget(state, "erp_order_line:failed") == b"1"
    assert await window_events(ctx) == ["partial", "amended"]
