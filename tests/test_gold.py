"""Gold against real servers: table sync, CRM↔ERP linkage, KPIs, recompute, and query plans.

Windows go through the real layers (Producer → Bronze → Silver → barrier → Gold, each
drained in burst mode); a few tests call ``GoldProcessor.apply`` directly afterwards.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import assay.db.gold
from assay.contracts.config import ConfigError, load_config
from assay.contracts.messages import msgpack_decoder
from assay.contracts.ops import WindowNotApplied
from assay.db.schema import index_name
from assay.ops.alerts import Alerts
from assay.ops.gold_watch import GoldWatch
from assay.ops.metrics import Metrics
from assay.ops.monitor import Monitor
from assay.processors.gold import GoldProcessor
from assay.runner import Context, make_consumer
from assay.streams import keys as channels
from assay.streams.lag import LagTracker
from assay.streams.producer import Producer, TableTarget
from assay.streams.windows import WindowStore
from tests.conftest import OpenContext
from tests.ops_helpers import captured_logs, events

DIVISION, NAME = "east", "East"
ERP = ["crm_account", "erp_order", "erp_order_line", "erp_product", "erp_category", "sales_goal"]

TABLES: dict[str, Any] = {
    "crm_account": {
        "columns": {"crm_id": "text", "account_number": "text", "name": "text"},
        "key": ["crm_id"],
        "normalise": {"account_number": {"trim": False}},  # CRM keys keep their spaces
    },
    "erp_order": {
        "columns": {"order_id": "integer", "customer_account": "text", "ship_date": "timestamp"},
        "key": ["order_id"],
        "formulas": {"ship_year": {"op": "date_part", "part": "year", "arg": {
            "field": "ship_date", "type": "timestamp", "format": "%Y-%m-%d %H:%M:%S",
            "timezone": "UTC"}, "timezone": "UTC"}},
    },
    "erp_order_line": {
        "columns": {"line_id": "integer", "order_id": "integer", "product_id": "integer",
                    "qty": "number", "customer_account": "text"},
        "key": ["line_id"],
    },
    "erp_product": {
        "columns": {"product_id": "integer", "category_id": "integer", "weight": "number"},
        "key": ["product_id"],
        "mode": "snapshot",
    },
    "erp_category": {"columns": {"category_id": "integer", "name": "text"},
                     "key": ["category_id"]},
    "sales_goal": {
        "columns": {"division": "text", "category": "text", "year": "integer",
                    "goal_qty": "integer"},
        "key": ["division", "category", "year"],
    },
}

GOLD: dict[str, Any] = {
    "tables": {
        "account": {"source": "crm_account", "columns": {
            "account_id": "crm_id", "account_number": "account_number", "name": "name"}},
        "sales_order": {"source": "erp_order", "columns": {
            "order_id": "order_id", "customer_account": "customer_account",
            "ship_date": "ship_date", "ship_year": "ship_year"}},
        "shipment": {"source": "erp_order_line", "columns": {
            "line_id": "line_id", "order_id": "order_id", "product_id": "product_id",
            "qty": "qty", "customer_account": "customer_account"},
            "indexes": [["order_id"], ["product_id"]]},
        "product": {"source": "erp_product", "columns": {
            "product_id": "product_id", "category_id": "category_id", "weight": "weight"}},
        "category": {"source": "erp_category", "columns": {
            "category_id": "category_id", "name": "name"}},
        "goal": {"source": "sales_goal", "columns": {
            "division": "division", "category": "category", "year": "year",
            "goal_qty": "goal_qty"}},
    },
    "linkage": {
        "accounts": {"table": "account", "id": "account_id", "key": "account_number"},
        "targets": {"sales_order": "customer_account", "shipment": "customer_account"},
    },
    "kpis": {
        "shipped": {
            "facts": "shipment",
            "quantity": "qty",
            "weight": "product.weight",
            "joins": [
                {"table": "sales_order", "on": {"order_id": "shipment.order_id"}},
                {"table": "product", "on": {"product_id": "shipment.product_id"}},
                {"table": "category", "on": {"category_id": "product.category_id"}},
            ],
            "dimensions": {"category": "category.name", "year": "sales_order.ship_year"},
            "year": "year",
            "period_date": "sales_order.ship_date",
            "periods": ["quarter"],
            "goals": {"table": "goal", "value": "goal_qty", "division": "division",
                      "match": {"category": "category", "year": "year"}},
        }
    },
}

Row = dict[str, str]


def write_config(folder: Path, schema: str, gold_config: dict[str, Any] = GOLD) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.json").write_text(json.dumps({
        "pipeline": {"db_schema": schema, "batch_size": 100, "block_ms": 50},
        "divisions": {DIVISION: {"name": NAME, "tables": ERP}},
        "tables": TABLES,
    }))
    (folder / "gold.json").write_text(json.dumps({"gold": gold_config}))
    return folder


@pytest.fixture
async def ctx(open_ctx: OpenContext, tmp_path: Path, schema: str) -> Context:
    return await open_ctx(write_config(tmp_path / "config", schema))


# -- data ---------------------------------------------------------------------------------------

CATALOGUE: dict[str, list[Row]] = {
    "erp_category": [{"category_id": "1", "name": "Bikes"}, {"category_id": "2",
                                                             "name": "Helmets"}],
    "erp_product": [{"product_id": "10", "category_id": "1", "weight": "12.5"},
                    {"product_id": "11", "category_id": "1", "weight": "9.25"},
                    {"product_id": "20", "category_id": "2", "weight": "0.4"}],
}


def account(crm_id: str, number: str) -> Row:
    return {"crm_id": crm_id, "account_number": number, "name": f"Account {crm_id}"}


def sale(order_id: int, key: str, shipped: str | None,
         lines: list[tuple[int, int, str]]) -> dict[str, list[Row]]:
    """An order shipped at ``shipped`` with (line id, product id, quantity) lines."""
    head = {"order_id": str(order_id), "customer_account": key, "ship_date": shipped or ""}
    return {"erp_order": [head], "erp_order_line": [
        {"line_id": str(line), "order_id": str(order_id), "product_id": str(product),
         "qty": qty, "customer_account": key} for line, product, qty in lines]}


def merged(*parts: dict[str, list[Row]]) -> dict[str, list[Row]]:
    tables: dict[str, list[Row]] = {}
    for part in parts:
        for table, rows in part.items():
            tables.setdefault(table, []).extend(rows)
    return tables


# -- running the layers ---------------------------------------------------------------------------

async def send_window(ctx: Context, window: str, tables: dict[str, list[Row]],
                      deletes: dict[str, list[Row]] | None = None, gold: bool = True) -> None:
    """Send every table of the division for ``window`` (empty unless given), then drain
    every layer (all but Gold with ``gold=False``)."""
    producer = Producer(ctx.redis, ctx.keys, chunk_size=40)
    for table in ERP:
        if deletes and table in deletes:
            target = TableTarget(DIVISION, table, window, op="delete")
            await producer.send_table(target, deletes[table])
        else:
            await producer.send_table(TableTarget(DIVISION, table, window),
                                      tables.get(table, []))
    for layer in ("bronze", "silver", "barrier", "gold")[:None if gold else 3]:
        await make_consumer(layer, ctx).run(burst=True)
    dead: Any = await ctx.redis.xrange(ctx.keys.stream(DIVISION, channels.DEAD))
    assert [msgpack_decoder.decode(f[b"msgpack"]) for _, f in dead] == []
    if gold:
        assert window in await applied_windows(ctx)


async def applied_windows(ctx: Context) -> set[str]:
    """Windows Gold has seen: its group has read and acknowledged their events."""
    stream = ctx.keys.stream(DIVISION, channels.WINDOWS)
    pending: Any = await ctx.redis.xpending(stream, ctx.keys.group("gold"))
    assert pending["pending"] == 0
    events: Any = await ctx.redis.xrange(stream)
    return {json.loads(f[b"json"])["window"] for _, f in events}


def gold(ctx: Context, table: str) -> str:
    return f'"{ctx.plan.schema}"."gold_{table}"'


async def fetch(ctx: Context, sql: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await ctx.pool.fetch(sql, *args)]


async def links(ctx: Context, table: str, key: str) -> dict[int, str | None]:
    rows = await ctx.pool.fetch(f'SELECT "{key}", crm_account_id FROM {gold(ctx, table)}')
    return {r[0]: r[1] for r in rows}


async def unmatched(ctx: Context) -> list[tuple[str, str, str, int]]:
    rows = await ctx.pool.fetch(
        f'SELECT "window", table_name, account_key, "rows" FROM {gold(ctx, "link_unmatched")}'
        " ORDER BY 1, 2, 3")
    return [tuple(r) for r in rows]


async def snapshot(ctx: Context) -> dict[str, list[str]]:
    """Every Gold table as the JSON text of its rows, in a stable order."""
    tables = [s.name for s in ctx.plan.gold.shapes if s.name != "gold_windows"]  # a log
    tables += [v.name for v in ctx.plan.gold.views]
    return {t: [r[0] for r in await ctx.pool.fetch(
        f'SELECT to_jsonb(t)::text FROM "{ctx.plan.schema}"."{t}" AS t ORDER BY 1')]
        for t in tables}


def gold_processor(ctx: Context) -> GoldProcessor:
    return GoldProcessor(ctx.pool, ctx.plan, ctx.clock)


# -- linkage ------------------------------------------------------------------------------------

async def test_keys_differing_in_case_and_whitespace_link(ctx: Context) -> None:
    await send_window(ctx, "2024-01", merged(
        CATALOGUE, {"crm_account": [account("CRM-1", "  aw00000001 ")]},
        sale(1, "AW00000001", "2024-01-15 10:00:00", [(1, 10, "2"), (2, 20, "1")])))
    stored = await ctx.pool.fetchval(
        f'SELECT account_number FROM "{ctx.plan.schema}"."silver_crm_account"')
    assert stored == "  aw00000001 "  # the premise: CRM and ERP spell the key differently
    assert await links(ctx, "sales_order", "order_id") == {1: "CRM-1"}
    assert await links(ctx, "shipment", "line_id") == {1: "CRM-1", 2: "CRM-1"}
    assert await unmatched(ctx) == []


async def test_unmatched_keys_are_counted_and_listed_and_their_rows_kept(ctx: Context) -> None:
    await send_window(ctx, "2024-01", merged(
        CATALOGUE, {"crm_account": [account("CRM-1", "AW00000001")]},
        sale(1, "AW00000001", "2024-01-15 10:00:00", [(1, 10, "2")]),
        sale(2, " AW00000009", "2024-01-16 10:00:00", [(2, 10, "1"), (3, 20, "4")])))
    assert await links(ctx, "shipment", "line_id") == {1: "CRM-1", 2: None, 3: None}
    assert await unmatched(ctx) == [("2024-01", "sales_order", "AW00000009", 1),
                                    ("2024-01", "shipment", "AW00000009", 2)]
    counts = await gold_processor(ctx).apply(DIVISION, "2024-01")
    assert counts == {"sales_order": 1, "shipment": 2}


async def test_an_account_in_a_later_window_links_earlier_rows(ctx: Context) -> None:
    await send_window(ctx, "2024-01", merged(
        CATALOGUE, sale(1, "AW00000009", "2024-01-15 10:00:00", [(1, 10, "2"), (2, 11, "1")])))
    assert [u[1:] for u in await unmatched(ctx)] == [("sales_order", "AW00000009", 1),
                                                     ("shipment", "AW00000009", 2)]
    await send_window(ctx, "2024-02", merged(
        CATALOGUE, {"crm_account": [account("CRM-9", " Aw00000009  ")]}))
    assert await links(ctx, "sales_order", "order_id") == {1: "CRM-9"}
    assert await links(ctx, "shipment", "line_id") == {1: "CRM-9", 2: "CRM-9"}
    assert await unmatched(ctx) == []
    windows = await ctx.pool.fetch(f'SELECT DISTINCT "_window" FROM {gold(ctx, "shipment")}')
    assert [w[0] for w in windows] == ["2024-01"]  # linked in place, not re-synced


async def test_accounts_sharing_a_key_link_the_lowest_id_whatever_the_order(
        ctx: Context) -> None:
    await send_window(ctx, "2024-01", merged(
        CATALOGUE, {"crm_account": [account("CRM-5", " aw00000001")]},
        sale(1, "AW00000001", "2024-01-15 10:00:00", [(1, 10, "2")])))
    assert await links(ctx, "shipment", "line_id") == {1: "CRM-5"}
    # A second CRM account with the same number arrives with another order of that key.
    await send_window(ctx, "2024-02", merged(
        CATALOGUE, {"crm_account": [account("CRM-2", "AW00000001 ")]},
        sale(2, "AW00000001", "2024-02-15 10:00:00", [(2, 10, "1")])))
    assert await links(ctx, "sales_order", "order_id") == {1: "CRM-2", 2: "CRM-2"}
    assert await links(ctx, "shipment", "line_id") == {1: "CRM-2", 2: "CRM-2"}
    # A third, with a higher id, changes nothing.
    await send_window(ctx, "2024-03", merged(
        CATALOGUE, {"crm_account": [account("CRM-9", "Aw00000001")]}))
    assert await links(ctx, "shipment", "line_id") == {1: "CRM-2", 2: "CRM-2"}


async def test_rows_of_a_renumbered_or_deleted_account_look_their_account_up_again(
        ctx: Context) -> None:
    await send_window(ctx, "2024-01", merged(
        CATALOGUE, {"crm_account": [account("CRM-1", "AW00000001"),
                                    account("CRM-2", "AW00000002"),
                                    account("CRM-7", "aw00000002")]},
        sale(1, "AW00000001", "2024-01-15 10:00:00", [(1, 10, "2")]),
        sale(2, "AW00000002", "2024-01-16 10:00:00", [(2, 10, "1")])))
    assert await links(ctx, "shipment", "line_id") == {1: "CRM-1", 2: "CRM-2"}
    # CRM-1 takes another number: its old rows match no account any more.
    await send_window(ctx, "2024-02", merged(
        CATALOGUE, {"crm_account": [account("CRM-1", "AW00000099")]}))
    assert await links(ctx, "shipment", "line_id") == {1: None, 2: "CRM-2"}
    assert [u[1:] for u in await unmatched(ctx)] == [("sales_order", "AW00000001", 1),
                                                     ("shipment", "AW00000001", 1)]
    # CRM-2 is deleted: its rows fall to CRM-7, which has the same number.
    await send_window(ctx, "2024-03", CATALOGUE,
                      deletes={"crm_account": [{"crm_id": "CRM-2"}]})
    assert await links(ctx, "sales_order", "order_id") == {1: None, 2: "CRM-7"}
    assert await links(ctx, "shipment", "line_id") == {1: None, 2: "CRM-7"}


async def test_a_window_of_many_keys_links_as_one_of_few(ctx: Context) -> None:
    # The same windows applied twice over the same Silver: keys probed one by one, then
    # found by one join over the accounts (every window counts as many); Gold must agree.
    windows = {
        "2024-01": merged(CATALOGUE, {"crm_account": [account("CRM-5", " aw00000003")]},
                          sale(1, "AW00000001", "2024-01-15 10:00:00", [(1, 10, "2")]),
                          sale(2, "AW00000002", "2024-01-16 10:00:00", [(2, 10, "1")]),
                          sale(3, "AW00000003", "2024-01-17 10:00:00", [(3, 20, "1")])),
        "2024-02": merged(CATALOGUE, {"crm_account": [account("CRM-9", " Aw00000001 "),
                                                      account("CRM-2", "AW00000003 ")]},
                          sale(4, "aw00000001", "2024-02-15 10:00:00", [(4, 10, "3")])),
        "2024-03": merged(CATALOGUE, {"crm_account": [account("CRM-1", "aw00000001"),
                                                      account("CRM-8", "AW00000003")]},
                          sale(5, "AW00000003", "2024-03-15 10:00:00", [(5, 20, "1")])),
    }
    for window, tables in windows.items():
        await send_window(ctx, window, tables, gold=False)
    keys = ctx.plan.gold.keys
    assert keys is not None
    states = []
    for many, share in ((keys.many, keys.share), (1, 0.0)):
        await ctx.pool.execute("TRUNCATE " + ", ".join(
            f'"{ctx.plan.schema}"."{s.name}"' for s in ctx.plan.gold.shapes))
        gold_plan = dataclasses.replace(
            ctx.plan.gold, keys=dataclasses.replace(keys, many=many, share=share))
        processor = GoldProcessor(ctx.pool, dataclasses.replace(ctx.plan, gold=gold_plan),
                                  ctx.clock)
        for window in windows:
            await processor.apply(DIVISION, window)
        assert await links(ctx, "shipment", "line_id") == {
            1: "CRM-1", 2: None, 3: "CRM-2", 4: "CRM-1", 5: "CRM-2"}
        states.append(await snapshot(ctx))
    assert states[0] == states[1]


async def test_a_window_applied_while_another_holds_its_account_still_links(
        ctx: Context) -> None:
    # Applies run one at a time: east's window, applied while another transaction (another
    # division's window, say) has written the account but not committed, waits for it.
    await send_window(ctx, "2024-01", merged(
        CATALOGUE, sale(1, "AW00000001", "2024-01-15 10:00:00", [(1, 10, "2")])))
    assert await links(ctx, "shipment", "line_id") == {1: None}
    async with ctx.pool.acquire() as other:
        transaction = other.transaction()
        await transaction.start()
        await assay.db.gold.serialise(other, ctx.plan.schema)
        await other.execute(
            f'INSERT INTO {gold(ctx, "account")} (account_id, account_number, "_division",'
            " \"_window\") VALUES ('CRM-1', ' aw00000001', 'west', '2024-01')")
        applying = asyncio.create_task(gold_processor(ctx).apply(DIVISION, "2024-01"))
        await until_waiting_for_a_lock(ctx, applying)
        await transaction.commit()
        assert await applying == {"sales_order": 0, "shipment": 0}
    assert await links(ctx, "shipment", "line_id") == {1: "CRM-1"}


async def until_waiting_for_a_lock(ctx: Context, task: asyncio.Task[Any]) -> None:
    """Return once another session of this test's pool waits for an advisory lock."""
    async def waiting() -> bool:
        return bool(await ctx.pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
            " AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
            ctx.application_name))

    async def poll() -> None:
        while not await waiting():
            assert not task.done(), "the apply ran without waiting"
            await asyncio.sleep(0.005)  # polling a condition, not timing anything

    await asyncio.wait_for(poll(), timeout=30)


