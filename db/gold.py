"""Gold SQL: table sync from Silver and CRM↔ERP linkage on normalised keys (KPIs: kpi.py).

Every statement is built once from config with quoted identifiers; values are bound.
Account keys are compared as ``trim(lower(key))`` on both sides, with functional
indexes on exactly that expression (on a link target, over its waiting rows only), so
linking a window's keys is an index lookup whatever the size of the history.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from assay.db.ident import literal, qualified, quote
from assay.db.schema import TableShape, View

GOLD_META = {"_division": "text", "_window": "text"}


def normalised(alias: str, column: str) -> str:
    """The normalised account key expression, identical in indexes and queries."""
    return f"trim(lower({quote(alias)}.{quote(column)}))"


def gold_shape(name: str, columns: dict[str, str], key: Sequence[str],
               indexes: Sequence[Sequence[str]], link: tuple[str, str] | None,
               account_key: str | None, account_id: str | None = None) -> TableShape:
    """A Gold table: mapped columns, optional link column (name, SQL type of the account
    id), and its indexes.

    A link target's window index and key index hold only the rows still waiting for an
    account, so linking a row later takes it out of them and the accounts a window brings
    probe only the rows that wait; its index on the link column finds the rows of an
    account that moved or lost its key to a lower id. The accounts table's key index also
    holds the account id, so the lowest id of a key is the first entry of one probe.
    """
    shape_columns = {**columns, **GOLD_META}
    window_index = '("_division", "_window")'
    waiting = ""
    if link:
        shape_columns[link[0]] = link[1]
        waiting = f" WHERE {quote(link[0])} IS NULL"
    index_sql = [window_index + waiting]
    index_sql += ["(" + ", ".join(quote(c) for c in index) + ")" for index in indexes]
    if account_key:
        with_id = f", {quote(account_id)}" if account_id else ""
        index_sql.append(f"((trim(lower({quote(account_key)}))){with_id}){waiting}")
    statistics = []
    if link:
        index_sql.append(f"({quote(link[0])})")
        if account_key:  # the planner's estimate for a key, which the partial index lacks
            statistics.append(f"((trim(lower({quote(account_key)}))))")
    return TableShape(f"gold_{name}", shape_columns, tuple(key), not_null=tuple(key),
                      indexes=tuple(index_sql), statistics=tuple(statistics))


@dataclass(frozen=True)
class AccountLookup:
    """How a Gold row finds its CRM account: the lowest account id whose normalised
    account number equals the row's, one probe of the accounts' (key, id) index."""

    accounts: str
    id: str
    key: str
    link: str

    def probe(self, schema: str, row_key: str) -> str:
        """The account id for ``row_key`` (an SQL expression), as a scalar subquery."""
        source = qualified(schema, f"gold_{self.accounts}")
        return (f"(SELECT a.{quote(self.id)} FROM {source} AS a"
                f" WHERE {normalised('a', self.key)} = trim(lower({row_key}))"
                f" ORDER BY a.{quote(self.id)} LIMIT 1)")


@dataclass(frozen=True)
class AccountMoves:
    """Accounts a window deletes or gives another number: the rows linked to them look
    their account up again (another account with their number, or none)."""

    find: str
    relinks: tuple[str, ...]

    @classmethod
    def build(cls, schema: str, lookup: AccountLookup, silver: str, silver_id: str,
              silver_key: str, targets: dict[str, str]) -> AccountMoves:
        accounts = qualified(schema, f"gold_{lookup.accounts}")
        account_id, link = quote(lookup.id), quote(lookup.link)
        # Run before the window's sync: Gold still holds the numbers the window replaces.
        find = (
            f"SELECT coalesce(array_agg(DISTINCT g.{account_id}), '{{}}') FROM"
            f" {qualified(schema, f'silver_{silver}')} AS s JOIN {accounts} AS g"
            f" ON g.{account_id} = s.{quote(silver_id)}"
            ' WHERE s."_division" = $1 AND s."_window" = $2 AND (s."_deleted"'
            f" OR trim(lower(s.{quote(silver_key)})) IS DISTINCT FROM"
            f" {normalised('g', lookup.key)})")
        relinks = tuple(
            f"UPDATE {qualified(schema, f'gold_{table}')} AS t"
            f" SET {link} = {lookup.probe(schema, f't.{quote(key)}')}"
            f" WHERE t.{link} = ANY($1)"
            for table, key in targets.items())
        return cls(find, relinks)

    async def moved(self, conn: asyncpg.Connection, division: str, window: str) -> list[Any]:
        return list(await conn.fetchval(self.find, division, window))

    async def relink(self, conn: asyncpg.Connection, moved: list[Any]) -> None:
        """Rows linked to a moved account take their number's account now, if any."""
        for statement in self.relinks:
            await conn.execute(statement, moved)


