"""Gold SQL: table sync from Silver, CRM↔ERP linkage on normalised keys, KPI recomputation.

Every statement is built once from config with quoted identifiers; values are bound.
Account keys are compared as ``trim(lower(key))`` on both sides, with functional
indexes on exactly that expression, so linking a window's keys is an index lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from db.ident import qualified, quote
from db.schema import TableShape

GOLD_META = {"_division": "text", "_window": "text"}


def normalised(alias: str, column: str) -> str:
    """The normalised account key expression, identical in indexes and queries."""
    return f"trim(lower({quote(alias)}.{quote(column)}))"


def gold_shape(name: str, columns: dict[str, str], key: Sequence[str],
               indexes: Sequence[Sequence[str]], link_column: str | None,
               account_key: str | None) -> TableShape:
    """A Gold table: mapped columns, optional link column, and its indexes."""
    shape_columns = {**columns, **GOLD_META}
    if link_column:
        shape_columns[link_column] = "text"
    index_sql = ['("_division", "_window")']
    index_sql += ["(" + ", ".join(quote(c) for c in index) + ")" for index in indexes]
    if account_key:
        index_sql.append(f"((trim(lower({quote(account_key)}))))")
    return TableShape(f"gold_{name}", shape_columns, tuple(key), not_null=tuple(key),
                      indexes=tuple(index_sql))


@dataclass(frozen=True)
class TableSync:
    """Upserts and deletes of one Gold table for the rows one window changed in Silver."""

    upsert: str
    delete: str

    @classmethod
    def build(cls, schema: str, gold: str, silver: str, columns: dict[str, str],
              key: Sequence[str]) -> TableSync:
        target, source = qualified(schema, f"gold_{gold}"), qualified(schema, f"silver_{silver}")
        names = [*columns, "_division", "_window"]
        selected = [quote(c) for c in columns.values()] + ['"_division"', '"_window"']
        data = [c for c in names if c not in key]
        keys = ", ".join(quote(c) for c in key)
        upsert = (
            f"INSERT INTO {target} AS g ({', '.join(quote(c) for c in names)})"
            f" SELECT {', '.join(selected)} FROM {source}"
            ' WHERE "_division" = $1 AND "_window" = $2 AND NOT "_deleted"'
            f" ORDER BY {', '.join(quote(columns[k]) for k in key)}"
            f" ON CONFLICT ({keys}) DO UPDATE SET "
            + ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in data)
            + " WHERE (" + ", ".join(f"g.{quote(c)}" for c in data) + ") IS DISTINCT FROM ("
            + ", ".join(f"EXCLUDED.{quote(c)}" for c in data) + ")"
        )
        match = " AND ".join(f"g.{quote(k)} = s.{quote(columns[k])}" for k in key)
        delete = (
            f"DELETE FROM {target} AS g USING {source} AS s"
            f' WHERE s."_division" = $1 AND s."_window" = $2 AND s."_deleted" AND {match}'
        )
        return cls(upsert, delete)

    async def run(self, conn: asyncpg.Connection, division: str, window: str) -> None:
        await conn.execute(self.upsert, division, window)
        await conn.execute(self.delete, division, window)


UNMATCHED = TableShape(
    "gold_link_unmatched",
    {"division": "text", "window": "text", "table_name": "text", "account_key": "text",
     "rows": "bigint"},
    ("division", "window", "table_name", "account_key"),
    not_null=("division", "window", "table_name", "account_key"),
    indexes=('((trim(lower("account_key"))))',),
)
"""Keys no account matched yet, indexed on trim(lower()) for a window's accounts to clear."""


@dataclass(frozen=True)
class LinkTarget:
    """Statements linking one ERP table's rows to CRM accounts."""

    table: str
    link_window: str
    relink: str
    unmatched: str
    resolved: str

    @classmethod
    def build(cls, schema: str, accounts: str, account_id: str, account_key: str,
              table: str, key: str, link: str) -> LinkTarget:
        source, target = qualified(schema, f"gold_{accounts}"), qualified(schema, f"gold_{table}")
        t_key, a_key = normalised("t", key), normalised("a", account_key)
        set_link = (f"UPDATE {target} AS t SET {quote(link)} = a.{quote(account_id)}"
                    f" FROM {source} AS a")
        differs = f"t.{quote(link)} IS DISTINCT FROM a.{quote(account_id)}"
        unmatched_table = qualified(schema, "gold_link_unmatched")
        return cls(
            table=table,
            link_window=(f'{set_link} WHERE t."_division" = $1 AND t."_window" = $2'
                         f" AND {t_key} = {a_key} AND {differs}"),
            relink=(f'{set_link} WHERE a."_division" = $1 AND a."_window" = $2'
                    f" AND {t_key} = {a_key} AND {differs}"),
            unmatched=(
                f"INSERT INTO {unmatched_table} (division, \"window\", table_name, account_key,"
                f' "rows") SELECT $1, $2, $3, coalesce({quote(key)}, \'\'), count(*)'
                f' FROM {target} WHERE "_division" = $1 AND "_window" = $2'
                f" AND {quote(link)} IS NULL GROUP BY 4"),
            resolved=(
                f"DELETE FROM {unmatched_table} AS u USING {source} AS a"
                f' WHERE a."_division" = $1 AND a."_window" = $2 AND u.table_name = $3'
                f" AND {normalised('u', 'account_key')} = {a_key}"),
        )

    async def run(self, conn: asyncpg.Connection, schema: str, division: str, window: str
                  ) -> int:
        """Link the window's rows and older rows of accounts the window brought; count misses."""
        await conn.execute(self.link_window, division, window)
        await conn.execute(self.relink, division, window)
        await conn.execute(
            f"DELETE FROM {qualified(schema, 'gold_link_unmatched')}"
            ' WHERE division = $1 AND "window" = $2 AND table_name = $3',
            division, window, self.table)
        await conn.execute(self.unmatched, division, window, self.table)
        await conn.execute(self.resolved, division, window, self.table)
        missing = await conn.fetchval(
            f"SELECT coalesce(sum(\"rows\"), 0) FROM {qualified(schema, 'gold_link_unmatched')}"
            ' WHERE division = $1 AND "window" = $2 AND table_name = $3',
            division, window, self.table)
        return int(missing)
