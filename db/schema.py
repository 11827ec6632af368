"""Tables from config: create, add columns, refuse type changes that would lose data.

The shape each table was created with is recorded in ``_assay_columns``; ``migrate``
compares the config's shape with it. New columns are added in place (no downtime,
no data lost); a safe widening is applied; anything else is refused with a message.
Indexes are named after their definition (``table_x`` + a hash), so a changed
definition creates the new index and drops the one it replaces.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from assay.db.ident import qualified, quote

INTEGERS = ("smallint", "integer", "bigint", "numeric")
"""Each widens safely to any type after it (numeric: any precision)."""

_VARCHAR = re.compile(r"^(?:character varying|varchar)\((\d+)\)$")


def is_widening(old: str, new: str) -> bool:
    """A type change no value can be lost by: smallint → integer → bigint → numeric,
    real → double precision, varchar(n) → varchar(m ≥ n) → text, date → timestamptz,
    and any of these → text."""
    if old == new:
        return True
    if old in INTEGERS and new in INTEGERS:
        return INTEGERS.index(old) < INTEGERS.index(new)
    if (old, new) in (("real", "double precision"), ("date", "timestamptz")):
        return True
    short = _VARCHAR.match(old)
    if short:
        longer = _VARCHAR.match(new)
        return new == "text" or (longer is not None and int(longer[1]) >= int(short[1]))
    return new == "text" and old in {*INTEGERS, "real", "double precision", "date",
                                     "timestamptz", "boolean"}


class MigrationError(ValueError):
    """The config asks for schema changes that would lose data (one line each)."""

    def __init__(self, refused: Sequence[Change]) -> None:
        super().__init__("; ".join(c.line() for c in refused))
        self.refused = list(refused)


@dataclass(frozen=True)
class Change:
    """One difference between config and database, and what ``migrate`` does about it."""

    kind: str
    """create, add, widen, keep, drop, refuse (columns or, with ``column`` None, tables);
    move (table ``table`` into table ``new``)."""
    table: str
    column: str | None = None
    old: str | None = None
    new: str | None = None

    def line(self) -> str:
        """The plan line: ``add column T.C type``, ``widen T.C from → to``, ..."""
        name = self.table if self.column is None else f"{self.table}.{self.column}"
        match self.kind:
            case "create":
                return f"create table {name}"
            case "add":
                return f"add column {name} {self.new}"
            case "widen":
                return f"widen {name} {self.old} → {self.new}"
            case "move":
                return f"move table {name} into {self.new} (and drop {name})"
            case "keep":
                what = "table " if self.column is None else ""
                return f"keep {what}{name} (not in config; --drop removes it)"
            case "drop":
                return f"drop {'table' if self.column is None else 'column'} {name}"
            case _:
                return f"refuse {name} {self.old} → {self.new}: could lose data"


@dataclass
class MigrationPlan:
    """Every difference found, in order; ``refused`` ones were not applied."""

    changes: list[Change] = field(default_factory=list)
    applied: bool = False
    """False for a dry run: nothing was changed."""
    views: list[str] = field(default_factory=list)
    """Views (re)created because their definition changed."""

    @property
    def refused(self) -> list[Change]:
        return [c for c in self.changes if c.kind == "refuse"]

    @property
    def pending(self) -> list[Change]:
        """What a database needs before it matches the config (``keep`` needs nothing)."""
        return [c for c in self.changes if c.kind != "keep"]

    def lines(self) -> list[str]:
        return [c.line() for c in self.changes]


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
    replaces: str | None = None
    """An older table this one takes over from: where it is recorded, ``migrate`` moves its
    rows in with ``moves`` (SQL with ``{old}`` and ``{new}``) and drops it."""
    moves: str = ""


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
                  views: Sequence[View] = (), *, drop: bool = False, dry_run: bool = False,
                  strict: bool = True) -> MigrationPlan:
    """Compare every table with its shape and bring it there, then (re)create the views,
    in one transaction. Tables and columns no longer in config are kept unless ``drop``;
    a type change that could lose data is refused (the rest is applied). ``strict``
    raises ``MigrationError`` on a refusal instead (nothing is applied then); ``dry_run``
    plans only."""
    plan = MigrationPlan(applied=not dry_run)
    transaction = conn.transaction()
    await transaction.start()
    try:
        # One migrator at a time, whichever process starts first.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"assay:{schema}")
        await ensure_schema(conn, schema)
        recorded = await _recorded(conn, schema)
        for shape in shapes:
            plan.changes.extend(_diff(shape, recorded.get(shape.name, {}), drop))
        wanted = {shape.name for shape in shapes}
        for shape in shapes:
            if shape.replaces and shape.replaces in recorded:
                plan.changes.append(Change("move", shape.replaces, new=shape.name))
                wanted.add(shape.replaces)
        for table in sorted(recorded.keys() - wanted):
            plan.changes.append(Change("drop" if drop else "keep", table))
        if strict and plan.refused:
            raise MigrationError(plan.refused)
        if not dry_run:
            if any(c.kind in ("widen", "drop") for c in plan.changes):
                for view in views:  # a view pins the types of the columns it reads
                    await conn.execute(f"DROP VIEW IF EXISTS {qualified(schema, view.name)}")
            for change in plan.changes:
                await _apply(conn, schema, change, shapes)
            for shape in shapes:
                await _migrate_indexes(conn, schema, shape)
                await _migrate_statistics(conn, schema, shape)
            for view in views:
                plan.views.extend(await _migrate_view(conn, schema, view))
    except BaseException:
        await transaction.rollback()
        raise
    if dry_run:
        await transaction.rollback()
    else:
        await transaction.commit()
    return plan


async def _recorded(conn: asyncpg.Connection, schema: str) -> dict[str, dict[str, str]]:
    """The shape each table was created with, as ``_assay_columns`` records it."""
    recorded: dict[str, dict[str, str]] = {}
    for r in await conn.fetch(f'SELECT "table_name", "column_name", "sql_type" FROM'
                              f' {qualified(schema, "_assay_columns")}'):
        recorded.setdefault(r["table_name"], {})[r["column_name"]] = r["sql_type"]
    return recorded


def _diff(shape: TableShape, recorded: dict[str, str], drop: bool) -> list[Change]:
    if not recorded:
        return [Change("create", shape.name)]
    changes = []
    for column, sql_type in shape.columns.items():
        old = recorded.get(column)
        if old is None:
            changes.append(Change("add", shape.name, column, new=sql_type))
        elif old != sql_type:
            kind = "widen" if is_widening(old, sql_type) else "refuse"
            changes.append(Change(kind, shape.name, column, old, sql_type))
    for column in recorded:
        if column not in shape.columns:
            changes.append(Change("drop" if drop else "keep", shape.name, column))
    return changes


async def _apply(conn: asyncpg.Connection, schema: str, change: Change,
                 shapes: Sequence[TableShape]) -> None:
    table = qualified(schema, change.table)
    columns = qualified(schema, "_assay_columns")
    record = (f'INSERT INTO {columns} ("table_name", "column_name", "sql_type")'
              ' VALUES ($1, $2, $3) ON CONFLICT ("table_name", "column_name")'
              ' DO UPDATE SET "sql_type" = EXCLUDED."sql_type"')
    column = quote(change.column) if change.column else ""
    match change.kind:
        case "create":
            shape = next(s for s in shapes if s.name == change.table)
            definition = ", ".join(
                f"{quote(c)} {t}{' NOT NULL' if c in shape.not_null else ''}"
                for c, t in shape.columns.items())
            key = ", ".join(quote(c) for c in shape.primary_key)
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} ({definition}, PRIMARY KEY ({key}))")
            await conn.executemany(record, [(shape.name, c, t) for c, t in shape.columns.items()])
        case "add":
            await conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column}"
                               f" {change.new}")
            await conn.execute(record, change.table, change.column, change.new)
        case "widen":
            await conn.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {change.new}"
                               f" USING {column}::{change.new}")
            await conn.execute(record, change.table, change.column, change.new)
        case "move":
            shape = next(s for s in shapes if s.name == change.new)
            await conn.execute(shape.moves.format(old=table, new=qualified(schema, shape.name)))
            await conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
            await conn.execute(f'DELETE FROM {columns} WHERE "table_name" = $1', change.table)
        case "drop" if change.column is None:
            await conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
            await conn.execute(f'DELETE FROM {columns} WHERE "table_name" = $1', change.table)
        case "drop":
            await conn.execute(f"ALTER TABLE {table} DROP COLUMN IF EXISTS {column}")
            await conn.execute(f'DELETE FROM {columns} WHERE "table_name" = $1'
                               ' AND "column_name" = $2', change.table, change.column)


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


async def _migrate_indexes(conn: asyncpg.Connection, schema: str, shape: TableShape) -> None:
    """Create the indexes config wants; drop ours it no longer wants."""
    wanted = {index_name(shape.name, expression): expression for expression in shape.indexes}
    present = {r[0] for r in await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
        schema, shape.name)}
    for name in sorted(present - set(wanted)):
        if name.startswith(f"{shape.name}_x"):  # ours, and no longer wanted
            await conn.execute(f"DROP INDEX {qualified(schema, name)}")
    for name, expression in wanted.items():
        if name not in present:
            await conn.execute(
                f"CREATE INDEX {quote(name)} ON {qualified(schema, shape.name)} {expression}")


async def _migrate_statistics(conn: asyncpg.Connection, schema: str, shape: TableShape
                              ) -> None:
    """Create the statistics objects the shape wants, drop ours it no longer wants."""
    table = qualified(schema, shape.name)
    wanted = {f"{shape.name}_s" + index_name(shape.name, e).rsplit("_x", 1)[1]: e
              for e in shape.statistics}
    present = {r[0] for r in await conn.fetch(
        "SELECT stxname FROM pg_statistic_ext WHERE stxrelid = $1::regclass", table)}
    for name in sorted(present - set(wanted)):
        if name.startswith(f"{shape.name}_s"):
            await conn.execute(f"DROP STATISTICS {qualified(schema, name)}")
    for name, expression in wanted.items():
        if name not in present:
            await conn.execute(f"CREATE STATISTICS {qualified(schema, name)} ON {expression}"
                               f" FROM {table}")
