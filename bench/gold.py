"""Gold at scale: a window's apply over a growing history, and CRM↔ERP linkage.

    python -m bench.gold [--lines 1000000 4000000 16000000] [--window-lines 10000]
                         [--windows 3] [--keep | --reuse SCHEMA]
                         [--accounts 1000000] [--no-linkage] [--verbose]

Without ``REDIS_URL``/``DATABASE_URL`` it starts (or reuses) the embedded servers, as the
CLI does.

1. The curve, window completion to updated KPIs: Silver holds a history of ``--lines``
   shipment lines (5 per order, 500 products, 37 subcategories, 4 categories, 100k
   customers and CRM accounts — every 33rd customer without one —, 3 divisions, ship dates
   over 4 years), built with set-based SQL; Gold takes it through the production upserts
   (account lookups included) over row ranges instead of window by window, then VACUUM
   ANALYZE and a full KPI recompute. For each size in turn (the history grows from one to
   the next) ``--windows`` new windows are measured, each in two parts that arrive in
   Silver and are applied by Gold one after the other: part 0, ``--window-lines`` lines
   with 600 new customers, every 33rd without an account (not timed), then part 1, the
   one measured: ``--window-lines`` lines, their orders and invoices, 600 new customers
   with their accounts, and the accounts part 0's customers waited for. Each part's rows
   belong to its own window (the lines Gold applied are counted and stored). Part 1's
   ``WindowEvent`` is added to the windows stream and the Gold consumer drains it; every
   statement of ``GoldProcessor.apply`` is timed by a query logger on the pool, and the
   times are split into sync, linkage and KPIs. The curve (per size the median of the
   windows with min–max, every window's figures in the JSON) goes to
   ``bench/results/gold-curve.md`` (and ``.json``, ``.png``). ``--keep`` keeps the
   history's schema after the curve; ``--reuse SCHEMA`` measures it again (growing it to
   larger ``--lines`` if asked) instead of building it anew.
2. Linkage of ``--accounts`` CRM accounts against as many ERP customers, through the
   production sync and link statements: ERP rows arriving for accounts Gold already has
   (linked as they are written; the same sync without lookups for comparison), accounts
   arriving for ERP rows that waited unlinked (statistics from before the window, then
   after ANALYZE), and a new window of 50k accounts and 50k customers.
3. The ILIKE linkage a team would first write (``t.key ILIKE '%' || trim(a.key) || '%'``)
   on a fixed sample of keys under a statement timeout, extrapolated to every key.

Everything lives in a schema of its own, dropped at the end unless kept, and Redis keys
under a prefix of their own. Parts 2 and 3 (skipped with ``--no-linkage``) go to stdout and to
``bench/results/gold.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import shlex
import statistics
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from assay import logs
from assay.contracts.config import load_config
from assay.contracts.messages import WindowEvent
from assay.db.gold import TableSync
from assay.db.ident import quote
from assay.db.schema import migrate
from assay.processors.plan import Plan, build_plan
from assay.runner import Context, make_consumer
from assay.streams import keys as channels
from assay.streams.client import connect
from assay.streams.codec import encode
from assay.streams.keys import Keys
from bench.runs import code_version

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "gold.md"
CURVE = ROOT / "bench" / "results" / "gold-curve.md"
DIVISIONS = ["north_america", "europe", "pacific"]
LINES_PER_ORDER = 5
CUSTOMERS = 100_000
NEW_CUSTOMERS = 600
WINDOW_IDS = 1_000_000_000
"""New windows' order and line ids start here, far above any history."""
STATIC_TABLES = ["erp_product_category", "erp_product_subcategory", "erp_product",
                 "sales_goal", "erp_customer", "crm_account"]

# -- Silver history, set-based ------------------------------------------------------------------
# {s} is the quoted schema; $1 the divisions; sizes are bound. Order o belongs to division
# o % 3 and ships on day (o * 37) % 1430 after 2021-01-01: monthly windows 2021-01..2024-11.

ORDER_DIVISION = "($1::text[])[1 + o % 3]"
SHIP_DATE = "(timestamptz '2021-01-01 08:00:00+00' + ((o * 37) % 1430) * interval '1 day')"
NEW_SHIP_DATE = "(timestamptz '{month} 08:00:00+00' + (o % 28) * interval '1 day')"
META = '"_division", "_window", "_row", "_entry", "_deleted"'
HISTORY_WINDOW = f"to_char({SHIP_DATE}, 'YYYY-MM')"
"""History rows belong to the month they ship in."""


def order_rows(ship: str) -> str:
    return (
        'INSERT INTO {s}."silver_erp_order" ("SalesOrderID", "OrderDate", "ShipDate",'
        ' "Status", "CustomerID", "TerritoryID", "SubTotal", "TotalDue", "CustomerAccount",'
        f' "ship_year", "ship_quarter", "days_to_ship", {META})'
        f" SELECT o, {ship} - interval '7 days', {ship}, 5, c, 1 + o % 10,"
        " (o % 900) + 100.50, (o % 900) + 112.75, 'AW' || lpad(c::text, 8, '0'),"
        f" extract(year FROM {ship}), extract(quarter FROM {ship}), 7,"
        f" {{division}}, {{window}}, o, lpad(o::text, 12, '0'), false"
        " FROM generate_series($2::bigint, $3::bigint) AS o,"
        " LATERAL (SELECT 1 + (o * 7) % $4::bigint AS c) AS pick")


