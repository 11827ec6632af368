"""The quarantine: rows that failed a formula or validation, with the reason, never lost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from assay.db.ident import qualified
from assay.db.schema import TableShape

SHAPE = TableShape(
    "quarantine",
    {
        "division": "text",
        "table_name": "text",
        "window": "text",
        "row": "bigint",
        "layer": "text",
        "key": "text",
        "rule": "text",
        "field": "text",
        "message": "text",
        "payload": "jsonb",
        "seen": "integer",
        "first_seen": "timestamptz",
        "last_seen": "timestamptz",
        "released_at": "timestamptz",
    },
    ("division", "table_name", "window", "row"),
    not_null=("division", "table_name", "window", "row"),
)


@dataclass(frozen=True, slots=True)
class Quarantined:
    """One quarantined row; ``payload`` is the raw record as JSON text."""

    division: str
    table: str
    window: str
    row: int
    layer: str
    key: str
    rule: str
    field: str
    message: str
    payload: str
    replay: bool = False
    """The row failed again when re-driven by ``assay replay``."""


async def add(conn: asyncpg.Connection, schema: str, rows: Sequence[Quarantined], now: float
              ) -> None:
    """Record rows in the caller's transaction; a row seen again counts up ``seen``."""
    if not rows:
        return
    await conn.executemany(
        f"INSERT INTO {qualified(schema, 'quarantine')} AS q (division, table_name, \"window\","
        ' "row", layer, key, rule, field, message, payload, seen, first_seen, last_seen)'
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, 1, to_timestamp($11),"
        " to_timestamp($11)) ON CONFLICT (division, table_name, \"window\", \"row\") DO UPDATE"
        " SET layer = EXCLUDED.layer, key = EXCLUDED.key, rule = EXCLUDED.rule,"
        " field = EXCLUDED.field, message = EXCLUDED.message, payload = EXCLUDED.payload,"
        " seen = q.seen + 1, last_seen = EXCLUDED.last_seen, released_at = NULL",
        [(r.division, r.table, r.window, r.row, r.layer, r.key, r.rule, r.field, r.message,
          r.payload, now) for r in rows],
    )


async def pending(conn: asyncpg.Connection, schema: str, *, table: str | None = None,
                  division: str | None = None, window: str | None = None,
                  rule: str | None = None, key: str | None = None) -> list[asyncpg.Record]:
    """Quarantined rows not yet re-driven successfully, oldest window first."""
    return list(await conn.fetch(
        f"SELECT division, table_name, \"window\", \"row\", rule, key, seen,"
        f" payload::text AS payload FROM {qualified(schema, 'quarantine')}"
        " WHERE released_at IS NULL"
        " AND ($1::text IS NULL OR table_name = $1) AND ($2::text IS NULL OR division = $2)"
        ' AND ($3::text IS NULL OR "window" = $3) AND ($4::text IS NULL OR rule = $4)'
        " AND ($5::text IS NULL OR key = $5)"
        ' ORDER BY division, "window", table_name, "row"', table, division, window, rule, key))


async def states(conn: asyncpg.Connection, schema: str,
                 rows: Sequence[tuple[str, str, str, int]]) -> dict[tuple[str, str, str, int],
                                                                  tuple[bool, int]]:
    """(released, seen) of quarantined rows given as (division, window, table, row)."""
    if not rows:
        return {}
    divisions, windows, tables, numbers = (list(x) for x in zip(*rows, strict=True))
    found = await conn.fetch(
        f'SELECT q.division, q."window", q.table_name, q."row", q.released_at IS NOT NULL'
        f" AS released, q.seen FROM {qualified(schema, 'quarantine')} AS q"
        " JOIN unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(d, w, t, n)"
        ' ON q.division = u.d AND q."window" = u.w AND q.table_name = u.t AND q."row" = u.n',
        divisions, windows, tables, numbers)
    return {(r["division"], r["window"], r["table_name"], r["row"]): (r["released"], r["seen"])
            for r in found}


async def release(conn: asyncpg.Connection, schema: str,
                  rows: Sequence[tuple[str, str, str, int]], now: float) -> None:
    """Mark re-driven rows (division, window, table, row) as released from quarantine."""
    if not rows:
        return
    divisions, windows, tables, numbers = (list(x) for x in zip(*rows, strict=True))
    await conn.execute(
        f"UPDATE {qualified(schema, 'quarantine')} AS q SET released_at = to_timestamp($5)"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(d, w, t, n)"
        ' WHERE q.division = u.d AND q."window" = u.w AND q.table_name = u.t AND q."row" = u.n',
        divisions, windows, tables, numbers, now)


async def counts(conn: asyncpg.Connection | asyncpg.Pool, schema: str, divisions: Sequence[str]
                 ) -> list[asyncpg.Record]:
    """Rows held now per division, table and rule, with the newest message of each."""
    if not await _exists(conn, schema):
        return []
    return list(await conn.fetch(
        "SELECT division, table_name, rule, count(*) AS rows, max(last_seen) AS newest,"
        " (array_agg(message ORDER BY last_seen DESC))[1] AS message"
        f" FROM {qualified(schema, 'quarantine')} WHERE released_at IS NULL"
        " AND division = ANY($1::text[]) GROUP BY division, table_name, rule"
        " ORDER BY division, table_name, rule", list(divisions)))


async def sample(conn: asyncpg.Connection | asyncpg.Pool, schema: str, divisions: Sequence[str],
                 *, table: str | None = None, limit: int = 50) -> list[asyncpg.Record]:
    """The newest rows held now, with their rule, field, message and raw payload."""
    if not await _exists(conn, schema):
        return []
    return list(await conn.fetch(
        'SELECT division, table_name, "window", "row", layer, key, rule, field, message,'
        " payload::text AS payload, seen, extract(epoch FROM last_seen)::float8 AS last_seen"
        f" FROM {qualified(schema, 'quarantine')} WHERE released_at IS NULL"
        " AND division = ANY($1::text[]) AND ($2::text IS NULL OR table_name = $2)"
        ' ORDER BY last_seen DESC, division, "window", table_name, "row" LIMIT $3',
        list(divisions), table, limit))


async def selected(conn: asyncpg.Connection, schema: str,
                   rows: Sequence[tuple[str, str, str, int]]) -> list[asyncpg.Record]:
    """The held rows among (division, window, table, row), in the form of ``pending``."""
    if not rows:
        return []
    divisions, windows, tables, numbers = (list(x) for x in zip(*rows, strict=True))
    return list(await conn.fetch(
        'SELECT q.division, q.table_name, q."window", q."row", q.rule, q.key, q.seen,'
        ' q.payload::text AS payload'
        f" FROM {qualified(schema, 'quarantine')} AS q"
        " JOIN unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(d, w, t, n)"
        ' ON q.division = u.d AND q."window" = u.w AND q.table_name = u.t AND q."row" = u.n'
        ' WHERE q.released_at IS NULL ORDER BY q.division, q."window", q.table_name, q."row"',
        divisions, windows, tables, numbers))


async def _exists(conn: asyncpg.Connection | asyncpg.Pool, schema: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL",
                                    qualified(schema, "quarantine")))
