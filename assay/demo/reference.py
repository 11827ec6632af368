"""The demo's final KPI table recomputed independently, straight from the raw AdventureWorks files.

Plain Python over the CSVs, sharing no code with the pipeline nor with the simulator's routing,
so that the Gold table the demo builds can be checked against it. One row per division
(territory group name), product category and ship year (year of the order's ShipDate) with
shipments:

- ``shipped_qty``: the sum of OrderQty.
- ``shipped_tonnes``: the sum of OrderQty × the product's weight in tonnes (LB × 0.45359237 /
  1000, G / 1,000,000; a product without a weight weighs 0), a Decimal rounded half up to 3
  decimals.
- ``annual_goal``: goal_qty by the goal rule of ``assay.demo.simulator`` (written down there),
  recomputed here: quota(d, Y) × shipped_qty(d, c, Y-1) / revenue(d, Y-1), with all years'
  quantity and revenue when the division shipped nothing in Y-1, rounded half up. None for a
  year the simulator sends no goal for (outside the years of the orders).
- ``prior_year_shipped``: shipped_qty of the same division and category in year-1, 0 if none.
- ``attainment_pct``: shipped_qty / annual_goal × 100 as a Decimal rounded half up to 1 decimal;
  None when the goal is 0 or missing.

Rows are sorted by division, category and year. ``python -m assay.demo.reference [DIR]`` prints
them.
"""

from __future__ import annotations

import csv
import gzip
import sys
from collections import defaultdict
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from assay.demo.simulator import DEFAULT_DATA_DIR

TONNES_PER_UNIT = {"LB": Decimal("0.45359237") / 1000, "G": Decimal(1) / 1_000_000}

Key = tuple[str, str, int]
"""(division name, category name, year)."""


def _rows(data_dir: Path, name: str, delimiter: str = "\t") -> Iterator[list[str]]:
    """Fields of each row of ``name.csv.gz`` (or ``name.csv``), header included if any."""
    path = data_dir / f"{name}.csv.gz"
    if path.exists():
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            yield from csv.reader(f, delimiter=delimiter)
    else:
        with (data_dir / f"{name}.csv").open(encoding="utf-8", newline="") as f:
            yield from csv.reader(f, delimiter=delimiter)


class Facts:
    """What the KPI table needs, summed from the raw files in one pass each."""

    def __init__(self, data_dir: Path) -> None:
        group = {r[0]: r[3] for r in _rows(data_dir, "SalesTerritory")}
        category_name = {r[0]: r[1] for r in _rows(data_dir, "ProductCategory")}
        subcategory = {r[0]: category_name[r[1]] for r in _rows(data_dir, "ProductSubcategory")}
        category: dict[str, str | None] = {}
        tonnes: dict[str, Decimal] = {}
        for p in _rows(data_dir, "Product"):
            product, unit, weight, sub = p[0], p[12].strip(), p[13], p[18]
            category[product] = subcategory[sub] if sub else None
            tonnes[product] = Decimal(weight) * TONNES_PER_UNIT[unit] if weight else Decimal(0)

        headers = _rows(data_dir, "SalesOrderHeader")
        column = {name.strip(): i for i, name in enumerate(next(headers))}
        order: dict[str, tuple[str, int | None]] = {}
        order_years: set[int] = set()
        for h in headers:
            ship = h[column["ShipDate"]]
            order[h[column["SalesOrderID"]]] = (
                group[h[column["TerritoryID"]]], int(ship[:4]) if ship else None)
            order_years.add(int(h[column["OrderDate"]][:4]))
        self.goal_years = range(min(order_years), max(order_years) + 1)

        self.qty: dict[Key, int] = defaultdict(int)
        self.tonnes: dict[Key, Decimal] = defaultdict(Decimal)
        self.revenue: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
        for line in _rows(data_dir, "SalesOrderDetail", ","):
            division, year = order[line[0]]
            cat = category[line[4]]
            if year is None or cat is None:
                continue
            qty = int(line[3])
            self.qty[(division, cat, year)] += qty
            self.tonnes[(division, cat, year)] += qty * tonnes[line[4]]
            self.revenue[(division, year)] += Decimal(line[8])

        self.quota = _quotas(data_dir, group)
        self.divisions = sorted(set(group.values()))
        self.categories = sorted(category_name.values())


def _quotas(data_dir: Path, group: dict[str, str]) -> dict[tuple[str, int], Decimal]:
    """Quota per division and year: each quarter's quota goes to the territory then held."""
    history = list(_rows(data_dir, "SalesTerritoryHistory"))
    home = {r[0]: r[1] for r in _rows(data_dir, "SalesPerson")}
    quota: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
    for person, date, amount, *_ in _rows(data_dir, "SalesPersonQuotaHistory"):
        territory = home.get(person, "")
        for h in history:
            if h[0] == person and h[2] <= date and (h[3] == "" or date <= h[3]):
                territory = h[1]
                break
        if territory:
            quota[(group[territory], int(date[:4]))] += Decimal(amount)
    return quota


def goals(data_dir: Path = DEFAULT_DATA_DIR, facts: Facts | None = None) -> dict[Key, int]:
    """goal_qty per (division name, category, year), recomputed by the documented rule."""
    f = facts or Facts(data_dir)
    result: dict[Key, int] = {}
    for division in f.divisions:
        for year in f.goal_years:
            prior = f.revenue.get((division, year - 1), Decimal(0))
            base_years = [year - 1] if prior else sorted(
                {y for d, y in f.revenue if d == division})
            revenue = sum((f.revenue.get((division, y), Decimal(0)) for y in base_years),
                          Decimal(0))
            quota = f.quota.get((division, year), Decimal(0))
            for cat in f.categories:
                qty = sum(f.qty.get((division, cat, y), 0) for y in base_years)
                goal = quota * qty / revenue if revenue else Decimal(0)
                result[(division, cat, year)] = int(goal.to_integral_value(ROUND_HALF_UP))
    return result


def kpis(data_dir: Path = DEFAULT_DATA_DIR) -> list[dict[str, Any]]:
    """The KPI rows, sorted by division, category and year."""
    facts = Facts(data_dir)
    goal = goals(data_dir, facts)
    rows = []
    for key in sorted(facts.qty):
        division, cat, year = key
        shipped = facts.qty[key]
        annual_goal = goal.get(key)
        rows.append({
            "division": division, "category": cat, "year": year,
            "shipped_qty": shipped,
            "shipped_tonnes": facts.tonnes[key].quantize(Decimal("0.001"), ROUND_HALF_UP),
            "annual_goal": annual_goal,
            "prior_year_shipped": facts.qty.get((division, cat, year - 1), 0),
            "attainment_pct": (Decimal(shipped * 100) / annual_goal).quantize(
                Decimal("0.1"), ROUND_HALF_UP) if annual_goal else None,
        })
    return rows


def main(argv: list[str]) -> None:
    rows = kpis(Path(argv[0]) if argv else DEFAULT_DATA_DIR)
    names = list(rows[0]) if rows else []
    print("\t".join(names))
    for row in rows:
        print("\t".join("" if row[n] is None else str(row[n]) for n in names))


if __name__ == "__main__":
    main(sys.argv[1:])