def line_rows(ship: str) -> str:
    return (
        'INSERT INTO {s}."silver_erp_order_line" ("SalesOrderID", "SalesOrderDetailID",'
        ' "OrderQty", "ProductID", "UnitPrice", "LineTotal", "CustomerAccount",'
        f' {META}) SELECT o, l, 1 + l % 5, 1 + (l * 13) % 500, 10 + l % 90,'
        " (1 + l % 5) * (10 + l % 90), 'AW' || lpad((1 + (o * 7) % $4::bigint)::text, 8, '0'),"
        " {division}, {window}, l, lpad(l::text, 12, '0'), false"
        " FROM generate_series($2::bigint, $3::bigint) AS l,"
        f" LATERAL (SELECT (l - 1) / {LINES_PER_ORDER} + 1 AS o) AS head")


def invoice_rows(ship: str) -> str:
    return (
        'INSERT INTO {s}."silver_erp_invoice" ("InvoiceID", "SalesOrderID", "CustomerAccount",'
        f' "InvoiceDate", "Amount", {META}) SELECT \'INV-\' || o, o,'
        " 'AW' || lpad((1 + (o * 7) % $4::bigint)::text, 8, '0'), " + ship + ","
        " (o % 900) + 112.75, {division}, {window}, o,"
        " lpad(o::text, 12, '0'), false FROM generate_series($2::bigint, $3::bigint) AS o")


CATALOGUE = [
    'INSERT INTO {s}."silver_erp_product_category" ("ProductCategoryID", "Name", ' + META + ")"
    " SELECT k, (ARRAY['Bikes', 'Components', 'Clothing', 'Accessories'])[k], $1,"
    " '2021-01', k, lpad(k::text, 12, '0'), false FROM generate_series(1, 4) AS k",
    'INSERT INTO {s}."silver_erp_product_subcategory" ("ProductSubcategoryID",'
    ' "ProductCategoryID", "Name", ' + META + ") SELECT k, 1 + k % 4, 'Subcategory ' || k,"
    " $1, '2021-01', k, lpad(k::text, 12, '0'), false FROM generate_series(1, 37) AS k",
    'INSERT INTO {s}."silver_erp_product" ("ProductID", "Name", "ProductNumber", "Weight",'
    ' "WeightUnitMeasureCode", "ProductSubcategoryID", "weight_tonnes", ' + META + ")"
    " SELECT k, 'Product ' || k, 'PN-' || k, (k % 20) + 1, 'LB', 1 + k % 37,"
    " ((k % 20) + 1) * 0.00045359237, $1, '2021-01', k, lpad(k::text, 12, '0'), false"
    " FROM generate_series(1, 500) AS k",
    'INSERT INTO {s}."silver_sales_goal" ("division", "category", "year", "goal_qty", '
    + META + ") SELECT d, c, y, 40000 + 1000 * (y - 2021), $1, '2021-01',"
    " row_number() OVER (), lpad((row_number() OVER ())::text, 12, '0'), false"
    " FROM unnest(ARRAY['North America', 'Europe', 'Pacific']) AS d,"
    " unnest(ARRAY['Bikes', 'Components', 'Clothing', 'Accessories']) AS c,"
    " generate_series(2021, 2025) AS y",
]

CUSTOMER_ROWS = (
    'INSERT INTO {s}."silver_erp_customer" ("CustomerID", "TerritoryID", "AccountNumber", '
    + META + ") SELECT c, 1 + c % 10, 'AW' || lpad(c::text, 8, '0'), ($1::text[])[1 + c % 3],"
    " $4, c, lpad(c::text, 12, '0'), false FROM generate_series($2::bigint, $3::bigint) AS c")

CRM_KEY = ("CASE c % 3 WHEN 0 THEN 'AW' || lpad(c::text, 8, '0')"
           " WHEN 1 THEN '  aw' || lpad(c::text, 8, '0') || ' '"
           " ELSE 'Aw' || lpad(c::text, 8, '0') || '  ' END")
"""CRM spells ERP's ``AW00000042`` in varying case, with spaces around."""

ACCOUNT_ROWS = (
    'INSERT INTO {s}."silver_crm_account" ("crm_id", "account_number", "kind",'
    ' "display_name", "territory", ' + META + ") SELECT 'CRM-' || lpad(c::text, 8, '0'), "
    + CRM_KEY + ", 'store', 'Store ' || c, 'T' || (1 + c % 10), ($1::text[])[1 + c % 3], $4,"
    " c, lpad(c::text, 12, '0'), false FROM generate_series($2::bigint, $3::bigint) AS c"
    " WHERE (c % 33 = 0) = ANY($5::bool[])")
"""``$5``: [false] leaves out every 33rd customer (no CRM account yet), [true] only them."""


@dataclass(frozen=True)
class Sizes:
    lines: int
    window_lines: int
    accounts: int
    window_keys: int
    sample: int

    @property
    def orders(self) -> int:
        return self.lines // LINES_PER_ORDER

    @property
    def window_orders(self) -> int:
        return self.window_lines // LINES_PER_ORDER


@dataclass
class Row:
    """One line of the results table."""

    measure: str
    data: str
    seconds: float | None
    target: str = ""
    note: str = ""


@dataclass(eq=False)
class StatementTimer:
    """Sums the elapsed time of each statement a pool's connections run, by statement text."""

    elapsed: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def __call__(self, query: Any) -> None:
        self.elapsed[query.query] += query.elapsed

    def top(self, title: str, n: int = 8) -> None:
        """The slowest statements so far, to stderr."""
        print(f"-- {title}: slowest statements", file=sys.stderr)
        for sql, spent in sorted(self.elapsed.items(), key=lambda x: -x[1])[:n]:
            print(f"{spent:8.3f} s  {sql[:150]}", file=sys.stderr)

    async def attach(self, conn: asyncpg.Connection) -> None:
        conn.add_query_logger(self)


