"""Where each row number of a table and window ended up: the ledger behind the counts.

The ledger is stored as runs of consecutive row numbers with one outcome, one row of
``_row_ranges`` per run (a batch of 2,000 consecutive rows is one row, not 2,000). The
view ``_rows`` shows it one row per record, as it was first stored; counting reads the
runs (``last_row - first_row + 1``).

Written in the same transaction as the effect it records, so a redelivered entry or a
producer's retry is never counted twice: the writer locks its (division, window, table)
groups, and when a run overlaps a stored one, the rows already stored are left as they are.
A quarantined row that is later re-driven successfully moves to ``applied`` (its stored
run is split); a final outcome is never downgraded.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable, Mapping, Sequence

import asyncpg

from assay.db.ident import qualified
from assay.db.schema import TableShape, View

TABLE = "_row_ranges"
SHAPE = TableShape(
    TABLE,
    {"division": "text", "window": "text", "table_name": "text", "first_row": "bigint",
     "last_row": "bigint", "outcome": "text", "layer": "text"},
    ("division", "window", "table_name", "first_row"),
    not_null=("division", "window", "table_name", "first_row", "last_row", "outcome"),
    replaces="_rows",
    moves=(
        # runs of consecutive rows with one outcome and layer ("gaps and islands")
        "INSERT INTO {new} (division, \"window\", table_name, first_row, last_row, outcome,"
        " layer) SELECT division, \"window\", table_name, min(\"row\"), max(\"row\"), outcome,"
        " layer FROM (SELECT *, \"row\" - row_number() OVER (PARTITION BY division,"
        " \"window\", table_name, outcome, layer ORDER BY \"row\") AS island FROM {old}) AS s"
        " GROUP BY division, \"window\", table_name, outcome, layer, island"),
)

APPLIED, QUARANTINED, DEAD = "applied", "quarantined", "dead_lettered"

Row = tuple[str, str, str, int]
"""(division, window, table, row number)"""
Group = tuple[str, str, str]
Run = tuple[int, int, str]
"""(first row, last row, outcome)"""


def view(schema: str) -> View:
    """``_rows``: the ledger one row per record (division, window, table_name, row,
    outcome, layer), for reading; nothing writes it."""
    return View("_rows", (
        'SELECT division, "window", table_name, generate_series(first_row, last_row) AS "row",'
        f" outcome, layer FROM {qualified(schema, TABLE)}"))


def runs(numbers: Iterable[int], outcome: str) -> list[Run]:
    """Sorted distinct row numbers as runs of consecutive ones."""
    found: list[Run] = []
    first = last = None
    for n in sorted(set(numbers)):
        if last is not None and n == last + 1:
            last = n
            continue
        if first is not None and last is not None:
            found.append((first, last, outcome))
        first = last = n
    if first is not None and last is not None:
        found.append((first, last, outcome))
    return found


def grouped(rows: Iterable[Row]) -> dict[Group, list[int]]:
    """Row numbers per (division, window, table)."""
    groups: dict[Group, list[int]] = {}
    for division, window, table, n in rows:
        groups.setdefault((division, window, table), []).append(n)
    return groups


def plan_group_runs(outcomes: Mapping[str, Mapping[Group, Iterable[int]]]
                    ) -> dict[Group, list[Run]]:
    """Per group, the runs of each outcome; a row given two outcomes keeps the final one
    (``QUARANTINED`` gives way, as it does to a stored final outcome; of two final ones,
    the first in ``outcomes``)."""
    numbers: dict[Group, dict[str, set[int]]] = {}
    for outcome, groups in outcomes.items():
        for group, rows in groups.items():
            numbers.setdefault(group, {}).setdefault(outcome, set()).update(rows)
    planned: dict[Group, list[Run]] = {}
    for group, by_outcome in numbers.items():
        final = {o: ns for o, ns in by_outcome.items() if o != QUARANTINED}
        taken: set[int] = set()
        for ns in final.values():  # between two final ones, the first given
            ns.difference_update(taken)
            taken.update(ns)
        if QUARANTINED in by_outcome:
            by_outcome[QUARANTINED].difference_update(taken)
        planned[group] = sorted(r for o, ns in by_outcome.items() for r in runs(ns, o))
    return planned


async def record(conn: asyncpg.Connection, schema: str, layer: str,
                 outcomes: Mapping[str, Sequence[Row]]) -> None:
    """Record the outcome of each (division, window, table, row), in the caller's transaction
    (``record_groups``)."""
    await record_groups(conn, schema, layer, {o: grouped(rows) for o, rows in outcomes.items()})


async def record_groups(conn: asyncpg.Connection, schema: str, layer: str,
                        outcomes: Mapping[str, Mapping[Group, Iterable[int]]]) -> None:
    """Record the outcome of row numbers per (division, window, table), in the caller's
    transaction.

    One round trip locks the batch's groups, one inserts its runs when none overlaps a
    stored run (the usual case); otherwise the stored runs are read and only what changes
    is written (``_overlapping``)."""
    planned = plan_group_runs(outcomes)
    if not planned:
        return
    groups = sorted(planned)
    divisions, windows, tables = (list(x) for x in zip(*groups, strict=True))
    indexes: list[int] = []
    firsts: list[int] = []
    lasts: list[int] = []
    results: list[str] = []
    for i, group in enumerate(groups, start=1):
        for first, last, outcome in planned[group]:
            indexes.append(i)
            firsts.append(first)
            lasts.append(last)
            results.append(outcome)
    lock, insert = _statements(schema)
    # One writer per group at a time (in sorted order: no deadlock between two writers),
    # so no two transactions can both find a row new.
    await conn.execute(lock, schema, divisions, windows, tables)
    status = await conn.execute(insert, indexes, firsts, lasts, results, divisions, windows,
                                tables, layer)
    if int(status.split()[-1]) != len(firsts):
        await _overlapping(conn, schema, layer, planned)


async def _overlapping(conn: asyncpg.Connection, schema: str, layer: str,
                       planned: dict[Group, list[Run]]) -> None:
    """Write the runs where some overlap stored ones: new rows are added, stored
    quarantined rows given a final outcome are split out of their run, the rest stays."""
    target = qualified(schema, TABLE)
    groups = list(planned)
    stored: dict[Group, list[tuple[int, int, str, str | None]]] = {}
    for r in await conn.fetch(
            f'SELECT division, "window", table_name, first_row, last_row, outcome, layer'
            f" FROM {target} AS s JOIN unnest($1::text[], $2::text[], $3::text[], $4::bigint[],"
            " $5::bigint[]) AS g(d, w, t, lo, hi) ON s.division = g.d AND s.\"window\" = g.w"
            " AND s.table_name = g.t AND s.first_row <= g.hi AND s.last_row >= g.lo"
            " ORDER BY first_row",
            [g[0] for g in groups], [g[1] for g in groups], [g[2] for g in groups],
            [planned[g][0][0] for g in groups], [max(r[1] for r in planned[g]) for g in groups]):
        stored.setdefault((r["division"], r["window"], r["table_name"]), []).append(
            (r["first_row"], r["last_row"], r["outcome"], r["layer"]))
    removed: list[tuple[Group, int]] = []
    added: list[tuple[Group, int, int, str, str | None]] = []
    for group, planned_runs in planned.items():
        known = stored.get(group, [])
        starts = [k[0] for k in known]
        fresh: dict[str, list[int]] = {}
        upgraded: dict[int, dict[str, list[int]]] = {}  # stored run index → outcome → rows
        for first, last, outcome in planned_runs:
            for n in range(first, last + 1):
                at = bisect.bisect_right(starts, n) - 1
                if at < 0 or known[at][1] < n:
                    fresh.setdefault(outcome, []).append(n)
                elif known[at][2] == QUARANTINED and outcome != QUARANTINED:
                    upgraded.setdefault(at, {}).setdefault(outcome, []).append(n)
        for outcome, ns in fresh.items():
            added.extend((group, f, la, o, layer) for f, la, o in runs(ns, outcome))
        for at, by_outcome in upgraded.items():
            first, last, outcome, was_layer = known[at]
            removed.append((group, first))
            moved = sorted(n for ns in by_outcome.values() for n in ns)
            for o, ns in by_outcome.items():
                added.extend((group, f, la, ro, layer) for f, la, ro in runs(ns, o))
            start = first
            for n in [*moved, last + 1]:  # what stays quarantined: the gaps between them
                if n > start:
                    added.append((group, start, n - 1, outcome, was_layer))
                start = n + 1
    if removed:
        await conn.execute(
            f"DELETE FROM {target} AS s USING unnest($1::text[], $2::text[], $3::text[],"
            " $4::bigint[]) AS g(d, w, t, f) WHERE s.division = g.d AND s.\"window\" = g.w"
            " AND s.table_name = g.t AND s.first_row = g.f",
            *(list(x) for x in zip(*((*g, f) for g, f in removed), strict=True)))
    if added:
        await conn.execute(
            f"INSERT INTO {target} (division, \"window\", table_name, first_row, last_row,"
            " outcome, layer) SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
            " $4::bigint[], $5::bigint[], $6::text[], $7::text[])",
            *(list(x) for x in zip(*((*g, f, la, o, ly) for g, f, la, o, ly in added),
                                   strict=True)))


@functools.lru_cache(maxsize=64)
def _statements(schema: str) -> tuple[str, str]:
    """The lock of a batch's groups, and the insert of its runs when none of them overlaps
    a stored run (the stored run that starts last at or before a new run's last row is the
    only one that can)."""
    target = qualified(schema, TABLE)
    lock = ("SELECT pg_advisory_xact_lock(hashtextextended("
            "concat_ws(chr(31), $1::text, d, w, t), 0))"
            " FROM unnest($2::text[], $3::text[], $4::text[]) AS g(d, w, t)")
    insert = (
        "WITH new AS (SELECT g.d, g.w, g.t, u.f, u.l, u.o FROM unnest($1::int[], $2::bigint[],"
        " $3::bigint[], $4::text[]) AS u(i, f, l, o) JOIN unnest($5::text[], $6::text[],"
        " $7::text[]) WITH ORDINALITY AS g(d, w, t, i) ON g.i = u.i)"
        f" INSERT INTO {target} (division, \"window\", table_name, first_row, last_row,"
        " outcome, layer) SELECT d, w, t, f, l, o, $8 FROM new WHERE NOT EXISTS ("
        " SELECT 1 FROM new AS n CROSS JOIN LATERAL (SELECT s.last_row FROM"
        f" {target} AS s WHERE s.division = n.d AND s.\"window\" = n.w AND s.table_name = n.t"
        " AND s.first_row <= n.l ORDER BY s.first_row DESC LIMIT 1) AS before"
        " WHERE before.last_row >= n.f)")
    return lock, insert


async def totals(conn: asyncpg.Connection, schema: str, division: str, window: str
                 ) -> dict[tuple[str, str], int]:
    """Counts per (table, outcome) for one division and window."""
    rows = await conn.fetch(
        f"SELECT table_name, outcome, sum(last_row - first_row + 1) AS n"
        f" FROM {qualified(schema, TABLE)}"
        ' WHERE division = $1 AND "window" = $2 GROUP BY table_name, outcome',
        division, window,
    )
    return {(r["table_name"], r["outcome"]): int(r["n"]) for r in rows}


async def outcomes(conn: asyncpg.Connection | asyncpg.Pool, schema: str) -> dict[str, int]:
    """Rows per outcome, all divisions and windows."""
    rows = await conn.fetch(
        f"SELECT outcome, sum(last_row - first_row + 1) AS n FROM {qualified(schema, TABLE)}"
        " GROUP BY outcome")
    return {r["outcome"]: int(r["n"]) for r in rows}

