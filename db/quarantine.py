"""The quarantine: rows that failed a formula or validation, with the reason, never lost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from db.ident import qualified
from db.schema import TableShape

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
