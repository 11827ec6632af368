"""Tables from config: create, add columns, refuse type changes that would lose data.

The shape each table was created with is recorded in ``_assay_columns``; ``migrate``
compares the config's shape with it. New columns are added in place (no downtime,
no data lost); a safe widening is applied; anything else is refused with a message.
Indexes are named after their definition (``table_x`` + a hash), so a changed
definition creates the new index and drops the one it replaces.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from assay.db.ident import qualified, quote

SAFE_WIDENINGS = {
    ("bigint", "numeric"),
    ("bigint", "text"),
    ("numeric", "text"),
    ("date", "text"),
    ("date", "timestamptz"),
    ("timestamptz", "text"),
    ("boolean", "text"),
}


class MigrationError(ValueError):
    """The config asks for a schema change that would lose data."""


@dataclass(frozen=True)
class TableShape:
    """A table as config wants it: ordered columns with SQL types, key, extra indexes."""

    name: str
    columns: dict[str, str]
    primary_key: Sequence[str]
    not_null: Sequence[str] = ()
    indexes: Sequence[str] = field(default_factory=tuple)
    """Extra index definitions, as ``(expression, ...)`` SQL over quoted columns."""
    statistics: Sequence[str] = field(default_factory=tuple)
    """Expressions to keep statistics of (``CREATE STATISTICS``), as ``(expression)`` SQL:
    what the planner needs to estimate an expression only a partial index holds."""


def index_name(table: str, expression: str) -> str:
    """An index's name, derived from its definition: a changed definition is a new index."""
    return f"{table}_x{hashlib.sha1(expression.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class View:
    """A view as config wants it: its name and its SELECT over qualified tables."""

    name: str
    select: str


async def ensure_schema(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {qualified(schema, '_assay_columns')} ("
        '"table_name" text NOT NULL, "column_name" text NOT NULL, "sql_type" text NOT NULL,'
        ' PRIMARY KEY ("table_name", "column_name"))'
    )


async def migrate(conn: asyncpg.Connection, schema: str, shapes: Sequence[TableShape],
                  views: Sequence[View] = ()) -> list[str]:
    """Bring every table to its shape, then (re)create the views, in one transaction;
    returns what was changed."""
    changes: list[str] = []
    async with conn.transaction():
        # One migrator at a time, whichever process starts first.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"assay:{schema}")
        await ensure_schema(conn, schema)
        for shape in shapes:
            changes.extend(await _migrate_table(conn, schema, shape))
        for view in views:
            changes.extend(await _migrate_view(conn, schema, view))
    return changes


async def _migrate_view(conn: asyncpg.Connection, schema: str, view: View) -> list[str]:
    name = qualified(schema, view.name)
    kind = await conn.fetchval(
        "SELECT c.relkind::text FROM pg_class AS c JOIN pg_namespace AS n"
        " ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
        schema, view.name)
    before = None
    if kind == "v":
        before = await conn.fetchval("SELECT pg_get_viewdef($1::regclass)", name)
    elif kind is not None:  # derived data an earlier version kept as a table
        await conn.execute(f"DROP TABLE {name}")
    await conn.execute(f"CREATE OR REPLACE VIEW {name} AS {view.select}")
    after = await conn.fetchval("SELECT pg_get_viewdef($1::regclass)", name)
    return [] if after == before else [f"created view {view.name}"]


async def _migrate_table(conn: asyncpg.Connection, schema: str, shape: TableShape) -> list[str]:
    table = qualified(schema, shape.name)
    recorded = {
        r["column_name"]: r["sql_type"]
        for r in await conn.fetch(
            f'SELECT "column_name", "sql_type" FROM {qualified(schema, "_assay_columns")}'
            ' WHERE "table_name" = $1',
            shape.name,
        )
    }
    changes: list[str] = []
    if not recorded:
        columns = ", ".join(
            f"{quote(c)} {t}{' NOT NULL' if c in shape.not_null else ''}"
            for c, t in shape.columns.items()
        )
        key = ", ".join(quote(c) for c in shape.primary_key)
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns}, PRIMARY KEY ({key}))")
        changes.append(f"created {shape.name}")
    else:
        for column, sql_type in shape.columns.items():
            old = recorded.get(column)
            if old is None:
                await conn.execute(
                    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {quote(column)} {sql_type}"
                )
                changes.append(f"added {shape.name}.{column} {sql_type}")
            elif old != sql_type:
                if (old, sql_type) not in SAFE_WIDENINGS:
                    raise MigrationError(
                        f"table {shape.name!r}, column {column!r}: changing {old} to {sql_type}"
                        " could lose data; add a new column instead, or migrate it by hand"
                    )
                await conn.execute(
                    f"ALTER TABLE {table} ALTER COLUMN {quote(column)} TYPE {sql_type}"
                    f" USING {quote(column)}::{sql_type}"
                )
                changes.append(f"widened {shape.name}.{column} {old} -> {sql_type}")
    wanted = {index_name(shape.name, expression): expression for expression in shape.indexes}
    present = {r[0] for r in await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
        schema, shape.name)}
    for name in sorted(present - set(wanted)):
        if name.startswith(f"{shape.name}_x"):  # ours, and no longer wanted
            await conn.execute(f"DROP INDEX {qualified(schema, name)}")
            changes.append(f"dropped index {name}")
    for name, expression in wanted.items():
        if name not in present:
            await conn.execute(f"CREATE INDEX {quote(name)} ON {table} {expression}")
    changes.extend(await _migrate_statistics(conn, schema, shape))
    await conn.executemany(
        f'INSERT INTO {qualified(schema, "_assay_columns")} ("table_name", "column_name",'
        ' "sql_type") VALUES ($1, $2, $3) ON CONFLICT ("table_name", "column_name")'
        ' DO UPDATE SET "sql_type" = EXCLUDED."sql_type"',
        [(shape.name, c, t) for c, t in shape.columns.items()],
    )
    return changes


async def _migrate_statistics(conn: asyncpg.Connection, schema: str, shape: TableShape
                              ) -> list[str]:
    """Create the statistics objects the shape wants, drop ours it no longer wants."""
    table = qualified(schema, shape.name)
    wanted = {f"{shape.name}_s" + index_name(shape.name, e).rsplit("_x", 1)[1]: e
              for e in shape.statistics}
    present = {r[0] for r in await conn.fetch(
        "SELECT stxname FROM pg_statistic_ext WHERE stxrelid = $1::regclass", table)}
    changes = []
    for name in sorted(present - set(wanted)):
        if name.startswith(f"{shape.name}_s"):
            await conn.execute(f"DROP STATISTICS {qualified(schema, name)}")
            changes.append(f"dropped statistics {name}")
    for name, expression in wanted.items():
        if name not in present:
            await conn.execute(f"CREATE STATISTICS {qualified(schema, name)} ON {expression}"
                               f" FROM {table}")
    return changes
