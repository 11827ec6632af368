"""Bronze landing: COPY a batch straight into the table while its positions are new; when
one is stored already, COPY into a staging table and one upsert from it (``db.insert``)."""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Sequence
from typing import Any

import asyncpg

from assay.db.ident import SQL_TYPES, qualified, quote
from assay.db.insert import InsertFirst
from assay.db.schema import TableShape

META_COLUMNS = {
    "_division": "text",
    "_window": "text",
    "_row": "bigint",
    "_op": "text",
    "_seq": "text",
    "_entry_id": "text",
    "_received_at": "timestamptz",
    "_extra": "jsonb",
}
KEY = ("_division", "_window", "_row")


def bronze_shape(table: str, raw_columns: Sequence[str], derived: dict[str, str]) -> TableShape:
    """Raw columns land as text, exactly as sent; formula outputs get their own types.

    Column order: the metadata columns, the raw columns, the formula outputs (Bronze
    builds its rows in this order).
    """
    columns = dict(META_COLUMNS)
    columns.update({c: "text" for c in raw_columns})
    columns.update({c: SQL_TYPES[t] for c, t in derived.items()})
    return TableShape(f"bronze_{table}", columns, KEY, not_null=KEY)


class BronzeWriter:
    """Lands rows of one table; the SQL is built once from the table's shape."""

    def __init__(self, schema: str, shape: TableShape) -> None:
        self.columns = list(shape.columns)
        self.schema, self.table = schema, shape.name
        self.order = operator.itemgetter(*(self.columns.index(c) for c in KEY))
        digest = hashlib.sha1(repr(sorted(shape.columns.items())).encode()).hexdigest()[:10]
        self.stage = f"_stage_{shape.name}_{digest}"[:63]
        target = qualified(schema, shape.name)
        names = ", ".join(quote(c) for c in self.columns)
        updates = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in self.columns
                            if c not in KEY)
        self.create_stage = (
            f"CREATE TEMP TABLE IF NOT EXISTS {quote(self.stage)} "
            f"(LIKE {target}) ON COMMIT DELETE ROWS"
        )
        self.upsert = (
            f"INSERT INTO {target} ({names}) SELECT {names} FROM {quote(self.stage)} "
            f"ORDER BY {', '.join(quote(c) for c in KEY)} "  # key order: no deadlocks
            f"ON CONFLICT ({', '.join(quote(c) for c in KEY)}) DO UPDATE SET {updates}"
        )
        self.first = InsertFirst()

    async def land(self, conn: asyncpg.Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Write rows (tuples in ``self.columns`` order) inside the caller's transaction."""
        ordered = sorted(rows, key=self.order)  # key order, as the upsert's: no deadlocks

        async def copy() -> None:
            await conn.copy_records_to_table(self.table, schema_name=self.schema,
                                             records=ordered, columns=self.columns)

        async def upsert() -> None:
            await conn.execute(self.create_stage)
            await conn.copy_records_to_table(self.stage, records=rows, columns=self.columns)
            await conn.execute(self.upsert)

        await self.first.run(conn, copy, upsert)