async def test_an_index_dropped_from_config_is_dropped_from_the_table(
        ctx: Context, open_ctx: OpenContext, tmp_path: Path, schema: str) -> None:
    async def indexes() -> dict[str, str]:
        rows = await ctx.pool.fetch("SELECT indexname, indexdef FROM pg_indexes"
                                    " WHERE schemaname = $1 AND tablename = 'gold_shipment'",
                                    schema)
        return {r[0]: r[1].split(" USING btree ")[1] for r in rows}

    wider = json.loads(json.dumps(GOLD))
    wider["tables"]["shipment"]["indexes"] = [["order_id"], ["product_id"], ["qty"]]
    await open_ctx(write_config(tmp_path / "wider", schema, wider))
    before = await indexes()
    assert {"(order_id)", "(product_id)", "(qty)"} <= set(before.values())
    # The KPI's joins keep the indexes they need, in config or not.
    narrower = json.loads(json.dumps(GOLD))
    narrower["tables"]["shipment"]["indexes"] = []
    await open_ctx(write_config(tmp_path / "narrower", schema, narrower))
    after = await indexes()
    assert set(after.values()) == set(before.values()) - {"(qty)"}
    assert set(after) < set(before)  # the others were kept, not rebuilt under new names


# -- KPIs ---------------------------------------------------------------------------------------

