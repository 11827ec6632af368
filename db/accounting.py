"""Where each row number of a table and window ended up: the ledger behind the counts.

Written in the same transaction as the effect it records, so a redelivered entry or a
producer's retry is never counted twice. A quarantined row that is later re-driven
successfully moves to ``applied``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import asyncpg

from assay.db.ident import qualified
from assay.db.insert import InsertFirst
from assay.db.schema import TableShape

SHAPE = TableShape(
    "_rows",
    {"division": "text", "window": "text", "table_name": "text", "row": "bigint",
     "outcome": "text", "layer": "text"},
    ("division", "window", "table_name", "row"),
    not_null=("division", "window", "table_name", "row", "outcome"),
)

APPLIED, QUARANTINED, DEAD = "applied", "quarantined", "dead_lettered"


async def record(conn: asyncpg.Connection, schema: str, layer: str, outcome: str,
                 rows: Sequence[tuple[str, str, str, int]]) -> None:
    """Record (division, window, table, row) outcomes; a final outcome is never downgraded.

    Division, window and table are sent once per distinct triple (a batch has one or a
    few), each row as its triple's index and its number: the ledger's cost per record is
    then one bigint and one int, not three strings."""
    if not rows:
        return
    groups: dict[tuple[str, str, str], int] = {}
    indexes = [groups.setdefault(row[:3], len(groups) + 1) for row in rows]
    numbers = [row[3] for row in rows]
    divisions, windows, tables = (list(x) for x in zip(*groups, strict=True))
    args = (indexes, numbers, divisions, windows, tables, outcome, layer)
    insert, upsert = _statements(schema)
    await _FIRST.setdefault(schema, InsertFirst()).run(
        conn, lambda: conn.execute(insert, *args),
        lambda: conn.execute(upsert, *args, QUARANTINED))


_FIRST: dict[str, InsertFirst] = {}
"""Per schema, whether the ledger's plain insert is worth trying (``db.insert``)."""


@functools.lru_cache(maxsize=64)
def _statements(schema: str) -> tuple[str, str]:
    """The ledger's plain insert and its upsert, which never downgrades a final outcome."""
    insert = (
        f"INSERT INTO {qualified(schema, '_rows')} AS r (division, \"window\", table_name,"
        ' "row", outcome, layer) SELECT g.d, g.w, g.t, u.n, $6, $7'
        " FROM unnest($1::int[], $2::bigint[]) AS u(i, n)"
        " JOIN unnest($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS g(d, w, t, i)"
        " ON g.i = u.i ORDER BY g.d, g.w, g.t, u.n")
    return insert, (f"{insert} ON CONFLICT (division, \"window\", table_name, \"row\")"
                    " DO UPDATE SET outcome = EXCLUDED.outcome, layer = EXCLUDED.layer"
                    " WHERE r.outcome = $8 AND EXCLUDED.outcome <> $8")


async def totals(conn: asyncpg.Connection, schema: str, division: str, window: str
                 ) -> dict[tuple[str, str], int]:
    """Counts per (table, outcome) for one division and window."""
    rows = await conn.fetch(
        f"SELECT table_name, outcome, count(*) AS n FROM {qualified(schema, '_rows')}"
        ' WHERE division = $1 AND "window" = $2 GROUP BY table_name, outcome',
        division, window,
    )
    return {(r["table_name"], r["outcome"]): int(r["n"]) for r in rows}
