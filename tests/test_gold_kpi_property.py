"""Incremental KPIs equal a full recompute, row for row, after every window (hypothesis).

Random sequences of windows of two divisions go into Silver as Silver would leave them
(rows upserted or soft-deleted under the window's name) and through
``GoldProcessor.apply``: new lines, lines moved to another order or product, orders whose
ship date moves to another quarter or year (or to none), products moving to another
category or weight, categories renamed (two may share a name), deletes of each, goals of
either division (by id or name) set, changed and deleted, and late data for a window
applied before. After each window the KPI table and its sums are compared with the full
recompute (``assay gold rebuild``), run in a transaction that is rolled back, so the
incremental state carries on into the next window.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.contracts.config import load_config
from assay.db.ident import qualified, quote
from assay.db.schema import migrate
from assay.processors.gold import GoldProcessor
from assay.processors.plan import Plan, build_plan
from tests.test_gold import GOLD, TABLES

DIVISIONS = {"east": "East", "west": "West"}

SHIP_DATES = [datetime(2022, 3, 15, 10, tzinfo=UTC), datetime(2022, 11, 30, 10, tzinfo=UTC),
              datetime(2023, 6, 1, 10, tzinfo=UTC), datetime(2023, 12, 31, 23, tzinfo=UTC),
              datetime(2024, 1, 1, 0, 30, tzinfo=UTC), None]
CATEGORY_NAMES = ["Bikes", "Helmets", "Tyres"]

lines = st.fixed_dictionaries({
    "line_id": st.integers(1, 10), "order_id": st.integers(1, 5),
    "product_id": st.sampled_from([10, 11, 20, 21]),
    "qty": st.sampled_from([None, Decimal(1), Decimal(2), Decimal(5), Decimal("2.5")]),
    "customer_account": st.just("AW1")})
orders = st.builds(
    lambda order_id, shipped: {"order_id": order_id, "customer_account": "AW1",
                               "ship_date": shipped,
                               "ship_year": shipped.year if shipped else None},
    st.integers(1, 5), st.sampled_from(SHIP_DATES))
products = st.fixed_dictionaries({
    "product_id": st.sampled_from([10, 11, 20, 21]),
    "category_id": st.sampled_from([1, 2, 3, None]),
    "weight": st.sampled_from([None, Decimal("12.5"), Decimal("0.4"), Decimal("1.125")])})
categories = st.fixed_dictionaries({
    "category_id": st.integers(1, 3), "name": st.sampled_from(CATEGORY_NAMES)})
goals = st.fixed_dictionaries({
    "division": st.sampled_from(["east", "West", "north"]),
    "category": st.sampled_from(CATEGORY_NAMES), "year": st.integers(2021, 2024),
    "goal_qty": st.sampled_from([0, 5, 12, 40])})

TABLE_ROWS = {"erp_order_line": lines, "erp_order": orders, "erp_product": products,
              "erp_category": categories, "sales_goal": goals}
TABLES_DRAWN = ["erp_order_line"] * 4 + ["erp_order"] * 2 + sorted(TABLE_ROWS)
"""Lines change most often, as they do; every table changes now and then."""
change = st.tuples(st.sampled_from(TABLES_DRAWN), st.integers(0, 4)).flatmap(
    lambda pick: st.tuples(st.just(pick[0]), st.just(pick[1] == 0), TABLE_ROWS[pick[0]]))
"""(Silver table, deleted (one in five), row)."""
window = st.fixed_dictionaries({
    "division": st.sampled_from(sorted(DIVISIONS)),
    "late": st.booleans(),
    "changes": st.lists(change, min_size=1, max_size=8)})


def complete(rows: st.SearchStrategy[dict[str, Any]], key: str, ids: list[int]
             ) -> st.SearchStrategy[list[tuple[str, bool, dict[str, Any]]]]:
    """One row for each of ``ids``, the rest of each row drawn."""
    return st.tuples(*(rows.map(lambda r, i=i: {**r, key: i}) for i in ids)).map(list)


def first_window(table: str, rows: list[dict[str, Any]]) -> list[tuple[str, bool, Any]]:
    return [(table, False, r) for r in rows]


seed = st.builds(
    lambda c, p, o, ls, gs: {
        "division": "east", "late": False,
        "changes": first_window("erp_category", c) + first_window("erp_product", p)
        + first_window("erp_order", o) + first_window("erp_order_line", ls)
        + first_window("sales_goal", gs)},
    complete(categories, "category_id", [1, 2, 3]),
    complete(products, "product_id", [10, 11, 20, 21]),
    complete(orders, "order_id", [1, 2, 3, 4, 5]),
    complete(lines, "line_id", list(range(1, 9))),
    st.lists(goals, max_size=10))
"""A first window with the whole catalogue, every order and most lines: facts to move."""


def write_config(folder: Path, schema: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tables = json.loads(json.dumps(TABLES))
    tables["erp_product"]["mode"] = "delta"  # products change by the rows a window sends
    tables_needed = [t for t in tables if t != "crm_account"]
    (folder / "pipeline.json").write_text(json.dumps({
        "pipeline": {"db_schema": schema},
        "divisions": {d: {"name": n, "tables": tables_needed} for d, n in DIVISIONS.items()},
        "tables": tables,
    }))
    (folder / "gold.json").write_text(json.dumps({"gold": GOLD}))
    return folder


async def put(conn: asyncpg.Connection, plan: Plan, table: str, row: dict[str, Any],
              division: str, window: str, deleted: bool, n: int) -> None:
    """One row as Silver leaves it: upserted, or soft-deleted, under the window's name."""
    shape = plan.tables[table].silver
    values = {**row, "_division": division, "_window": window, "_row": n,
              "_entry": f"{n:012d}", "_deleted": deleted}
    names = list(values)
    key = [k for k in shape.primary_key]
    await conn.execute(
        f"INSERT INTO {qualified(plan.schema, shape.name)} ({', '.join(map(quote, names))})"
        f" VALUES ({', '.join(f'${i + 1}' for i in range(len(names)))})"
        f" ON CONFLICT ({', '.join(map(quote, key))}) DO UPDATE SET "
        + ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in names if c not in key),
        *values.values())