KPI_DATA_2023 = merged(
    CATALOGUE,
    {"crm_account": [account("CRM-1", "aw00000001")]},
    sale(1, "AW00000001", "2023-02-10 08:00:00", [(1, 10, "3"), (2, 20, "5")]),
    sale(2, "AW00000001", "2023-11-30 23:00:00", [(3, 11, "2.5")]),
    sale(3, "AW00000002", "2023-05-01 12:00:00", [(4, 20, "7")]),
    {"sales_goal": [
        {"division": NAME, "category": "Bikes", "year": "2023", "goal_qty": "8"},
        {"division": DIVISION, "category": "Helmets", "year": "2023", "goal_qty": "0"}]},
)
KPI_DATA_2024 = merged(
    CATALOGUE,  # products are a snapshot table: every window carries all of them
    sale(4, "AW00000001", "2024-01-02 09:00:00", [(5, 10, "4"), (6, 11, "1")]),
    sale(5, "AW00000002", "2024-08-20 17:30:00", [(7, 10, "6"), (8, 20, "2")]),
    sale(6, "AW00000002", "2024-11-05 10:00:00", [(9, 20, "1.5")]),
    {"sales_goal": [
        {"division": NAME, "category": "Bikes", "year": "2024", "goal_qty": "12"},
        {"division": NAME, "category": "Helmets", "year": "2024", "goal_qty": "10"},
        {"division": NAME, "category": "Helmets", "year": "2025", "goal_qty": "20"},
        {"division": "West", "category": "Bikes", "year": "2024", "goal_qty": "99"}]},
)