@dataclass(frozen=True)
class TableSync:
    """Upserts and deletes of one Gold table for the rows one window changed in Silver.

    A link target's rows get their account id as they are written, so a window's own
    rows never need a second pass.
    """

    table: str
    upsert: str
    delete: str

    @classmethod
    def build(cls, schema: str, gold: str, silver: str, columns: dict[str, str],
              key: Sequence[str], lookup: AccountLookup | None = None,
              account_key: str | None = None) -> TableSync:
        target, source = qualified(schema, f"gold_{gold}"), qualified(schema, f"silver_{silver}")
        names = [*columns, "_division", "_window"]
        selected = [f"s.{quote(c)}" for c in columns.values()] + ['s."_division"', 's."_window"']
        if lookup is not None and account_key is not None:
            names.append(lookup.link)
            selected.append(lookup.probe(schema, f"s.{quote(columns[account_key])}"))
        data = [c for c in names if c not in key]
        keys = ", ".join(quote(c) for c in key)
        upsert = (
            f"INSERT INTO {target} AS g ({', '.join(quote(c) for c in names)})"
            f" SELECT {', '.join(selected)} FROM {source} AS s"
            ' WHERE s."_division" = $1 AND s."_window" = $2 AND NOT s."_deleted"'
            f" ORDER BY {', '.join('s.' + quote(columns[k]) for k in key)}"
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
        return cls(target, upsert, delete)

    async def run(self, conn: asyncpg.Connection, division: str, window: str) -> int:
        """Apply the window; returns the number of Gold rows written or deleted."""
        written = await conn.execute(self.upsert, division, window)
        deleted = await conn.execute(self.delete, division, window)
        changed = int(written.rsplit(" ", 1)[1]) + int(deleted.rsplit(" ", 1)[1])
        if changed > STALE_ROWS:
            await refresh_statistics(conn, self.table, changed)
        return changed


STALE_ROWS = 1000
STALE_SHARE = 0.1
"""A window that changed more than STALE_SHARE of a table's rows (and more than STALE_ROWS)
refreshes its statistics before the statements that follow are planned, as autovacuum
would after the commit; otherwise a first large load is planned as an empty table."""


async def refresh_statistics(conn: asyncpg.Connection, table: str, changed: int) -> bool:
    """ANALYZE ``table`` (qualified) if ``changed`` rows are a large share of it. ANALYZE
    in the window's transaction samples the window's own rows too."""
    estimate = await conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = $1::regclass",
                                   table)
    if changed <= STALE_SHARE * max(estimate, 0):
        return False
    await conn.execute(f"ANALYZE {table}")
    return True


APPLIED = TableShape(
    "gold_windows",
    {"division": "text", "window": "text", "status": "text", "applied_at": "timestamptz",
     "seconds": "numeric", "unmatched": "bigint", "applies": "bigint"},
    ("division", "window"),
    not_null=("division", "window"),
)
"""Every window Gold has applied, with the outcome of its last apply: what a reader checks
to know that no completed window was skipped."""


async def record_applied(conn: asyncpg.Connection, schema: str, division: str, window: str,
                         status: str, at: float, seconds: float, unmatched: int) -> None:
    """Note the window as applied, in the transaction that applied it."""
    await conn.execute(
        f"INSERT INTO {qualified(schema, 'gold_windows')} AS g (division, \"window\", status,"
        " applied_at, seconds, unmatched, applies) VALUES ($1, $2, $3, to_timestamp($4), $5,"
        " $6, 1) ON CONFLICT (division, \"window\") DO UPDATE SET status = EXCLUDED.status,"
        " applied_at = EXCLUDED.applied_at, seconds = EXCLUDED.seconds,"
        " unmatched = EXCLUDED.unmatched, applies = g.applies + 1",
        division, window, status, at, round(seconds, 3), unmatched)


