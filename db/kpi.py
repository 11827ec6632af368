"""KPI SQL: shipped quantity and weight against annual and prior-year goals.

For one division, facts are summed once by the KPI's dimensions and the number of each
configured period (quarter, month) of the period date; year and period rows are rolled
up from those sums, and goals are matched on the same dimensions. The
prior year is the same dimensions with ``year - 1``. Recomputing deletes the division's
rows and inserts them again in one transaction, so it is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from assay.contracts.gold import Kpi
from assay.db.ident import qualified, quote
from assay.db.schema import TableShape

MEASURES = {
    "shipped_qty": "numeric",
    "shipped_weight": "numeric",
    "annual_goal": "numeric",
    "period_goal": "numeric",
    "prior_year_goal": "numeric",
    "prior_year_shipped": "numeric",
    "attainment_pct": "numeric",
    "prior_year_attainment_pct": "numeric",
}
PERIODS = {"quarter": ("extract(quarter FROM {d})::int", "'Q' || {n}", 4),
           "month": ("extract(month FROM {d})::int", "'M' || lpad({n}::text, 2, '0')", 12)}
"""Period → (its number from a UTC timestamp, its label from that number, parts of a year)."""


def ref(reference: str) -> str:
    """``table.column`` as a quoted SQL column reference (tables are aliased by name)."""
    table, _, column = reference.partition(".")
    return f"{quote(table)}.{quote(column)}"


def kpi_shape(name: str, kpi: Kpi, dimension_types: dict[str, str]) -> TableShape:
    columns = {"division": "text", "period": "text",
               **{d: dimension_types[d] for d in kpi.dimensions}, **MEASURES}
    return TableShape(f"gold_kpi_{name}", columns, ("division", "period", *kpi.dimensions))


@dataclass(frozen=True)
class KpiSql:
    """The statements recomputing one KPI for one division."""

    delete: str
    insert: str

    @classmethod
    def build(cls, schema: str, name: str, kpi: Kpi) -> KpiSql:
        target = qualified(schema, f"gold_kpi_{name}")
        dims = list(kpi.dimensions)
        others = [d for d in dims if d != kpi.year]
        listed = ", ".join(quote(d) for d in dims)
        source = f"{qualified(schema, f'gold_{kpi.facts}')} AS {quote(kpi.facts)}"
        for join in kpi.joins:
            on = " AND ".join(f"{quote(join.table)}.{quote(c)} = {ref(r)}"
                              for c, r in join.on.items())
            source += f" JOIN {qualified(schema, f'gold_{join.table}')} AS {quote(join.table)}"
            source += f" ON {on}"
        qty = f"{quote(kpi.facts)}.{quote(kpi.quantity)}"
        weight = f"sum({qty} * {ref(kpi.weight)})" if kpi.weight else "NULL::numeric"
        at = f"({ref(kpi.period_date or '')} AT TIME ZONE 'UTC')"
        numbers = {p: f"_{p}" for p in kpi.periods}
        # One pass over the facts: sums by the dimensions and the number of each period.
        # Facts that no KPI row can hold (a null dimension) are left out; a null period
        # date leaves a fact out of the period rows only.
        facts = (
            "SELECT " + ", ".join(f"{ref(r)} AS {quote(d)}" for d, r in kpi.dimensions.items())
            + "".join(f", {PERIODS[p][0].format(d=at)} AS {quote(n)}"
                      for p, n in numbers.items())
            + f", sum({qty}) AS qty, {weight} AS weight"
            f" FROM {source} WHERE {quote(kpi.facts)}.\"_division\" = $1"
            + "".join(f" AND {ref(r)} IS NOT NULL" for r in kpi.dimensions.values())
            + " GROUP BY " + ", ".join(str(i + 1) for i in range(len(dims) + len(numbers)))
        )
        rolled = [f"SELECT {listed}, 'year' AS period, 1 AS parts, sum(qty) AS qty,"
                  f" sum(weight) AS weight FROM f GROUP BY {listed}"]
        for period, number in numbers.items():
            _, label, parts = PERIODS[period]
            rolled.append(
                f"SELECT {listed}, {label.format(n=quote(number))}, {parts}, sum(qty),"
                f" sum(weight) FROM f WHERE {quote(number)} IS NOT NULL"
                f" GROUP BY {listed}, {quote(number)}")
        goal_table = quote(kpi.goals.table)
        goals = (
            "SELECT " + ", ".join(f"{goal_table}.{quote(c)} AS {quote(d)}"
                                  for d, c in kpi.goals.match.items())
            + f", sum({goal_table}.{quote(kpi.goals.value)})::numeric AS goal"
            f" FROM {qualified(schema, f'gold_{kpi.goals.table}')} AS {goal_table}"
            f" WHERE {goal_table}.{quote(kpi.goals.division)} IN ($1, $2)"
            + "".join(f" AND {goal_table}.{quote(c)} IS NOT NULL"
                      for c in kpi.goals.match.values())
            + " GROUP BY " + ", ".join(str(i + 1) for i in range(len(kpi.goals.match)))
        )
        on = " AND ".join(f"r.{quote(d)} = g.{quote(d)}" for d in dims)
        # Annual rows also show goals without shipments; period rows follow the facts.
        merged = (
            "SELECT " + ", ".join(f"coalesce(r.{quote(d)}, g.{quote(d)}) AS {quote(d)}"
                                  for d in dims)
            + ", 'year' AS period, 1 AS parts, coalesce(r.qty, 0) AS qty,"
            " coalesce(r.weight, 0) AS weight, g.goal"
            f" FROM (SELECT * FROM r WHERE period = 'year') AS r FULL JOIN g ON {on}"
            " UNION ALL SELECT " + ", ".join(f"r.{quote(d)}" for d in dims)
            + ", r.period, r.parts, r.qty, coalesce(r.weight, 0), g.goal"
            f" FROM r LEFT JOIN g ON {on} WHERE r.period <> 'year'"
        )
        prior = " AND ".join(
            [f"p.{quote(kpi.year)} = k.{quote(kpi.year)} - 1", "p.period = k.period"]
            + [f"p.{quote(d)} = k.{quote(d)}" for d in others])
        # The prior year's goal comes from the goals, also for a period without shipments.
        prior_goal = " AND ".join(
            [f"pg.{quote(kpi.year)} = k.{quote(kpi.year)} - 1"]
            + [f"pg.{quote(d)} = k.{quote(d)}" for d in others])
        columns = ", ".join(["division", "period", *(quote(d) for d in dims), *MEASURES])
        insert = (
            f"INSERT INTO {target} ({columns})"
            f" WITH f AS ({facts}), r AS ({' UNION ALL '.join(rolled)}), g AS ({goals}),"
            f" k AS ({merged})"
            " SELECT $1, k.period, " + ", ".join(f"k.{quote(d)}" for d in dims)
            + ", k.qty, k.weight, k.goal, round(k.goal / k.parts, 2), pg.goal,"
            " coalesce(p.qty, 0), round(100 * k.qty / nullif(k.goal / k.parts, 0), 1),"
            " round(100 * coalesce(p.qty, 0) / nullif(pg.goal / k.parts, 0), 1)"
            f" FROM k LEFT JOIN k AS p ON {prior} LEFT JOIN g AS pg ON {prior_goal}"
        )
        return cls(f"DELETE FROM {target} WHERE division = $1", insert)

    async def run(self, conn: asyncpg.Connection, division: str, division_name: str) -> None:
        await conn.execute(self.delete, division)
        await conn.execute(self.insert, division, division_name)