EXPECTED_KPIS = """
WITH facts AS (
    SELECT c.name AS category, o.ship_year AS year,
           'Q' || ((extract(month FROM o.ship_date AT TIME ZONE 'UTC')::int + 2) / 3) AS quarter,
           l.qty, l.qty * p.weight AS weight
    FROM {s}.silver_erp_order_line l
    JOIN {s}.silver_erp_order o ON o.order_id = l.order_id AND NOT o._deleted
    JOIN {s}.silver_erp_product p ON p.product_id = l.product_id AND NOT p._deleted
    JOIN {s}.silver_erp_category c ON c.category_id = p.category_id AND NOT c._deleted
    WHERE l._division = $1 AND NOT l._deleted
), goals AS (
    SELECT category, year, sum(goal_qty)::numeric AS goal FROM {s}.silver_sales_goal
    WHERE division IN ($1, $2) AND NOT _deleted GROUP BY category, year
), annual AS (
    SELECT category, year, sum(qty) AS qty, sum(weight) AS weight
    FROM facts GROUP BY category, year
), quarterly AS (
    SELECT category, year, quarter, sum(qty) AS qty, sum(weight) AS weight
    FROM facts GROUP BY category, year, quarter
), keyed AS (
    SELECT category, year, 'year' AS period, 1 AS parts FROM annual
    UNION SELECT category, year, 'year', 1 FROM goals
    UNION SELECT category, year, quarter, 4 FROM quarterly
)
SELECT k.period, k.category, k.year,
       coalesce(q.qty, a.qty, 0) AS shipped_qty,
       coalesce(q.weight, a.weight, 0) AS shipped_weight,
       g.goal AS annual_goal,
       round(g.goal / k.parts, 2) AS period_goal,
       pg.goal AS prior_year_goal,
       coalesce(pq.qty, pa.qty, 0) AS prior_year_shipped,
       round(100 * coalesce(q.qty, a.qty, 0) / nullif(g.goal / k.parts, 0), 1)
           AS attainment_pct,
       round(100 * coalesce(pq.qty, pa.qty, 0) / nullif(pg.goal / k.parts, 0), 1)
           AS prior_year_attainment_pct
FROM keyed k
LEFT JOIN annual a ON k.parts = 1 AND (a.category, a.year) = (k.category, k.year)
LEFT JOIN quarterly q ON (q.category, q.year, q.quarter) = (k.category, k.year, k.period)
LEFT JOIN goals g ON (g.category, g.year) = (k.category, k.year)
LEFT JOIN annual pa ON k.parts = 1 AND (pa.category, pa.year) = (k.category, k.year - 1)
LEFT JOIN quarterly pq
       ON (pq.category, pq.year, pq.quarter) = (k.category, k.year - 1, k.period)
LEFT JOIN goals pg ON (pg.category, pg.year) = (k.category, k.year - 1)
ORDER BY 1, 2, 3
"""
"""The KPI recomputed from Silver without the Gold tables or the Gold SQL."""