async def applied_among(conn: asyncpg.Connection | asyncpg.Pool, schema: str,
                        windows: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (division, window) pairs Gold has applied (none before its start)."""
    if not windows or not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL",
                                              qualified(schema, "gold_windows")):
        return set()
    divisions, names = (list(x) for x in zip(*windows, strict=True))
    rows = await conn.fetch(
        f"SELECT g.division, g.\"window\" FROM {qualified(schema, 'gold_windows')} AS g"
        " JOIN unnest($1::text[], $2::text[]) AS w(division, name)"
        " ON g.division = w.division AND g.\"window\" = w.name", divisions, names)
    return {(r[0], r[1]) for r in rows}


def unmatched_view(schema: str, link: str, targets: dict[str, str]) -> View:
    """``gold_link_unmatched``: per division, window, table and account key, the rows no
    account matches yet. A view over the targets' rows without a link (each target has an
    index of exactly those), so it can never disagree with them and needs no upkeep."""
    parts = [
        f"SELECT \"_division\" AS division, \"_window\" AS \"window\", {literal(table)} AS"
        f" table_name, coalesce({quote(key)}, '') AS account_key, count(*) AS \"rows\""
        f" FROM {qualified(schema, f'gold_{table}')} WHERE {quote(link)} IS NULL"
        " GROUP BY 1, 2, 4"
        for table, key in targets.items()]
    return View("gold_link_unmatched", " UNION ALL ".join(parts))


async def serialise(conn: asyncpg.Connection, schema: str) -> None:
    """Hold Gold's lock of ``schema`` until the transaction ends: one window at a time.

    Two windows applied side by side would each miss the other's uncommitted rows: an
    order written while another division's transaction still holds its account would
    stay unlinked, with nothing left to link it later.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"assay-gold:{schema}")


async def use_work_mem(conn: asyncpg.Connection, work_mem: str) -> None:
    """PostgreSQL's ``work_mem`` for the rest of the transaction (``gold.work_mem``)."""
    await conn.execute("SELECT set_config('work_mem', $1, true)", work_mem)


MANY_KEYS = 10_000
MANY_SHARE = 0.15
"""A window of at least MANY_KEYS account rows and MANY_SHARE of the accounts table finds
its keys' accounts by one join over that table instead of one index probe per key.
Measured with ``python -m bench.gold``'s data on 2 cores: a million accounts arriving
at once fill in 5.8 s instead of 18.8 s; 50k over a million still probe faster (0.21 s
against 0.34 s); the two meet near 200k over 1.2M."""


