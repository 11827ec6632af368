"""KPI SQL: shipped quantity and weight against annual and prior-year goals.

For one division, facts are summed by the KPI's dimensions (and, for period rows, by
quarter or month of the period date); goals are matched on the same dimensions. The
prior year is the same dimensions with ``year - 1``. Recomputing deletes the division's
rows and inserts them again in one transaction, so it is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from contracts.gold import Kpi
from db.ident import qualified, quote
from db.schema import TableShape

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
PERIODS = {"year": ("'year'", 1), "quarter": ("'Q' || extract(quarter FROM {d})::int", 4),
           "month": ("'M' || lpad(extract(month FROM {d})::int::text, 2, '0')", 12)}


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
    inserts: tuple[str, ...]

    @classmethod
    def build(cls, schema: str, name: str, kpi: Kpi) -> KpiSql:
        target = qualified(schema, f"gold_kpi_{name}")
        dims = list(kpi.dimensions)
        others = [d for d in dims if d != kpi.year]
        source = f"{qualified(schema, f'gold_{kpi.facts}')} AS {quote(kpi.facts)}"
        for join in kpi.joins:
            on = " AND ".join(f"{quote(join.table)}.{quote(c)} = {ref(r)}"
                              for c, r in join.on.items())
            source += f" JOIN {qualified(schema, f'gold_{join.table}')} AS {quote(join.table)}"
            source += f" ON {on}"
        qty = f"{quote(kpi.facts)}.{quote(kpi.quantity)}"
        weight = f"sum({qty} * {ref(kpi.weight)})" if kpi.weight else "NULL::numeric"
        goal_table = quote(kpi.goals.table)
        goals = (
            "SELECT " + ", ".join(f"{goal_table}.{quote(c)} AS {quote(d)}"
                                  for d, c in kpi.goals.match.items())
            + f", sum({goal_table}.{quote(kpi.goals.value)}) AS goal"
            f" FROM {qualified(schema, f'gold_{kpi.goals.table}')} AS {goal_table}"
            f" WHERE {goal_table}.{quote(kpi.goals.division)} IN ($1, $2)"
            + "".join(f" AND {goal_table}.{quote(c)} IS NOT NULL"
                      for c in kpi.goals.match.values())
            + " GROUP BY " + ", ".join(str(i + 1) for i in range(len(kpi.goals.match)))
        )
        columns = ", ".join(["division", "period", *(quote(d) for d in dims), *MEASURES])
        inserts = []
        for period in ["year", *kpi.periods]:
            expression, parts = PERIODS[period]
            # Facts that no KPI row can hold (a null dimension or period date) are left out.
            placed = [*kpi.dimensions.values()]
            if period != "year":
                at = f"({ref(kpi.period_date or '')} AT TIME ZONE 'UTC')"
                expression = expression.format(d=at)
                placed.append(kpi.period_date or "")
            facts = (
                "SELECT " + ", ".join(f"{ref(r)} AS {quote(d)}" for d, r in kpi.dimensions.items())
                + f", {expression} AS period, sum({qty}) AS qty, {weight} AS weight"
                f" FROM {source} WHERE {quote(kpi.facts)}.\"_division\" = $1"
                + "".join(f" AND {ref(r)} IS NOT NULL" for r in placed)
                + " GROUP BY " + ", ".join(str(i + 1) for i in range(len(dims) + 1))
            )
            on = " AND ".join(f"f.{quote(d)} = g.{quote(d)}" for d in dims)
            # Annual rows also show goals without shipments; period rows follow the facts.
            kind = "FULL JOIN" if period == "year" else "LEFT JOIN"
            merged = (
                "SELECT " + ", ".join(f"coalesce(f.{quote(d)}, g.{quote(d)}) AS {quote(d)}"
                                      for d in dims)
                + ", coalesce(f.period, 'year') AS period, coalesce(f.qty, 0) AS qty,"
                f" coalesce(f.weight, 0) AS weight, g.goal FROM f {kind} g ON {on}"
            )
            prior = " AND ".join(
                [f"p.{quote(kpi.year)} = k.{quote(kpi.year)} - 1", "p.period = k.period"]
                + [f"p.{quote(d)} = k.{quote(d)}" for d in others])
            # The prior year's goal comes from the goals, also for a period without shipments.
            prior_goal = " AND ".join(
                [f"pg.{quote(kpi.year)} = k.{quote(kpi.year)} - 1"]
                + [f"pg.{quote(d)} = k.{quote(d)}" for d in others])
            inserts.append(
                f"INSERT INTO {target} ({columns})"
                f" WITH f AS ({facts}), g AS ({goals}), k AS ({merged})"
                " SELECT $1, k.period, " + ", ".join(f"k.{quote(d)}" for d in dims)
                + f", k.qty, k.weight, k.goal, k.goal / {parts}, pg.goal, coalesce(p.qty, 0),"
                f" round(100 * k.qty / nullif(k.goal / {parts}, 0), 1),"
                f" round(100 * coalesce(p.qty, 0) / nullif(pg.goal / {parts}, 0), 1)"
                f" FROM k LEFT JOIN k AS p ON {prior} LEFT JOIN g AS pg ON {prior_goal}"
            )
        return cls(f"DELETE FROM {target} WHERE division = $1", tuple(inserts))

    async def run(self, conn: asyncpg.Connection, division: str, division_name: str) -> None:
        await conn.execute(self.delete, division)
        for insert in self.inserts:
            await conn.execute(insert, division, division_name)