KPI_COLUMNS = ("period, category, year, shipped_qty, shipped_weight, annual_goal, period_goal,"
               " prior_year_goal, prior_year_shipped, attainment_pct, prior_year_attainment_pct")


async def test_kpis_match_an_independent_computation_over_silver(ctx: Context) -> None:
    await send_window(ctx, "2023-12", KPI_DATA_2023)
    await send_window(ctx, "2024-12", KPI_DATA_2024)
    expected = await fetch(ctx, EXPECTED_KPIS.format(s=f'"{ctx.plan.schema}"'), DIVISION, NAME)
    actual = await fetch(ctx, f"SELECT {KPI_COLUMNS} FROM {gold(ctx, 'kpi_shipped')}"
                         " WHERE division = $1 ORDER BY 1, 2, 3", DIVISION)
    assert actual == expected
    by_key = {(r["period"], r["category"], r["year"]): r for r in actual}
    bikes = by_key["year", "Bikes", 2024]  # spot-check the independent query itself
    assert (bikes["shipped_qty"], bikes["annual_goal"], bikes["prior_year_shipped"],
            bikes["attainment_pct"]) == (11, 12, Decimal("5.5"), Decimal("91.7"))
    assert {p for p, _, _ in by_key} == {"year", "Q1", "Q2", "Q3", "Q4"}
    assert by_key["year", "Helmets", 2025]["shipped_qty"] == 0  # a goal without shipments


async def test_an_unshipped_order_is_left_out_of_the_kpis(ctx: Context) -> None:
    await send_window(ctx, "2024-01", merged(
        CATALOGUE, sale(1, "AW00000001", "2024-01-15 10:00:00", [(1, 10, "2")]),
        sale(2, "AW00000001", None, [(2, 10, "5")])))
    rows = await fetch(ctx, f"SELECT period, year, shipped_qty FROM {gold(ctx, 'kpi_shipped')}"
                            " ORDER BY 1")
    assert rows == [{"period": "Q1", "year": 2024, "shipped_qty": 2},
                    {"period": "year", "year": 2024, "shipped_qty": 2}]


# -- recompute and sync ---------------------------------------------------------------------------

async def test_applying_a_window_again_leaves_gold_byte_identical(ctx: Context) -> None:
    await send_window(ctx, "2023-12", KPI_DATA_2023)
    await send_window(ctx, "2024-12", merged(
        KPI_DATA_2024, sale(7, "AW00000077", "2024-03-01 10:00:00", [(10, 10, "1")])))
    before = await snapshot(ctx)
    processor = gold_processor(ctx)
    await processor.apply(DIVISION, "2024-12")
    await processor.apply(DIVISION, "2023-12")
    await processor.apply(DIVISION, "2024-12")
    assert await snapshot(ctx) == before
    assert all(before[t] for t in ("gold_kpi_shipped", "gold_link_unmatched", "gold_shipment"))
    applied = await ctx.pool.fetch(f"SELECT division, \"window\", status, applies FROM"
                                   f" {gold(ctx, 'windows')} ORDER BY 2")
    assert [tuple(r) for r in applied] == [(DIVISION, "2023-12", "completed", 2),
                                           (DIVISION, "2024-12", "completed", 3)]


async def test_assay_windows_shows_what_gold_applied(ctx: Context, tmp_path: Path,
                                                    redis_url: str, database_url: str) -> None:
    await send_window(ctx, "2024-01", merged(
        CATALOGUE, sale(1, "AW00000001", "2024-01-15 10:00:00", [(1, 10, "2")])))
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": ctx.keys.prefix}
    result = subprocess.run([sys.executable, "-m", "assay", "windows", "--json", "--config",
                             str(tmp_path / "config")], capture_output=True, text=True,
                            env=env, check=True, timeout=120)
    [row] = [json.loads(line) for line in result.stdout.splitlines()]
    assert (row["window"], row["status"], row["gold_applies"]) == ("2024-01", "completed", 1)
    assert row["gold_s"] is not None and row["gold_s"] >= 0