def rebind(plan: Plan, schema: str) -> Plan:
    """The demo config's plan, in a schema of its own."""
    config = plan.config
    pipeline = msgspec.structs.replace(config.pipeline, db_schema=schema)
    return build_plan(msgspec.structs.replace(config, pipeline=pipeline))


async def timed(action: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


# -- 1. window completion to KPIs ---------------------------------------------------------------

async def build_catalogue(pool: asyncpg.Pool, s: str) -> None:
    """Products, categories, goals, customers and their accounts (every 33rd waits)."""
    async with pool.acquire() as conn:
        for statement in CATALOGUE:
            await conn.execute(statement.format(s=s), DIVISIONS[0])
        await conn.execute(CUSTOMER_ROWS.format(s=s), DIVISIONS, 1, CUSTOMERS, "2021-01")
        await conn.execute(ACCOUNT_ROWS.format(s=s), DIVISIONS, 1, CUSTOMERS, "2021-01",
                           [False])


async def grow_silver(pool: asyncpg.Pool, s: str, orders: tuple[int, int],
                      lines: tuple[int, int]) -> None:
    """History orders, invoices and lines in these id ranges, set-based."""
    division = ORDER_DIVISION
    async with pool.acquire() as conn:
        for template in (order_rows, invoice_rows):
            await conn.execute(template(SHIP_DATE).format(s=s, division=division,
                                                          window=HISTORY_WINDOW),
                               DIVISIONS, *orders, CUSTOMERS)
        await conn.execute(line_rows(SHIP_DATE).format(s=s, division=division,
                                                       window=HISTORY_WINDOW),
                           DIVISIONS, *lines, CUSTOMERS)


WINDOW_FILTER = 'WHERE s."_division" = $1 AND s."_window" = $2 AND NOT s."_deleted"'
HISTORY_FILTER = 'WHERE s."_row" BETWEEN $1 AND $2 AND NOT s."_deleted"'


async def grow_gold(pool: asyncpg.Pool, plan: Plan, ranges: dict[str, tuple[int, int]]
                    ) -> None:
    """The Silver rows in ``ranges`` (Silver table → ``_row`` range) into Gold, set-based:
    each table's production upsert (account lookups included) over a range of rows
    instead of one window."""
    async with pool.acquire() as conn:
        await conn.execute("SELECT set_config('work_mem', $1, false)", plan.gold.work_mem)
        for sync in plan.gold.syncs:
            assert WINDOW_FILTER in sync.upsert
            for table, (low, high) in ranges.items():
                if f'{quote("silver_" + table)} AS s' in sync.upsert:
                    await conn.execute(sync.upsert.replace(WINDOW_FILTER, HISTORY_FILTER),
                                       low, high)


async def add_window(pool: asyncpg.Pool, s: str, window: Window) -> None:
    """The new window of one division, committed to Silver as Silver would."""
    division = "($1::text[])[1]"
    ship = NEW_SHIP_DATE.format(month=window.month)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(CUSTOMER_ROWS.format(s=s), [DIVISIONS[0]] * 3, window.customers[0],
                           window.customers[1], window.name)
        await conn.execute(ACCOUNT_ROWS.format(s=s), [DIVISIONS[0]] * 3, window.customers[0],
                           window.customers[1], window.name, window.accounts)
        # Accounts for the customers whose rows waited unlinked since the window before.
        await conn.execute(ACCOUNT_ROWS.format(s=s), [DIVISIONS[0]] * 3, *window.waiting,
                           window.name, [True])
        # Its orders, invoices and lines belong to it alone (not to the month they ship in,
        # which part 0 shares).
        for template in (order_rows, invoice_rows):
            await conn.execute(template(ship).format(s=s, division=division, window="$5::text"),
                               DIVISIONS, *window.orders, window.customers[1], window.name)
        await conn.execute(line_rows(ship).format(s=s, division=division, window="$5::text"),
                           DIVISIONS, *window.lines, window.customers[1], window.name)


@dataclass(frozen=True)
class Window:
    """The ``index``-th new window in the schema (counted over its life, so a reused history
    never sees a name or an id twice). Part 0 brings ``size`` lines and 600 customers of
    which every 33rd has no account yet; part 1, the window measured, ``size`` lines, 600
    more customers with their accounts and the accounts part 0's customers waited for. Its
    lines ship in month ``slot`` of 2025: the n-th window of every history size ships in
    the same month, so each size's KPIs change the same groups."""

    index: int
    slot: int
    size: int
    part: int

    @property
    def n(self) -> int:
        return 2 * self.index + self.part

    @property
    def name(self) -> str:
        return f"new-{self.index:04d}" + ("" if self.part else "-a")

    @property
    def month(self) -> str:
        return f"2025-{self.slot % 12 + 1:02d}-01"

    @property
    def lines(self) -> tuple[int, int]:
        first = WINDOW_IDS + 1 + self.n * 10 * self.size  # a whole order's lines first
        return first, first + self.size - 1

    @property
    def orders(self) -> tuple[int, int]:
        """The orders of the window's lines (line l belongs to order (l - 1) / 5 + 1)."""
        first, last = self.lines
        return (first - 1) // LINES_PER_ORDER + 1, (last - 1) // LINES_PER_ORDER + 1

    @property
    def customers(self) -> tuple[int, int]:
        first = CUSTOMERS + 1 + self.n * NEW_CUSTOMERS
        return first, first + NEW_CUSTOMERS - 1

    @property
    def accounts(self) -> list[bool]:
        """Which of its customers get accounts (by ``c % 33 = 0``)."""
        return [False, True] if self.part else [False]

    @property
    def waiting(self) -> tuple[int, int]:
        """Customers of part 0 whose rows waited, given their accounts by part 1."""
        if not self.part:
            return 1, 0
        return Window(self.index, self.slot, self.size, 0).customers


def split(plan: Plan, timer: StatementTimer) -> dict[str, float]:
    """Statement times of one apply, by part: sync, linkage, KPIs, other."""
    kind = {sql: "sync" for sync in plan.gold.syncs for sql in (sync.upsert, sync.delete)}
    kind |= {sql: "link" for link in plan.gold.links
             for sql in (link.relink, link.displace, link.missing)}
    if plan.gold.keys:
        kind |= {sql: "link" for sql in (plan.gold.keys.prepare, plan.gold.keys.count,
                                         *plan.gold.keys.fill, *plan.gold.keys.fill_many)}
    if plan.gold.moves:
        kind |= {sql: "link" for sql in (plan.gold.moves.find, *plan.gold.moves.relinks)}
    kind |= {sql: "kpi" for kpi in plan.gold.kpis
             for sql in (*kpi.prepare, kpi.present, *kpi.reach, kpi.contribute, kpi.reset,
                         kpi.goals, kpi.merge, kpi.prune, kpi.clear, kpi.render)}
    parts: dict[str, float] = defaultdict(float)
    for sql, seconds in timer.elapsed.items():
        # Snapshot deletes in Silver and the statistics a large window refreshes are sync.
        upkeep = ((sql.startswith("UPDATE") and "silver_" in sql) or sql.startswith("ANALYZE")
                  or "reltuples" in sql)
        part = kind.get(sql) or ("sync" if upkeep else "other")
        parts[part] += seconds
    return dict(parts)


async def window_to_kpis(ctx: Context, timer: StatementTimer, window: str) -> float:
    """From the barrier's event on the windows stream to Gold's commit and ack."""
    event = WindowEvent(division=DIVISIONS[0], window=window, status="completed",
                        tables={}, failed={}, at=time.time())
    stream = ctx.keys.stream(DIVISIONS[0], channels.WINDOWS)
    consumer = make_consumer("gold", ctx)
    await consumer.ensure_groups()
    timer.elapsed.clear()
    started = time.perf_counter()
    await ctx.redis.xadd(stream, encode(event))
    await consumer.run(burst=True)
    seconds = time.perf_counter() - started
    pending: Any = await ctx.redis.xpending(stream, ctx.keys.group("gold"))
    if pending["pending"]:
        raise RuntimeError("the window event was not processed")
    return seconds


@dataclass(frozen=True)
class Applied:
    """One measured window: its whole apply, the statement times by part, the lines it
    brought (counted in Gold afterwards) and the 1-minute load average after it."""

    whole: float
    parts: dict[str, float]
    lines: int
    load: float


@dataclass(frozen=True)
class Point:
    """One point of the curve: windows applied over ``lines`` lines of history (``build``
    seconds to grow it, None when a kept history was reused); figures are medians."""

    lines: int
    build: float | None
    windows: list[Applied]

    @property
    def whole(self) -> float:
        return statistics.median(w.whole for w in self.windows)

    @property
    def parts(self) -> dict[str, float]:
        names = {name for w in self.windows for name in w.parts}
        return {name: statistics.median(w.parts.get(name, 0.0) for w in self.windows)
                for name in sorted(names)}

    def stored(self) -> dict[str, Any]:
        return {"lines": self.lines, "build": self.build, "whole": self.whole,
                "whole_min": min(w.whole for w in self.windows),
                "whole_max": max(w.whole for w in self.windows), "parts": self.parts,
                "windows": [vars(w) for w in self.windows]}


async def history_lines(pool: asyncpg.Pool, s: str) -> int:
    """The history's lines (ids below the new windows'): 0 in a new schema."""
    return int(await pool.fetchval(
        f'SELECT coalesce(max("_row"), 0) FROM {s}."silver_erp_order_line"'
        ' WHERE "_row" < $1', WINDOW_IDS))


async def windows_so_far(pool: asyncpg.Pool, s: str) -> int:
    """New windows measured in this schema before (each applied as two)."""
    return int(await pool.fetchval(f'SELECT count(*) FROM {s}."gold_windows"')) // 2


async def grow(ctx: Context, lines: int, size: int) -> float:
    """Grow the history from ``lines`` to ``size`` lines, set-based: Silver, then Gold
    through the production upserts, VACUUM ANALYZE and a full KPI recompute; seconds."""
    pool, plan = ctx.pool, ctx.plan
    s = quote(plan.schema)
    tables = ", ".join(f"{s}.{quote(shape.name)}" for shape in plan.shapes())
    divisions = {d: c.name for d, c in plan.config.divisions.items()}
    started = time.perf_counter()
    if not lines:
        await build_catalogue(pool, s)
        await grow_gold(pool, plan, {t: (1, 10**12) for t in STATIC_TABLES})
    orders = (lines // LINES_PER_ORDER + 1, size // LINES_PER_ORDER)
    await grow_silver(pool, s, orders, (lines + 1, size))
    await grow_gold(pool, plan, {"erp_order": orders, "erp_invoice": orders,
                                 "erp_order_line": (lines + 1, size)})
    await pool.execute(f"VACUUM ANALYZE {tables}")
    async with pool.acquire() as conn:
        await conn.execute("SELECT set_config('work_mem', $1, false)", plan.gold.work_mem)
        for kpi in plan.gold.kpis:
            await kpi.rebuild(conn, divisions)
    return time.perf_counter() - started


async def measure(ctx: Context, timer: StatementTimer, window: Window, verbose: bool
                  ) -> Applied:
    """Part 0 of the window applied untimed, then part 1 through the Gold consumer with
    its statements timed; the lines it brought counted in Gold."""
    plan, s = ctx.plan, quote(ctx.plan.schema)
    before = dataclasses.replace(window, part=0)
    await add_window(ctx.pool, s, before)
    await window_to_kpis(ctx, timer, before.name)
    await add_window(ctx.pool, s, window)
    whole = await window_to_kpis(ctx, timer, window.name)
    if verbose:
        timer.top(f"window {window.name}")
    parts = split(plan, timer)
    [lines] = [sync.table for sync in plan.gold.syncs
               if f'{quote("silver_erp_order_line")} AS s' in sync.upsert]
    applied = await ctx.pool.fetchval(
        f'SELECT count(*) FROM {lines} WHERE "line_id" BETWEEN $1 AND $2'
        ' AND "_division" = $3 AND "_window" = $4', *window.lines, DIVISIONS[0], window.name)
    return Applied(whole, parts, applied, os.getloadavg()[0])


async def curve(ctx: Context, timer: StatementTimer, sizes: list[int], window_lines: int,
                windows: int, verbose: bool) -> list[Point]:
    """Grow the history to each size in turn (set-based; a kept history is reused up to
    its size), then apply ``windows`` new windows of ``window_lines`` lines each through
    the Gold consumer and time their statements."""
    pool, s = ctx.pool, quote(ctx.plan.schema)
    lines = await history_lines(pool, s)
    if lines > min(sizes):
        raise SystemExit(f"the kept history has {lines:,} lines, more than {min(sizes):,}")
    index = await windows_so_far(pool, s)
    points: list[Point] = []
    for size in sorted(sizes):
        build = await grow(ctx, lines, size) if size > lines else None
        lines = size
        applied = []
        for slot in range(windows):
            window = Window(index, slot, window_lines, 1)
            index += 1
            applied.append(await measure(ctx, timer, window, verbose))
            a = applied[-1]
            print(f"{size:>12,} lines, window {window.name}: {a.lines:,} lines applied in"
                  f" {a.whole:.3f} s ("
                  + ", ".join(f"{k} {v:.3f}" for k, v in sorted(a.parts.items()))
                  + f"), load {a.load:.2f}", file=sys.stderr, flush=True)
        points.append(Point(size, build, applied))
        print(f"{size:>12,} lines: whole apply median {points[-1].whole:.3f} s"
              + (f" (history built in {build:,.0f} s)" if build is not None else
                 " (history reused)"), file=sys.stderr, flush=True)
    return points


# -- 2. linkage of 1M accounts --------------------------------------------------------------------

@dataclass(frozen=True)
class LinkFigures:
    """Seconds of the linkage runs (best of two), and the state they left."""

    rows_arrive: float
    rows_arrive_plain: float
    accounts_sync: float
    accounts_arrive: float
    window_stale: float
    window_analyzed: float
    linked: int
    waiting: int
    deleted: float


async def linkage(pool: asyncpg.Pool, plan: Plan, sizes: Sizes) -> LinkFigures:
    """N CRM accounts against N ERP customers, both ways round, then a 50k-key window.

    Silver is refilled with N accounts (window ``accounts``) and N customers (window
    ``customers``, shifted so that some keys match nothing); Gold runs its production
    statements on them: the sync of each window, then the linkage of that window. Each
    measure runs twice, rolled back, and the faster run counts.
    """
    s, division, schema = quote(plan.schema), DIVISIONS[0], plan.schema
    account_sync, customer_sync = (
        next(x for x in plan.gold.syncs if f'"gold_{name}" AS g' in x.upsert)
        for name in ("account", "customer"))
    [target] = [t for t in plan.gold.links if t.table == "customer"]
    customer = plan.config.gold.tables["customer"]
    # The same customer sync without the account lookup, for what the lookups cost.
    plain = TableSync.build(schema, "customer", customer.source, customer.columns,
                            ["customer_id"])
    n, k, offset = sizes.accounts, sizes.window_keys, sizes.window_keys // 2
    everyone = [division] * 3

    async def apply(conn: asyncpg.Connection, *steps: TableSync, window: str,
                    link: bool = True) -> float:
        """Seconds of the syncs; the linkage follows."""
        started = time.perf_counter()
        for step in steps:
            await step.run(conn, division, window)
        synced = time.perf_counter() - started
        if link:
            assert plan.gold.keys is not None
            await plan.gold.keys.run(conn, division, window)
            await target.run(conn, division, window)
        return synced

    async def best_of_two(conn: asyncpg.Connection, *steps: TableSync, window: str,
                          link: bool = True) -> tuple[float, float]:
        """(seconds in all, seconds of the syncs) of the faster of two rolled-back runs."""
        runs = []
        for _ in range(2):
            transaction = conn.transaction()
            await transaction.start()
            try:
                started = time.perf_counter()
                synced = await apply(conn, *steps, window=window, link=link)
                runs.append((time.perf_counter() - started, synced))
            finally:
                await transaction.rollback()
        return min(runs)

    async with pool.acquire() as conn:
        await conn.execute("SELECT set_config('work_mem', $1, false)", plan.gold.work_mem)
        await conn.execute(f'TRUNCATE {s}."gold_account", {s}."gold_customer",'
                           f' {s}."silver_crm_account", {s}."silver_erp_customer"')
        await conn.execute(ACCOUNT_ROWS.format(s=s), everyone, 1, n, "accounts", [False, True])
        await conn.execute(CUSTOMER_ROWS.format(s=s), everyone, 1 + offset, n + offset,
                           "customers")
        await conn.execute(f'VACUUM ANALYZE {s}."silver_crm_account", {s}."silver_erp_customer"')
        # 1. ERP rows arrive for accounts Gold already has: linked as they are written.
        await account_sync.run(conn, division, "accounts")
        await conn.execute(f'VACUUM ANALYZE {s}."gold_account", {s}."gold_customer"')
        rows_plain, _ = await best_of_two(conn, plain, window="customers", link=False)
        rows_arrive, _ = await best_of_two(conn, customer_sync, window="customers")
        # 2. Accounts arrive for ERP rows that have waited unlinked (their keys listed), with
        # Gold's statistics from before the window, as in production.
        await conn.execute(f'TRUNCATE {s}."gold_account"')
        await conn.execute(f'VACUUM ANALYZE {s}."gold_account"')
        await apply(conn, customer_sync, window="customers")
        await conn.execute(f'VACUUM ANALYZE {s}."gold_customer"')
        accounts_all, accounts_sync = await best_of_two(conn, account_sync, window="accounts")
        await apply(conn, account_sync, window="accounts")
        await conn.execute(f'VACUUM ANALYZE {s}."gold_account", {s}."gold_customer"')
        # 3. A window of k accounts (half for customers waiting since before) and k customers
        # (half for the window's own accounts): statistics from before it, then after ANALYZE.
        await conn.execute(ACCOUNT_ROWS.format(s=s), everyone, n + 1, n + k, "new",
                           [False, True])
        await conn.execute(CUSTOMER_ROWS.format(s=s), everyone, n + offset + 1,
                           n + offset + k, "new")
        stale, _ = await best_of_two(conn, account_sync, customer_sync, window="new")
        await conn.execute(f'ANALYZE {s}."silver_crm_account", {s}."silver_erp_customer"')
        analyzed, _ = await best_of_two(conn, account_sync, customer_sync, window="new")
        await apply(conn, account_sync, customer_sync, window="new")
        linked = await conn.fetchval(
            f'SELECT count(*) FROM {s}."gold_customer" WHERE "crm_account_id" IS NOT NULL')
        waiting = await conn.fetchval(f'SELECT sum("rows") FROM {s}."gold_link_unmatched"'
                                      " WHERE table_name = 'customer'")
        # 4. A window deleting 100 accounts: the rows linked to them, in all four targets
        # (the history's orders, lines and invoices included), look their account up again.
        await conn.execute(f'UPDATE {s}."silver_crm_account" SET "_deleted" = true,'
                           " \"_window\" = 'gone' WHERE \"crm_id\" = ANY($1::text[])",
                           [f"CRM-{c:08d}" for c in range(1, 101)])
        moves = plan.gold.moves
        assert moves is not None
        runs = []
        for _ in range(2):
            transaction = conn.transaction()
            await transaction.start()
            started = time.perf_counter()
            moved = await moves.moved(conn, division, "gone")
            await account_sync.run(conn, division, "gone")
            await moves.relink(conn, moved)
            runs.append(time.perf_counter() - started)
            await transaction.rollback()
    return LinkFigures(rows_arrive, rows_plain, accounts_sync, accounts_all - accounts_sync,
                       stale, analyzed, linked, waiting, min(runs))


# -- 3. the ILIKE form ----------------------------------------------------------------------------

ILIKE_CHUNK = 25
SAMPLE = ('CREATE TEMP TABLE "bench_sample" AS SELECT "account_number" FROM {s}."gold_account"'
          ' WHERE "account_id" = ANY($1::text[])')
ILIKE = ('SELECT count(*) FROM "bench_sample" AS a JOIN {s}."gold_customer" AS t'
         " ON t.\"account_number\" ILIKE '%' || trim(a.\"account_number\") || '%'")
INDEXED = ('SELECT count(*) FROM "bench_sample" AS a JOIN {s}."gold_customer" AS t'
           ' ON trim(lower(t."account_number")) = trim(lower(a."account_number"))')


async def ilike(pool: asyncpg.Pool, plan: Plan, sizes: Sizes, budget_s: float
                ) -> tuple[int, float, bool, int, float]:
    """The ILIKE form on the sample, in chunks of keys while ``budget_s`` lasts, and the
    indexed form on the whole sample: (keys done, their seconds, cut short, matches, indexed
    seconds)."""
    s = quote(plan.schema)
    step = sizes.accounts // sizes.sample
    ids = [f"CRM-{c:08d}" for c in range(step, sizes.accounts + 1, step)][: sizes.sample]
    done, spent, cut, found = 0, 0.0, False, 0
    async with pool.acquire() as conn:
        for start in range(0, len(ids), ILIKE_CHUNK):
            chunk = ids[start:start + ILIKE_CHUNK]
            remaining = budget_s - spent
            if remaining <= 1:
                cut = True
                break
            await conn.execute(SAMPLE.format(s=s), chunk)
            try:
                async with conn.transaction():
                    await conn.execute(
                        f"SET LOCAL statement_timeout = {int(remaining * 1000)}")
                    started = time.perf_counter()
                    found += await conn.fetchval(ILIKE.format(s=s))
                    spent += time.perf_counter() - started
                    done += len(chunk)
            except asyncpg.QueryCanceledError:
                cut = True  # the chunk cut short counts neither its keys nor its time
            await conn.execute('DROP TABLE "bench_sample"')
            if cut:
                break
        await conn.execute(SAMPLE.format(s=s), ids)
        await conn.execute('ANALYZE "bench_sample"')
        fast = await timed(lambda: conn.fetchval(INDEXED.format(s=s)))
        await conn.execute('DROP TABLE "bench_sample"')
    return done, spent, cut, found, fast


# -- report -------------------------------------------------------------------------------------

def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"


def markdown(rows: list[Row], header: list[str]) -> str:
    lines = [*header, "", "| measure | data | seconds | target | note |",
             "|---|---|---:|---|---|"]
    lines += [f"| {r.measure} | {r.data} | {seconds(r.seconds)} | {r.target} | {r.note} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def urls(stack: contextlib.ExitStack) -> tuple[str, str]:
    """REDIS_URL/DATABASE_URL, or embedded servers started (or reused) as the CLI does."""
    redis_url, database_url = os.environ.get("REDIS_URL"), os.environ.get("DATABASE_URL")
    if redis_url and database_url:
        return redis_url, database_url
    from assay.services import Services, default_data_dir

    started = stack.enter_context(Services(default_data_dir()))
    return started.redis_url, started.database_url


def spread(values: list[float]) -> str:
    """``median (min–max)`` in seconds; a single value alone."""
    middle = f"{statistics.median(values):.3f}"
    if len(values) == 1:
        return f"{middle} s"
    return f"{middle} s ({min(values):.3f}–{max(values):.3f})"


def curve_report(points: list[Point], window_lines: int, header: list[str]) -> str:
    first = points[0].whole
    counts = sorted({w.lines for p in points for w in p.windows})
    lines = [*header, "",
             f"{len(points[0].windows)} windows of {window_lines:,} lines per history size"
             f" (lines applied, counted in Gold: {', '.join(f'{n:,}' for n in counts)}),"
             " each applied through the Gold consumer (window completion → KPIs updated);"
             " the parts are the statement times of the apply. Medians, min–max of the"
             " whole apply in brackets; × the first is the ratio of the medians; every"
             " window's figures are in `gold-curve.json`.", "",
             "| history | whole apply | × the first | sync | linkage (4 targets) | KPIs"
             " | other | history built in |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {p.lines:,} lines | {spread([w.whole for w in p.windows])} |"
              f" {p.whole / first:.2f} |"
              f" {p.parts.get('sync', 0):.3f} s | {p.parts.get('link', 0):.3f} s |"
              f" {p.parts.get('kpi', 0):.3f} s | {p.parts.get('other', 0):.3f} s |"
              f" {'reused' if p.build is None else f'{p.build:,.0f} s'} |" for p in points]
    return "\n".join(lines) + "\n"


def plot(points: list[Point], window_lines: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [p.lines for p in points]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    whole = [p.whole for p in points]
    ax.errorbar(x, whole, yerr=[[m - min(w.whole for w in p.windows) for m, p in
                                 zip(whole, points, strict=True)],
                                [max(w.whole for w in p.windows) - m for m, p in
                                 zip(whole, points, strict=True)]],
                marker="o", capsize=3, label="whole apply (median, min–max)")
    for part, label in (("sync", "sync"), ("link", "linkage"), ("kpi", "KPIs")):
        ax.plot(x, [p.parts.get(part, 0) for p in points], marker=".", label=label)
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{n / 1e6:g}M" for n in x])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("history (order lines)")
    ax.set_ylabel("seconds")
    ax.set_title(f"Gold: a {window_lines:,}-line window over a growing history\n{title}",
                 fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def main(redis_url: str, database_url: str, args: argparse.Namespace) -> None:
    logs.configure(level="WARNING", json=False)
    sizes = Sizes(max(args.lines), args.window_lines, args.accounts, args.window_keys,
                  args.sample)
    tag = args.reuse or f"bench_gold_{uuid.uuid4().hex[:8]}"
    plan = rebind(build_plan(load_config(ROOT / "config")), tag)
    s = quote(plan.schema)
    timer = StatementTimer()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2, init=timer.attach,
                                     command_timeout=3600)
    client = await connect(redis_url)
    load_before = os.getloadavg()
    version = code_version()  # the code measured, not the checkout's state at the end
    started = time.perf_counter()
    rows: list[Row] = []
    keep = args.keep or bool(args.reuse)
    try:
        async with pool.acquire() as conn:
            if args.reuse and not await conn.fetchval(
                    "SELECT to_regnamespace($1) IS NOT NULL", tag):
                raise SystemExit(f"no schema {tag} to reuse")
            await migrate(conn, plan.schema, plan.shapes(), plan.views())
            settings = dict(await conn.fetch(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name IN"
                " ('server_version', 'shared_buffers', 'work_mem', 'autovacuum')"))
        server = (f"PostgreSQL {settings['server_version']} (shared_buffers"
                  f" {settings['shared_buffers']}, work_mem {settings['work_mem']},"
                  f" autovacuum {settings['autovacuum']})")
        ctx = Context(plan, client, pool, Keys(tag))
        points = await curve(ctx, timer, args.lines, args.window_lines, args.windows,
                             args.verbose)
        load_after = os.getloadavg()
        command = shlex.join(["python", "-m", "bench.gold", *sys.argv[1:]])
        header = [
            "# Gold: the cost of a window as the history grows", "",
            f"`{command}` on {platform.platform()}, {server},"
            f" {os.cpu_count()} cores, load average before"
            f" {tuple(round(x, 2) for x in load_before)}, after"
            f" {tuple(round(x, 2) for x in load_after)}, {time.strftime('%Y-%m-%d')},"
            f" commit {version['commit']}."
            " History built with set-based SQL (Silver) and the production upserts over"
            " row ranges (Gold), then VACUUM ANALYZE and a full KPI recompute.",
        ]
        text = curve_report(points, args.window_lines, header)
        print(text)
        CURVE.write_text(text)
        CURVE.with_suffix(".json").write_text(json.dumps(
            {"window_lines": args.window_lines, "windows": args.windows,
             "load_before": load_before, "load_after": load_after, "server": server,
             "command": command, "date": time.strftime("%Y-%m-%d"), **version,
             "points": [p.stored() for p in points]}, indent=1))
        plot(points, args.window_lines, CURVE.with_suffix(".png"),
             f"{server.split(' (')[0]}, {os.cpu_count()} cores, load"
             f" {load_before[0]:.1f}→{load_after[0]:.1f}, {args.windows} windows per size")
        if keep:
            print(f"history kept in schema {tag}: --reuse {tag} measures it again;"
                  f' DROP SCHEMA "{tag}" CASCADE when done', file=sys.stderr)
        if args.no_linkage or keep:
            return
        for p in points:
            rows.append(Row("**window completion → KPIs updated** (Gold consumer, whole"
                            " apply)", f"{args.window_lines:,}-line window over"
                            f" {p.lines:,}", p.whole, "< 2 s",
                            "met" if p.whole < 2 else "**missed**"))
        link = await linkage(pool, plan, sizes)
        pair = f"{sizes.accounts:,} accounts × {sizes.accounts:,} customers"
        worst = max(link.rows_arrive, link.accounts_arrive)
        rows.append(Row("**linkage, ERP rows arrive**: a window of every customer, accounts"
                        " known (sync with lookups + linkage)", pair, link.rows_arrive,
                        "< 10 s", "met" if link.rows_arrive < 10 else "**missed**"))
        rows.append(Row("  the same sync without the account lookups", pair,
                        link.rows_arrive_plain, "",
                        f"lookups ≈ {link.rows_arrive - link.rows_arrive_plain:,.1f} s"))
        rows.append(Row("**linkage, accounts arrive**: a window of every account, customers"
                        " waiting (the linkage after the accounts' sync)", pair,
                        link.accounts_arrive, "< 10 s",
                        ("met" if link.accounts_arrive < 10 else "**missed**")
                        + f"; the sync before it {link.accounts_sync:,.1f} s"))
        window = (f"{sizes.window_keys:,} new accounts + {sizes.window_keys:,} new customers"
                  f" over {sizes.accounts:,}")
        rows.append(Row("per-window sync + linkage, statistics from before the window", window,
                        link.window_stale, "< 10 s"))
        rows.append(Row("per-window sync + linkage, after ANALYZE", window,
                        link.window_analyzed, "< 10 s",
                        f"{link.linked:,} linked, {link.waiting:,} waiting"))
        rows.append(Row("a window deleting 100 accounts: their rows in the four targets look"
                        " their account up again", f"over {pair} + the history's ERP rows",
                        link.deleted))
        done, spent, cut, found, fast = await ilike(pool, plan, sizes, args.timeout)
        per_key = spent / max(done, 1)
        rows.append(Row("ILIKE form, `t.key ILIKE '%' \\|\\| trim(a.key) \\|\\| '%'`",
                        f"{done} keys × {sizes.accounts:,} customers", spent, "",
                        f"{found} matches" + (f", the rest of the {sizes.sample} past the"
                                              f" {args.timeout:g} s budget" if cut else "")))
        rows.append(Row("ILIKE form extrapolated to every key", f"{sizes.accounts:,} keys",
                        per_key * sizes.accounts, "",
                        f"≈ {per_key * sizes.accounts / 3600:,.1f} h"))
        rows.append(Row("normalised indexed form, same sample",
                        f"{sizes.sample} keys × {sizes.accounts:,} customers", fast))
        rows.append(Row("normalised indexed form, every key (the slowest linkage above)",
                        f"{sizes.accounts:,} keys", worst, "",
                        f"ILIKE ≈ {per_key * sizes.accounts / worst:,.0f}× slower"))
    finally:
        if not keep:
            await pool.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
        await pool.close()
        async for key in client.scan_iter(match=f"{tag}:*", count=1000):
            await client.delete(key)
        await client.aclose()
    header = [
        "# Gold at scale",
        "",
        f"`python -m bench.gold` on {platform.platform()}, {server},"
        f" {os.cpu_count()} cores"
        f" (`os.cpu_count()`), load average before {tuple(round(x, 2) for x in load_before)},"
        f" after {tuple(round(x, 2) for x in os.getloadavg())}, total"
        f" {time.perf_counter() - started:,.0f} s, {time.strftime('%Y-%m-%d')}.",
    ]
    text = markdown(rows, header)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[1_000_000],
                        help="history sizes in order lines, e.g. 1000000 4000000 16000000")
    parser.add_argument("--window-lines", type=int, default=10_000)
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--window-keys", type=int, default=50_000)
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds the ILIKE form may run in all")
    parser.add_argument("--no-linkage", action="store_true",
                        help="only the curve, not the 1M-account linkage and ILIKE parts")
    parser.add_argument("--windows", type=int, default=3,
                        help="windows measured per history size (median and min–max)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the history's schema for --reuse (the curve only)")
    parser.add_argument("--reuse", metavar="SCHEMA",
                        help="measure a kept history again, grown to larger --lines if asked"
                             " (the curve only; the schema is kept)")
    parser.add_argument("--verbose", action="store_true", help="print the slowest statements")
    args = parser.parse_args()
    if not 1 <= args.windows <= 12:
        parser.error("--windows is 1 to 12 (one ship month of 2025 each)")
    with contextlib.ExitStack() as stack:
        redis_url, database_url = urls(stack)
        asyncio.run(main(redis_url, database_url, args))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        cli()