@dataclass(frozen=True)
class WindowKeys:
    """The account keys a window brought, each with the ids of all accounts holding it now,
    lowest first, in a temporary table every link target reads (analysed, so its size is
    known and the targets' joins follow it). The ids a key's lowest one displaces are
    listed one per row in a second table, also analysed: nearly always empty, and the
    planner, left to guess ten per key from an array, would read a whole target for a
    window of many keys.

    A window of few accounts probes the accounts' (key, id) index once per key; a window
    of at least ``many`` accounts and ``share`` of the table reads the accounts table
    once, joined to the window's keys and grouped by key, where a million probes cost
    more than one pass. Both forms
    give every key that has an account the same ids (the first form also keeps a null
    key, with none), so the targets link alike.
    """

    prepare: str
    count: str
    fill: tuple[str, ...]
    fill_many: tuple[str, ...]
    many: int
    share: float

    @classmethod
    def build(cls, schema: str, lookup: AccountLookup, id_type: str,
              many: int = MANY_KEYS, share: float = MANY_SHARE) -> WindowKeys:
        source = qualified(schema, f"gold_{lookup.accounts}")
        account_id = quote(lookup.id)
        table, displaced = window_keys_table(schema), displaced_table(schema)
        in_window = ' WHERE w."_division" = $1 AND w."_window" = $2'
        analyse = (f"ANALYZE {table}", f"DELETE FROM {displaced}",
                   f"INSERT INTO {displaced} SELECT b.k, b.id, d.id FROM {table} AS b"
                   " CROSS JOIN LATERAL unnest(b.displaced) AS d(id)",
                   f"ANALYZE {displaced}")
        return cls(
            # Emptied by the fill, not at commit: they also serve outside a transaction.
            prepare=(f"CREATE TEMP TABLE IF NOT EXISTS {table} (k text, id {id_type},"
                     f" displaced {id_type}[]);"
                     f" CREATE TEMP TABLE IF NOT EXISTS {displaced} (k text, id {id_type},"
                     f" displaced {id_type})"),
            # The table's name is quoted identifiers (no single quotes), as a regclass literal.
            count=(f"SELECT count(*), (SELECT reltuples FROM pg_class WHERE oid ="
                   f" '{source}'::regclass) FROM {source} AS w{in_window}"),
            fill=(
                f"DELETE FROM {table}",
                f"INSERT INTO {table} SELECT keys.k, ids[1], ids[2:] FROM"
                f" (SELECT DISTINCT {normalised('w', lookup.key)} AS k FROM {source} AS w"
                f"{in_window}) AS keys,"
                f" LATERAL (SELECT ARRAY(SELECT a.{account_id} FROM {source} AS a"
                f" WHERE {normalised('a', lookup.key)} = keys.k"
                f" ORDER BY a.{account_id})) AS found(ids)",
                *analyse),
            # A key without an account (a null key) links nothing in either form.
            fill_many=(
                f"DELETE FROM {table}",
                f"INSERT INTO {table} SELECT found.k, found.ids[1], found.ids[2:] FROM"
                f" (SELECT {normalised('a', lookup.key)} AS k,"
                f" array_agg(a.{account_id} ORDER BY a.{account_id}) AS ids FROM {source} AS a"
                f" WHERE {normalised('a', lookup.key)} IN (SELECT {normalised('w', lookup.key)}"
                f" FROM {source} AS w{in_window}) GROUP BY 1) AS found",
                *analyse),
            many=many,
            share=share,
        )

    async def run(self, conn: asyncpg.Connection, division: str, window: str) -> None:
        await conn.execute(self.prepare)
        rows, accounts = await conn.fetchrow(self.count, division, window)
        many = rows >= self.many and rows >= self.share * max(accounts, 0)
        for statement in self.fill_many if many else self.fill:
            await (conn.execute(statement, division, window) if "$1" in statement
                   else conn.execute(statement))


def window_keys_table(schema: str) -> str:
    return quote(f"_link_keys_{hashlib.sha1(schema.encode()).hexdigest()[:10]}")


def displaced_table(schema: str) -> str:
    return quote(f"_link_displaced_{hashlib.sha1(schema.encode()).hexdigest()[:10]}")


@dataclass(frozen=True)
class LinkTarget:
    """Linking one ERP table's older rows to the accounts a window brought, and counting
    the window's rows that no account matches.

    Each statement starts from the window's keys (``WindowKeys``, filled first) and
    probes the target by index: its waiting rows by key, and the rows linked to an
    account that a lower id of the same key now displaces by link. Neither grows with
    the rows already linked.
    """

    table: str
    relink: str
    displace: str
    missing: str

    @classmethod
    def build(cls, schema: str, lookup: AccountLookup, table: str, key: str) -> LinkTarget:
        target = qualified(schema, f"gold_{table}")
        link, best = quote(lookup.link), window_keys_table(schema)
        return cls(
            table=table,
            relink=(f"UPDATE {target} AS t SET {link} = b.id FROM {best} AS b"
                    f" WHERE {normalised('t', key)} = b.k AND t.{link} IS NULL"),
            displace=(f"UPDATE {target} AS t SET {link} = d.id"
                      f" FROM {displaced_table(schema)} AS d"
                      f" WHERE t.{link} = d.displaced AND {normalised('t', key)} = d.k"),
            missing=(f'SELECT count(*) FROM {target} WHERE "_division" = $1 AND "_window" = $2'
                     f" AND {link} IS NULL"),
        )

    async def run(self, conn: asyncpg.Connection, division: str, window: str) -> int:
        """Link older rows of the window's keys (filled by ``WindowKeys``); count the
        window's misses."""
        await conn.execute(self.relink)
        await conn.execute(self.displace)
        return int(await conn.fetchval(self.missing, division, window))