async def test_assay_gold_rebuild_recomputes_the_kpis_from_all_facts(
        ctx: Context, tmp_path: Path, redis_url: str, database_url: str) -> None:
    await send_window(ctx, "2023-12", KPI_DATA_2023)
    await send_window(ctx, "2024-12", KPI_DATA_2024)
    before = await snapshot(ctx)
    # KPI rows and sums as a config change to the KPI would leave them: stale.
    await ctx.pool.execute(f"DELETE FROM {gold(ctx, 'kpi_shipped')} WHERE period = 'Q1'")
    await ctx.pool.execute(f"UPDATE {gold(ctx, 'kpi_shipped_sums')} SET qty = qty + 1")
    assert await snapshot(ctx) != before
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": ctx.keys.prefix}
    result = subprocess.run([sys.executable, "-m", "assay", "gold", "rebuild", "--config",
                             str(tmp_path / "config")], capture_output=True, text=True,
                            env=env, check=True, timeout=120)
    assert result.stdout.strip() == "rebuilt: 1 KPI tables"
    assert await snapshot(ctx) == before


async def test_a_completed_window_gold_has_not_applied_raises_an_alert(ctx: Context) -> None:
    await send_window(ctx, "2024-01", merged(
        CATALOGUE, sale(1, "AW00000001", "2024-01-15 10:00:00", [(1, 10, "2")])), gold=False)
    [state] = await WindowStore(ctx.redis, ctx.keys).windows(DIVISION)
    assert state["status"] == "completed"
    now = float(state["completed_at"]) + 61
    alerts = Alerts([WindowNotApplied(seconds=60)], divisions={DIVISION: NAME})
    tracker = LagTracker(ctx.redis, ctx.keys, [DIVISION], {}, clock=lambda: now)
    watch = GoldWatch(WindowStore(ctx.redis, ctx.keys), ctx.pool, ctx.plan.schema, [DIVISION])
    monitor = Monitor(tracker, Metrics(), alerts, 1.0, gold=watch)
    with captured_logs() as logs:
        await monitor.check()
        await monitor.check()  # still not applied: nothing new
        await make_consumer("gold", ctx).run(burst=True)
        await monitor.check()
    [raised] = events(logs, "alert_raised")
    assert (raised["rule"], raised["subject"], raised["message"]) == (
        "window_not_applied", "east 2024-01",
        "window 2024-01 completed 61s ago and is not applied in Gold")
    assert [e["subject"] for e in events(logs, "alert_resolved")] == ["east 2024-01"]


async def test_sync_touches_only_the_windows_rows(ctx: Context) -> None:
    await send_window(ctx, "2024-01", merged(
        CATALOGUE, {"crm_account": [account("CRM-1", "AW00000001")]},
        sale(1, "AW00000001", "2024-01-15 10:00:00", [(1, 10, "2"), (2, 20, "1")])))
    versions = 'SELECT xmin::text, * FROM {} WHERE "_window" = $1 ORDER BY 2'
    tables = [gold(ctx, t) for t in ("account", "sales_order", "shipment")]
    before = [await fetch(ctx, versions.format(t), "2024-01") for t in tables]
    await send_window(ctx, "2024-02", merged(
        CATALOGUE, {"crm_account": [account("CRM-2", "AW00000002")]},
        sale(2, "AW00000002", "2024-02-15 10:00:00", [(3, 11, "5")])))
    assert [await fetch(ctx, versions.format(t), "2024-01") for t in tables] == before
    assert await links(ctx, "shipment", "line_id") == {1: "CRM-1", 2: "CRM-1", 3: "CRM-2"}


async def test_a_soft_deleted_silver_row_disappears_from_gold(ctx: Context) -> None:
    await send_window(ctx, "2024-01", merged(
        CATALOGUE, sale(1, "AW00000001", "2024-01-15 10:00:00", [(1, 10, "2"), (2, 20, "1")])))
    await send_window(ctx, "2024-02", CATALOGUE,
                      deletes={"erp_order_line": [{"line_id": "2"}]})
    silver = await fetch(ctx, f'SELECT line_id, qty, "_deleted" FROM'
                              f' "{ctx.plan.schema}"."silver_erp_order_line" ORDER BY 1')
    assert [(r["line_id"], r["_deleted"]) for r in silver] == [(1, False), (2, True)]
    assert list(await links(ctx, "shipment", "line_id")) == [1]
    kpi = await ctx.pool.fetchval(f"SELECT sum(shipped_qty) FROM {gold(ctx, 'kpi_shipped')}"
                                  " WHERE period = 'year'")
    assert kpi == 2


async def test_keys_missing_from_a_later_snapshot_window_are_deleted(ctx: Context) -> None:
    await send_window(ctx, "2024-01", CATALOGUE)
    await send_window(ctx, "2024-02", {**CATALOGUE, "erp_product": CATALOGUE["erp_product"][:2]})
    silver = await fetch(ctx, f'SELECT product_id, "_window", "_deleted" FROM'
                              f' "{ctx.plan.schema}"."silver_erp_product" ORDER BY 1')
    assert [tuple(r.values()) for r in silver] == [
        (10, "2024-02", False), (11, "2024-02", False), (20, "2024-02", True)]
    products = await ctx.pool.fetch(f"SELECT product_id FROM {gold(ctx, 'product')} ORDER BY 1")
    assert [p[0] for p in products] == [10, 11]


# -- query plans --------------------------------------------------------------------------------

def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


