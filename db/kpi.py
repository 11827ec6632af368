"""KPI SQL: shipped quantity and weight against annual and prior-year goals.

A KPI row is a group — (division, dimensions, year) — and a period of it (the year, each
configured quarter or month). Gold keeps the facts summed per group and period number in
``gold_kpi_<name>_sums`` (count, quantity, weight), maintained by deltas in the window's
transaction: before the window's sync the facts it reaches (its own rows, and the facts
joined to the rows it changed in any joined table) are subtracted where they were, after
the sync they are added where they are now. Only the groups a delta or a changed goal
touched, and the year after each (its ``prior_year_*`` measures), are rendered again from
those sums and the goals, so a window costs what it changed, not the history.

The full recompute (``assay gold rebuild``) sums every fact in one pass and renders every
group; it is also the reference the incremental result is tested against, row for row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
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
SUMS = {"facts": "bigint", "qty_n": "bigint", "qty": "numeric", "weight": "numeric"}
"""Per group and period number: facts, facts with a quantity, their quantity, their weight."""
PERIODS = {"quarter": ("extract(quarter FROM {d})::int", "'Q' || {n}", 4),
           "month": ("extract(month FROM {d})::int", "'M' || lpad({n}::text, 2, '0')", 12)}
"""Period → (its number from a UTC timestamp, its label from that number, parts of a year)."""


@dataclass(frozen=True)
class Source:
    """Where a Gold table comes from: its Silver table and Gold key column → Silver column."""

    silver: str
    key: Mapping[str, str]


def ref(reference: str) -> str:
    """``table.column`` as a quoted SQL column reference (tables are aliased by name)."""
    table, _, column = reference.partition(".")
    return f"{quote(table)}.{quote(column)}"


def kpi_shape(name: str, kpi: Kpi, dimension_types: dict[str, str]) -> TableShape:
    columns = {"division": "text", "period": "text",
               **{d: dimension_types[d] for d in kpi.dimensions}, **MEASURES}
    return TableShape(f"gold_kpi_{name}", columns, ("division", "period", *kpi.dimensions))


def sums_shape(name: str, kpi: Kpi, dimension_types: dict[str, str]) -> TableShape:
    """The facts summed per group and period number (0: no period date)."""
    numbers = {f"_{p}": "integer" for p in kpi.periods}
    columns = {"division": "text", **{d: dimension_types[d] for d in kpi.dimensions},
               **numbers, **SUMS}
    return TableShape(f"gold_kpi_{name}_sums", columns,
                      ("division", *kpi.dimensions, *numbers))


def kpi_indexes(kpi: Kpi, keys: Mapping[str, Sequence[str]]) -> dict[str, list[list[str]]]:
    """Indexes a KPI's joins need both ways: from a fact to the rows it joins, and from a
    changed joined row back to its facts. Gold table → column lists (not its key)."""
    wanted: dict[str, list[list[str]]] = {}
    for join in kpi.joins:
        sides = [(join.table, list(join.on))]
        by_table: dict[str, list[str]] = {}
        for reference in join.on.values():
            table, _, column = reference.partition(".")
            by_table.setdefault(table, []).append(column)
        sides += list(by_table.items())
        for table, columns in sides:
            if list(keys[table])[:len(columns)] != columns and columns not in wanted.get(
                    table, []):
                wanted.setdefault(table, []).append(columns)
    return wanted


def _tag(schema: str, name: str) -> str:
    return hashlib.sha1(f"{schema}.{name}".encode()).hexdigest()[:10]


@dataclass(frozen=True)
class KpiSql:
    """The statements keeping one KPI: incremental per window, and the full recompute."""

    prepare: tuple[str, ...]
    present: str
    reach: tuple[str, ...]
    contribute: str
    reset: str
    goals: str
    merge: str
    prune: str
    clear: str
    render: str
    full_sums: tuple[str, str]
    full_delete: str
    full_insert: str

    @classmethod
    def build(cls, schema: str, name: str, kpi: Kpi, dimension_types: Mapping[str, str],
              sources: Mapping[str, Source]) -> KpiSql:
        target = qualified(schema, f"gold_kpi_{name}")
        sums = qualified(schema, f"gold_kpi_{name}_sums")
        delta = quote(f"_kpi_delta_{_tag(schema, name)}")
        reached = quote(f"_kpi_reach_{_tag(schema, name)}")
        dims = list(kpi.dimensions)
        numbers = [f"_{p}" for p in kpi.periods]
        facts_alias = quote(kpi.facts)
        qty = f"{facts_alias}.{quote(kpi.quantity)}"
        at = f"({ref(kpi.period_date or '')} AT TIME ZONE 'UTC')"
        group_cols = ["division", *dims]
        base_cols = [*group_cols, *numbers]
        listed = ", ".join(quote(c) for c in base_cols)
        joins = {j.table: j for j in kpi.joins}

        def source(only: set[str] | None = None) -> str:
            text = f"{qualified(schema, f'gold_{kpi.facts}')} AS {facts_alias}"
            for join in kpi.joins:
                if only is not None and join.table not in only:
                    continue
                on = " AND ".join(f"{quote(join.table)}.{quote(c)} = {ref(r)}"
                                  for c, r in join.on.items())
                text += (f" JOIN {qualified(schema, f'gold_{join.table}')}"
                         f" AS {quote(join.table)} ON {on}")
            return text

        def needed(table: str) -> set[str]:
            """The joined tables on the path from the facts to ``table``."""
            if table == kpi.facts:
                return set()
            found = {table}
            for reference in joins[table].on.values():
                found |= needed(reference.partition(".")[0])
            return found

        not_null = "".join(f" AND {ref(r)} IS NOT NULL" for r in kpi.dimensions.values())
        fact_key = list(sources[kpi.facts].key)
        fact_cols = ", ".join(f"{facts_alias}.{quote(c)}" for c in fact_key)

        def window_rows(table: str) -> str:
            """The facts joined to the Gold rows of ``table`` the window's Silver rows name."""
            src = sources[table]
            match = " AND ".join(f"{quote(table)}.{quote(g)} = \"_w\".{quote(s)}"
                                 for g, s in src.key.items())
            return (f"SELECT {fact_cols} FROM {source(needed(table))}"
                    f" JOIN {qualified(schema, f'silver_{src.silver}')} AS \"_w\" ON {match}"
                    ' WHERE "_w"."_division" = $1 AND "_w"."_window" = $2')

        weight = (f"coalesce(sum({qty} * {ref(kpi.weight)}), 0)" if kpi.weight else "0")
        contributions = (
            f'SELECT {facts_alias}."_division", '
            + ", ".join(ref(r) for r in kpi.dimensions.values())
            + "".join(f", coalesce({PERIODS[p][0].format(d=at)}, 0)" for p in kpi.periods)
            + f", count(*), count({qty}), coalesce(sum({qty}), 0), {weight}"
            f" FROM {{source}} WHERE true{not_null}"
            " GROUP BY " + ", ".join(str(i + 1) for i in range(len(base_cols))))
        # Which tables the window changed, then per such table the facts it reaches (each
        # statement planned on its own estimates), then their contributions.
        tables = [kpi.facts, *joins]
        present = "SELECT ARRAY[" + ", ".join(
            f"EXISTS (SELECT 1 FROM {qualified(schema, f'silver_{sources[t].silver}')}"
            ' WHERE "_division" = $1 AND "_window" = $2)' for t in tables) + "]"
        reach = tuple(f"INSERT INTO {reached} {window_rows(t)}" for t in tables)
        contribute = (
            f"INSERT INTO {delta} ({listed}, facts, qty_n, qty, weight)"
            f" SELECT {listed}, $1::int * facts, $1::int * qty_n, $1::int * qty,"
            f" $1::int * weight FROM ("
            + contributions.format(source=source()).replace(
                " WHERE true", f" WHERE ({fact_cols}) IN (SELECT DISTINCT * FROM {reached})")
            + f") AS c ({listed}, facts, qty_n, qty, weight)")
        reset = f"DELETE FROM {reached}"
        goal_table = quote(kpi.goals.table)
        goal_src = sources[kpi.goals.table]
        goal_match = " AND ".join(f"{goal_table}.{quote(g)} = \"_w\".{quote(s)}"
                                  for g, s in goal_src.key.items())
        goals = (
            f"INSERT INTO {delta} ({listed}, facts, qty_n, qty, weight)"
            " SELECT DISTINCT d.id, "
            + ", ".join(f"{goal_table}.{quote(kpi.goals.match[d])}" for d in dims)
            + "".join(", 0" for _ in numbers) + ", 0, 0, 0, 0"
            f" FROM {qualified(schema, f'gold_{kpi.goals.table}')} AS {goal_table}"
            f" JOIN {qualified(schema, f'silver_{goal_src.silver}')} AS \"_w\" ON {goal_match}"
            " JOIN unnest($3::text[], $4::text[]) AS d(id, name)"
            f" ON {goal_table}.{quote(kpi.goals.division)} IN (d.id, d.name)"
            ' WHERE "_w"."_division" = $1 AND "_w"."_window" = $2'
            + "".join(f" AND {goal_table}.{quote(c)} IS NOT NULL"
                      for c in kpi.goals.match.values()))
        prepare = (
            f"CREATE TEMP TABLE IF NOT EXISTS {delta} ("
            + ", ".join(f"{quote(c)} {t}" for c, t in
                        {"division": "text", **{d: dimension_types[d] for d in dims},
                         **{n: "integer" for n in numbers}, **SUMS}.items())
            + ") ON COMMIT DELETE ROWS",
            f"CREATE TEMP TABLE IF NOT EXISTS {reached} ON COMMIT DELETE ROWS AS"
            f" SELECT {fact_cols} FROM {qualified(schema, f'gold_{kpi.facts}')}"
            f" AS {facts_alias} WITH NO DATA")
        conflict = ", ".join(f"{c} = s.{c} + EXCLUDED.{c}" for c in SUMS)
        merge = (
            f"INSERT INTO {sums} AS s ({listed}, facts, qty_n, qty, weight)"
            f" SELECT {listed}, sum(facts), sum(qty_n), sum(qty), sum(weight) FROM {delta}"
            f" GROUP BY {listed} HAVING sum(facts) <> 0 OR sum(qty_n) <> 0 OR sum(qty) <> 0"
            f" OR sum(weight) <> 0 ON CONFLICT ({listed}) DO UPDATE SET {conflict}")
        same = " AND ".join(f"s.{quote(c)} = d.{quote(c)}" for c in base_cols)
        prune = (f"DELETE FROM {sums} AS s USING (SELECT DISTINCT {listed} FROM {delta}) AS d"
                 f" WHERE {same} AND s.facts = 0")
        groups = ", ".join(quote(c) for c in group_cols)
        shifted = ", ".join(f"{quote(c)} + 1" if c == kpi.year else quote(c)
                            for c in group_cols)
        touched = (f"SELECT {groups} FROM {delta}"
                   f" UNION SELECT {shifted} FROM {delta}")
        same_group = " AND ".join(f"k.{quote(c)} = r.{quote(c)}" for c in group_cols)
        clear = f"DELETE FROM {target} AS k USING ({touched}) AS r WHERE {same_group}"
        render = cls._render(target, sums, kpi, touched, numbers, schema)
        full_sums = (f"DELETE FROM {sums}",
                     f"INSERT INTO {sums} ({listed}, facts, qty_n, qty, weight) "
                     + contributions.format(source=source()))
        full_delete, full_insert = cls._full(schema, target, kpi, source())
        return cls(prepare, present, reach, contribute, reset, goals, merge, prune, clear,
                   render, full_sums,
                   full_delete, full_insert)

    @staticmethod
    def _render(target: str, sums: str, kpi: Kpi, touched: str, numbers: list[str],
                schema: str) -> str:
        """KPI rows of the touched groups (and the year after each) from the sums."""
        dims = list(kpi.dimensions)
        others = [d for d in dims if d != kpi.year]
        group = ["division", *dims]
        listed = ", ".join(quote(c) for c in group)
        earlier = ", ".join(f"{quote(c)} - 1" if c == kpi.year else quote(c) for c in group)
        same = " AND ".join(f"s.{quote(c)} = q.{quote(c)}" for c in group)
        base = (f"SELECT {', '.join(f's.{quote(c)}' for c in group)}"
                + "".join(f", s.{quote(n)}" for n in numbers)
                + ", CASE WHEN s.qty_n > 0 THEN s.qty END AS qty, s.weight"
                f" FROM {sums} AS s JOIN q ON {same}")
        rolled = [f"SELECT {listed}, 'year' AS period, 1 AS parts, sum(qty) AS qty,"
                  f" sum(weight) AS weight FROM f GROUP BY {listed}"]
        for period, number in zip(kpi.periods, numbers, strict=True):
            _, label, parts = PERIODS[period]
            rolled.append(
                f"SELECT {listed}, {label.format(n=quote(number))}, {parts}, sum(qty),"
                f" sum(weight) FROM f WHERE {quote(number)} <> 0"
                f" GROUP BY {listed}, {quote(number)}")
        goal_table = quote(kpi.goals.table)
        goal_same = " AND ".join(
            ["d.id = q.division"]
            + [f"{goal_table}.{quote(kpi.goals.match[d])} = q.{quote(d)}" for d in dims])
        goals = (
            "SELECT d.id AS division, " + ", ".join(
                f"{goal_table}.{quote(kpi.goals.match[d])} AS {quote(d)}" for d in dims)
            + f", sum({goal_table}.{quote(kpi.goals.value)})::numeric AS goal"
            f" FROM {qualified(schema, f'gold_{kpi.goals.table}')} AS {goal_table}"
            " JOIN unnest($1::text[], $2::text[]) AS d(id, name)"
            f" ON {goal_table}.{quote(kpi.goals.division)} IN (d.id, d.name)"
            f" JOIN q ON {goal_same}"
            " GROUP BY " + ", ".join(str(i + 1) for i in range(len(group))))
        on = " AND ".join(f"r.{quote(c)} = g.{quote(c)}" for c in group)
        merged = (
            "SELECT " + ", ".join(f"coalesce(r.{quote(c)}, g.{quote(c)}) AS {quote(c)}"
                                  for c in group)
            + ", 'year' AS period, 1 AS parts, coalesce(r.qty, 0) AS qty,"
            " coalesce(r.weight, 0) AS weight, g.goal"
            f" FROM (SELECT * FROM r WHERE period = 'year') AS r FULL JOIN g ON {on}"
            " UNION ALL SELECT " + ", ".join(f"r.{quote(c)}" for c in group)
            + ", r.period, r.parts, r.qty, coalesce(r.weight, 0), g.goal"
            f" FROM r LEFT JOIN g ON {on} WHERE r.period <> 'year'")
        prior = " AND ".join(
            [f"p.{quote(kpi.year)} = k.{quote(kpi.year)} - 1", "p.period = k.period",
             "p.division = k.division"] + [f"p.{quote(d)} = k.{quote(d)}" for d in others])
        prior_goal = " AND ".join(
            [f"pg.{quote(kpi.year)} = k.{quote(kpi.year)} - 1", "pg.division = k.division"]
            + [f"pg.{quote(d)} = k.{quote(d)}" for d in others])
        wanted = " AND ".join(f"t.{quote(c)} = k.{quote(c)}" for c in group)
        columns = ", ".join(["division", "period", *(quote(d) for d in dims), *MEASURES])
        return (
            f"INSERT INTO {target} ({columns})"
            f" WITH t AS ({touched}), q AS (SELECT {listed} FROM t UNION SELECT {earlier}"
            f" FROM t), f AS ({base}), r AS ({' UNION ALL '.join(rolled)}), g AS ({goals}),"
            f" k AS ({merged})"
            " SELECT k.division, k.period, " + ", ".join(f"k.{quote(d)}" for d in dims)
            + ", k.qty, k.weight, k.goal, round(k.goal / k.parts, 2), pg.goal,"
            " coalesce(p.qty, 0), round(100 * k.qty / nullif(k.goal / k.parts, 0), 1),"
            " round(100 * coalesce(p.qty, 0) / nullif(pg.goal / k.parts, 0), 1)"
            f" FROM k LEFT JOIN k AS p ON {prior} LEFT JOIN g AS pg ON {prior_goal}"
            f" WHERE EXISTS (SELECT 1 FROM t WHERE {wanted})")

    @staticmethod
    def _full(schema: str, target: str, kpi: Kpi, source: str) -> tuple[str, str]:
        """One division's KPI rows in one pass over all its facts (the reference)."""
        dims = list(kpi.dimensions)
        others = [d for d in dims if d != kpi.year]
        listed = ", ".join(quote(d) for d in dims)
        qty = f"{quote(kpi.facts)}.{quote(kpi.quantity)}"
        weight = f"sum({qty} * {ref(kpi.weight)})" if kpi.weight else "NULL::numeric"
        at = f"({ref(kpi.period_date or '')} AT TIME ZONE 'UTC')"
        numbers = {p: f"_{p}" for p in kpi.periods}
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
        return f"DELETE FROM {target}", insert

    async def before(self, conn: asyncpg.Connection, division: str, window: str,
                     divisions: Mapping[str, str]) -> None:
        """Before the window's sync: subtract the facts it reaches where they were, and
        note the goal groups it changes."""
        for statement in self.prepare:
            await conn.execute(statement)
        await self._reach(conn, division, window, -1)
        await conn.execute(self.goals, division, window, list(divisions),
                           list(divisions.values()))

    async def after(self, conn: asyncpg.Connection, division: str, window: str,
                    divisions: Mapping[str, str]) -> None:
        """After the sync: add the facts where they are now, fold the delta into the sums
        and render the touched groups and the year after each again."""
        ids, names = list(divisions), list(divisions.values())
        await self._reach(conn, division, window, 1)
        await conn.execute(self.goals, division, window, ids, names)
        await conn.execute(self.merge)
        await conn.execute(self.prune)
        await conn.execute(self.clear)
        await conn.execute(self.render, ids, names)

    async def _reach(self, conn: asyncpg.Connection, division: str, window: str,
                     sign: int) -> None:
        """The facts the window reaches through each table it changed, summed with
        ``sign`` into the delta."""
        changed = await conn.fetchval(self.present, division, window)
        for statement, present in zip(self.reach, changed, strict=True):
            if present:
                await conn.execute(statement, division, window)
        await conn.execute(self.contribute, sign)
        await conn.execute(self.reset)

    async def rebuild(self, conn: asyncpg.Connection, divisions: Mapping[str, str]) -> None:
        """The full recompute: every fact summed again, every division's rows rendered
        in one pass over its facts (after a change to the KPI's config)."""
        for statement in self.full_sums:
            await conn.execute(statement)
        await conn.execute(self.full_delete)
        for division, name in divisions.items():
            await conn.execute(self.full_insert, division, name)