async def state(conn: asyncpg.Connection, plan: Plan) -> dict[str, list[tuple[Any, ...]]]:
    """The KPI tables and their sums, every row, in key order."""
    result = {}
    for shape in plan.gold.shapes:
        if shape.name.startswith("gold_kpi_"):
            order = ", ".join(quote(c) for c in shape.primary_key)
            rows = await conn.fetch(
                f"SELECT * FROM {qualified(plan.schema, shape.name)} ORDER BY {order}")
            result[shape.name] = [tuple(r) for r in rows]
    return result


async def run_windows(database_url: str, plan: Plan, windows: list[dict[str, Any]]) -> int:
    """Apply the windows one by one, compare after each; returns the KPI rows compared."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        tables = [qualified(plan.schema, s.name) for s in plan.shapes()
                  if s.name.startswith(("gold_", "silver_"))]
        await pool.execute(f"TRUNCATE {', '.join(tables)}")
        processor = GoldProcessor(pool, plan, lambda: 0.0)
        applied: dict[str, list[str]] = {d: [] for d in DIVISIONS}
        compared = 0
        for i, spec in enumerate(windows):
            division = spec["division"]
            earlier = applied[division]
            name = earlier[i % len(earlier)] if spec["late"] and earlier else f"w{i:03d}"
            async with pool.acquire() as conn:
                for j, (table, deleted, row) in enumerate(spec["changes"]):
                    await put(conn, plan, table, row, division, name, deleted, i * 100 + j)
            await processor.apply(division, name)
            applied[division].append(name)
            async with pool.acquire() as conn:
                incremental = await state(conn, plan)
                transaction = conn.transaction()
                await transaction.start()
                try:
                    for kpi in plan.gold.kpis:
                        await kpi.rebuild(conn, DIVISIONS)
                    full = await state(conn, plan)
                finally:
                    await transaction.rollback()
            assert incremental == full, f"after window {i} ({division} {name}): {spec}"
            compared += len(full["gold_kpi_shipped"])
    finally:
        await pool.close()
    return compared


async def create(database_url: str, plan: Plan) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, plan.schema, plan.shapes(), plan.views())
    finally:
        await conn.close()


async def drop(database_url: str, schema: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")
    finally:
        await conn.close()


def test_incremental_kpis_equal_a_full_recompute_after_every_window(
        database_url: str, prefix: str, tmp_path: Path) -> None:
    plan = build_plan(load_config(write_config(tmp_path / "config", prefix)))
    asyncio.run(create(database_url, plan))
    seen: list[int] = []

    @settings(max_examples=50, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(seed, st.lists(window, min_size=1, max_size=6))
    def windows_apply(first: dict[str, Any], windows: list[dict[str, Any]]) -> None:
        seen.append(asyncio.run(run_windows(database_url, plan, [first, *windows])))

    try:
        windows_apply()
    finally:
        asyncio.run(drop(database_url, prefix))
    assert sum(seen) > 300  # the property held over many KPI rows, not a trivial few