async def test_per_window_linkage_uses_the_functional_index(ctx: Context) -> None:
    # 100k rows in daily-sized windows of 100. With PostgreSQL's default costs the planner
    # keeps to the index up to about 400 rows per window at this size; past that it hashes
    # a sequential scan of the other table (see bench/gold.py).
    schema, rows, per_window = ctx.plan.schema, 100_000, 100
    await ctx.pool.execute(
        f'INSERT INTO {gold(ctx, "account")} (account_id, account_number, name, "_division",'
        ' "_window") SELECT \'CRM-\' || i, \'  aw\' || lpad(i::text, 8, \'0\') || \' \','
        " 'Account ' || i, $1, 'w' || lpad((i / $2)::text, 4, '0')"
        " FROM generate_series(1, $3) AS i", DIVISION, per_window, rows)
    await ctx.pool.execute(
        f'INSERT INTO {gold(ctx, "shipment")} (line_id, order_id, product_id, qty,'
        ' customer_account, "_division", "_window") SELECT i, i / 4, i % 500, 1,'
        " 'AW' || lpad((i + 500)::text, 8, '0'), $1, 'w' || lpad((i / $2)::text, 4, '0')"
        " FROM generate_series(1, $3) AS i", DIVISION, per_window, rows)
    indexes = {s.name: index_name(s.name, e) for s in ctx.plan.gold.shapes
               for e in s.indexes if "trim(lower(" in e}
    [sync] = [s for s in ctx.plan.gold.syncs if '"gold_shipment"' in s.upsert]
    [target] = [t for t in ctx.plan.gold.links if t.table == "shipment"]

    async def used(statement: str) -> set[str]:
        plan = json.loads(await ctx.pool.fetchval(
            f"EXPLAIN (FORMAT JSON) {statement}", DIVISION, "w0500"))[0]["Plan"]
        return {n.get("Index Name") for n in plan_nodes(plan)
                if n["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")}

    # Before any statistics too, a written row probes the accounts' index for its account
    # (and does not, say, walk the primary key in id order to find the lowest).
    assert indexes["gold_account"] in await used(sync.upsert)
    await ctx.pool.execute(f"ANALYZE {gold(ctx, 'account')}, {gold(ctx, 'shipment')}")
    changed = await ctx.pool.fetch("SELECT name FROM pg_settings WHERE name LIKE 'enable%'"
                                   " AND setting <> boot_val")
    assert changed == []
    # A window's own rows probe the accounts' index as they are written; the accounts a
    # window brings find older rows through the target's index.
    assert indexes["gold_account"] in await used(sync.upsert)
    keys = ctx.plan.gold.keys
    assert keys is not None
    async with ctx.pool.acquire() as conn, conn.transaction():
        await keys.run(conn, DIVISION, "w0500")
        plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {target.relink}"))
    assert indexes["gold_shipment"] in {
        n.get("Index Name") for n in plan_nodes(plan[0]["Plan"])
        if n["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")}
    definition = await ctx.pool.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = $2",
        schema, indexes["gold_account"])
    assert "TRIM(BOTH FROM lower(account_number))" in definition


def sql_literals(module: types.ModuleType) -> list[str]:
    """Every string literal of a module but its docstrings: the parts its SQL is built from."""
    tree = ast.parse(inspect.getsource(module))
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docstrings]


async def test_no_gold_statement_uses_ilike_or_a_leading_wildcard(ctx: Context) -> None:
    gold_plan = ctx.plan.gold
    statements = [s for sync in gold_plan.syncs for s in (sync.upsert, sync.delete)]
    statements += [s for link in gold_plan.links for s in
                   (link.relink, link.missing)]
    statements += [view.select for view in gold_plan.views]
    statements += [i for shape in gold_plan.shapes for i in shape.indexes]
    statements += sql_literals(assay.db.gold)  # also the statements run() builds inline
    unindexable = re.compile(r"\bI?LIKE\b|~~|\bSIMILAR\b|'%", re.IGNORECASE)
    assert [s for s in statements if unindexable.search(s)] == []
    assert any("gold_link_unmatched" in s for s in sql_literals(assay.db.gold))


async def test_a_windows_linkage_over_a_million_rows_scans_only_indexes(ctx: Context) -> None:
    # History: 100k accounts and 1M shipment lines, one in 21 of them waiting for an
    # account no one has yet. The window: 10k lines and 301 accounts — 300 for keys that
    # have waited, one with a lower id than an account of the history.
    history, accounts, keys, window = 1_000_000, 100_000, 105_000, 10_000
    await ctx.pool.execute(
        f'INSERT INTO {gold(ctx, "account")} (account_id, account_number, name, "_division",'
        " \"_window\") SELECT 'CRM-' || lpad(i::text, 8, '0'),"
        " '  aw' || lpad(i::text, 8, '0') || ' ', 'Account ' || i, $1, 'h'"
        " FROM generate_series(1, $2) AS i", DIVISION, accounts)
    await ctx.pool.execute(
        f'INSERT INTO {gold(ctx, "shipment")} (line_id, order_id, product_id, qty,'
        ' customer_account, crm_account_id, "_division", "_window")'
        " SELECT i, i / 5, i % 500, 1, 'AW' || lpad(a::text, 8, '0'),"
        " CASE WHEN a <= $2::bigint THEN 'CRM-' || lpad(a::text, 8, '0') END, $1,"
        " CASE WHEN i > $3::bigint THEN 'new' ELSE 'h' END"
        " FROM generate_series(1, $3::bigint + $5::bigint) AS i,"
        " LATERAL (SELECT 1 + i % $4::bigint AS a) AS pick",
        DIVISION, accounts, history, keys, window)
    await ctx.pool.execute(
        f'INSERT INTO {gold(ctx, "account")} (account_id, account_number, name, "_division",'
        " \"_window\") SELECT 'CRM-' || lpad(i::text, 8, '0'), 'AW' || lpad(i::text, 8, '0'),"
        " 'Account ' || i, $1, 'new' FROM generate_series($2::bigint + 1, $2::bigint + 300) AS i"
        " UNION ALL SELECT 'CRM-0', 'aw00000005', 'Lower', $1, 'new'", DIVISION, accounts)
    await ctx.pool.execute(f"ANALYZE {gold(ctx, 'account')}, {gold(ctx, 'shipment')}")
    [target] = [t for t in ctx.plan.gold.links if t.table == "shipment"]
    moves = ctx.plan.gold.moves
    assert moves is not None
    gold_tables = {s.name for s in ctx.plan.gold.shapes}
    scanned: dict[str, set[str]] = {}
    window_keys = ctx.plan.gold.keys
    assert window_keys is not None
    async with ctx.pool.acquire() as conn, conn.transaction():
        await window_keys.run(conn, DIVISION, "new")
        for name, statement, args in [
                ("keys", window_keys.fill[1], (DIVISION, "new")),
                ("relink", target.relink, ()),
                ("displace", target.displace, ()),
                ("missing", target.missing, (DIVISION, "new")),
                ("moved", moves.relinks[1], (["CRM-00000007"],))]:
            plan = json.loads(await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", *args))[0]["Plan"]
            scanned[name] = {n["Relation Name"] for n in plan_nodes(plan)
                             if n["Node Type"] == "Seq Scan"} & gold_tables
        linked = await conn.fetchval(
            f"SELECT count(*) FROM {gold(ctx, 'shipment')} WHERE crm_account_id IS NOT NULL"
            " AND customer_account BETWEEN 'AW00100001' AND 'AW00100300'")
        lower = await conn.fetchval(f"SELECT count(*) FROM {gold(ctx, 'shipment')}"
                                    " WHERE crm_account_id = 'CRM-0'")
    assert scanned == {"keys": set(), "relink": set(), "displace": set(), "missing": set(),
                       "moved": set()}
    assert moves.relinks[1].startswith(f"UPDATE {gold(ctx, 'shipment')}")
    expected = await ctx.pool.fetchval(
        f"SELECT count(*) FROM {gold(ctx, 'shipment')}"
        " WHERE customer_account BETWEEN 'AW00100001' AND 'AW00100300'")
    assert linked == expected > 0
    assert lower == (history + window) // keys + 1  # every line of account 5 moved


async def test_a_window_of_many_keys_finds_the_rows_of_displaced_accounts_by_index(
        ctx: Context) -> None:
    # 500k shipment lines of 100k accounts; the window brings 20k accounts for keys of the
    # history, one of them with a lower id than the account its lines are linked to. The
    # planner, guessing ten displaced ids per key, hashed the whole target instead.
    history, accounts, window = 500_000, 100_000, 20_000
    await ctx.pool.execute(
        f'INSERT INTO {gold(ctx, "account")} (account_id, account_number, name, "_division",'
        " \"_window\") SELECT 'CRM-' || lpad(i::text, 8, '0'), 'AW' || lpad(i::text, 8, '0'),"
        " 'Account ' || i, $1, 'h' FROM generate_series(1, $2) AS i", DIVISION, accounts)
    await ctx.pool.execute(
        f'INSERT INTO {gold(ctx, "shipment")} (line_id, order_id, product_id, qty,'
        ' customer_account, crm_account_id, "_division", "_window")'
        " SELECT i, i / 5, i % 500, 1, 'AW' || lpad(a::text, 8, '0'),"
        " 'CRM-' || lpad(a::text, 8, '0'), $1, 'h' FROM generate_series(1, $2) AS i,"
        " LATERAL (SELECT 1 + i % $3::bigint AS a) AS pick", DIVISION, history, accounts)
    await ctx.pool.execute(
        f'UPDATE {gold(ctx, "account")} SET "_window" = \'new\' WHERE account_id <= $1',
        f"CRM-{window:08d}")
    await ctx.pool.execute(
        f'INSERT INTO {gold(ctx, "account")} (account_id, account_number, name, "_division",'
        " \"_window\") VALUES ('CRM-0', 'aw00000007', 'Lower', $1, 'new')", DIVISION)
    await ctx.pool.execute(f"ANALYZE {gold(ctx, 'account')}, {gold(ctx, 'shipment')}")
    [target] = [t for t in ctx.plan.gold.links if t.table == "shipment"]
    window_keys = ctx.plan.gold.keys
    assert window_keys is not None
    async with ctx.pool.acquire() as conn, conn.transaction():
        await window_keys.run(conn, DIVISION, "new")
        plan = json.loads(await conn.fetchval(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {target.displace}"))[0]["Plan"]
        moved = await conn.fetchval(f"SELECT count(*) FROM {gold(ctx, 'shipment')}"
                                    " WHERE crm_account_id = 'CRM-0'")
    assert {n["Relation Name"] for n in plan_nodes(plan) if n["Node Type"] == "Seq Scan"
            and n["Relation Name"] == "gold_shipment"} == set()
    assert moved == history // accounts  # every line of account 7


def test_a_kpi_cannot_use_the_link_column(tmp_path: Path) -> None:
    config = json.loads(json.dumps(GOLD))
    config["kpis"]["shipped"]["dimensions"]["account"] = "sales_order.crm_account_id"
    config["kpis"]["shipped"]["goals"]["match"]["account"] = "division"
    with pytest.raises(ConfigError) as raised:
        load_config(write_config(tmp_path / "config", "s", config))
    assert [p.split("/")[-1] for p in raised.value.problems if "link column" in p] == [
        "gold.json: $.gold.kpis.shipped.dimensions.account: 'sales_order.crm_account_id' is"
        " the link column, which KPIs cannot use"]
