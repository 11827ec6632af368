"""The ledger: runs of row numbers per (division, window, table) in ``_row_ranges``, read one
row per record through the view ``_rows``. Written in batches that mix divisions, windows
and tables; a quarantined row may become applied, never the reverse; a row is never counted
twice, whatever overlaps what, also when two writers race."""

from __future__ import annotations

import asyncio

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.db import accounting
from assay.db.schema import TableShape, View, migrate

A, Q, D = accounting.APPLIED, accounting.QUARANTINED, accounting.DEAD


async def ledger(pool: asyncpg.Pool | asyncpg.Connection, schema: str
                 ) -> dict[tuple[str, str, str, int], str]:
    rows = await pool.fetch(f'SELECT division, "window", table_name, "row", outcome'
                            f' FROM "{schema}"."_rows"')
    found = {(r["division"], r["window"], r["table_name"], r["row"]): r["outcome"]
             for r in rows}
    assert len(found) == len(rows), "a row is in the ledger twice"
    return found


async def prepare(conn: asyncpg.Connection, schema: str) -> None:
    await migrate(conn, schema, [accounting.SHAPE], [accounting.view(schema)])


async def test_a_mixed_batch_lands_each_row_under_its_own_division_window_and_table(
        pool: asyncpg.Pool, schema: str) -> None:
    async with pool.acquire() as conn:
        await prepare(conn, schema)
        batch = [(division, window, table, n)
                 for n in range(1, 6) for division in ("east", "west")
                 for window in ("w2", "w1") for table in ("item", "order")]
        async with conn.transaction():
            await accounting.record(conn, schema, "silver", {A: batch})
            await accounting.record(conn, schema, "silver", {A: batch[:7]})
        runs = await conn.fetchval(f'SELECT count(*) FROM "{schema}"."_row_ranges"')

    assert await ledger(pool, schema) == dict.fromkeys(batch, A)
    assert runs == 8  # one run of 1..5 per division, window and table
    async with pool.acquire() as conn:
        assert await accounting.totals(conn, schema, "east", "w1") == {
            ("item", A): 5, ("order", A): 5}


async def test_quarantined_rows_may_become_applied_and_applied_ones_stay(
        pool: asyncpg.Pool, schema: str) -> None:
    quarantined = [("east", "w1", "item", 1), ("west", "w1", "item", 2)]
    applied = [("east", "w1", "item", 3)]
    async with pool.acquire() as conn:
        await prepare(conn, schema)
        await accounting.record(conn, schema, "silver", {Q: quarantined})
        await accounting.record(conn, schema, "silver", {A: applied})
        await accounting.record(conn, schema, "silver", {A: quarantined[:1]})
        await accounting.record(conn, schema, "silver", {Q: applied})

    assert await ledger(pool, schema) == {
        quarantined[0]: A, quarantined[1]: Q, applied[0]: A}


async def test_a_row_re_driven_out_of_a_quarantined_run_splits_it(
        pool: asyncpg.Pool, schema: str) -> None:
    rows = [("east", "w1", "item", n) for n in range(1, 11)]
    async with pool.acquire() as conn:
        await prepare(conn, schema)
        await accounting.record(conn, schema, "bronze", {Q: rows})
        await accounting.record(conn, schema, "silver", {A: [rows[3], rows[4], rows[9]]})
        runs = await conn.fetch(f'SELECT first_row, last_row, outcome, layer'
                                f' FROM "{schema}"."_row_ranges" ORDER BY first_row')

    assert [tuple(r) for r in runs] == [(1, 3, Q, "bronze"), (4, 5, A, "silver"),
                                        (6, 9, Q, "bronze"), (10, 10, A, "silver")]


async def test_a_row_given_two_outcomes_in_one_batch_keeps_the_final_one(
        pool: asyncpg.Pool, schema: str) -> None:
    row = ("east", "w1", "item", 7)
    async with pool.acquire() as conn:
        await prepare(conn, schema)
        await accounting.record(conn, schema, "silver", {Q: [row, row], A: [row]})

    assert await ledger(pool, schema) == {row: A}


Call = tuple[str, list[int]]
calls = st.lists(st.tuples(st.sampled_from([A, Q, D]),
                           st.lists(st.integers(1, 40), max_size=25)), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(calls, min_size=1, max_size=5))
async def test_the_ledger_matches_a_row_by_row_model(
        pool: asyncpg.Pool, schema: str, batches: list[list[Call]]) -> None:
    """Any sequence of batches, each with several outcomes over overlapping row numbers,
    leaves what the one-row-per-record rule leaves: the first outcome stays unless it was
    quarantined and a final one came."""
    model: dict[tuple[str, str, str, int], str] = {}
    async with pool.acquire() as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await prepare(conn, schema)
        for batch in batches:
            outcomes: dict[str, list[tuple[str, str, str, int]]] = {}
            for outcome, numbers in batch:
                outcomes.setdefault(outcome, []).extend(("east", "w1", "item", n)
                                                        for n in numbers)
            async with conn.transaction():
                await accounting.record(conn, schema, "silver", outcomes)
            given_now: dict[tuple[str, str, str, int], str] = {}
            for outcome, rows in outcomes.items():
                for row in rows:
                    if given_now.get(row) in (None, Q):
                        given_now[row] = outcome
            for row, outcome in given_now.items():
                if model.get(row) in (None, Q) and (row not in model or outcome != Q):
                    model[row] = outcome
        assert await ledger(conn, schema) == model


async def test_two_writers_racing_over_the_same_rows_count_each_row_once(
        pool: asyncpg.Pool, schema: str) -> None:
    """The second writer comes while the first one's runs are not committed yet: it waits
    for them (the lock per division, window and table), or it would find its rows new."""
    def rows(numbers: range) -> list[tuple[str, str, str, int]]:
        return [("east", "w1", "item", n) for n in numbers]

    async with pool.acquire() as first, pool.acquire() as second:
        await prepare(first, schema)
        pid = await second.fetchval("SELECT pg_backend_pid()")

        async def write_second() -> None:
            async with second.transaction():
                await accounting.record(second, schema, "silver", {Q: rows(range(150, 500))})

        async with first.transaction():
            await accounting.record(first, schema, "silver", {A: rows(range(1, 300))})
            racing = asyncio.create_task(write_second())
            while not racing.done() and not await pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
                    " AND wait_event_type = 'Lock'", pid):
                pass  # until the second writer waits for the first or has written
        await racing
    found = await ledger(pool, schema)
    assert len(found) == 499
    assert all(o == A for (_, _, _, n), o in found.items() if n < 300)


async def test_migrate_moves_an_old_row_per_record_ledger_into_runs(
        pool: asyncpg.Pool, schema: str) -> None:
    old = TableShape(
        "_rows", {"division": "text", "window": "text", "table_name": "text", "row": "bigint",
                  "outcome": "text", "layer": "text"},
        ("division", "window", "table_name", "row"))
    stored = {("east", "w1", "item", n): (Q if n in (4, 5, 9) else A) for n in range(1, 11)}
    stored[("west", "w1", "item", 3)] = A
    async with pool.acquire() as conn:
        await migrate(conn, schema, [old])
        await conn.executemany(f'INSERT INTO "{schema}"."_rows" VALUES ($1, $2, $3, $4, $5,'
                               " 'silver')", [(*k, v) for k, v in stored.items()])
        plan = await migrate(conn, schema, [accounting.SHAPE], [accounting.view(schema)],
                             dry_run=True)
        assert "move table _rows into _row_ranges (and drop _rows)" in plan.lines()
        await migrate(conn, schema, [accounting.SHAPE], [accounting.view(schema)])
        runs = await conn.fetchval(f'SELECT count(*) FROM "{schema}"."_row_ranges"')
        again = await migrate(conn, schema, [accounting.SHAPE], [accounting.view(schema)])

    assert await ledger(pool, schema) == stored
    assert runs == 6  # east: 1-3 A, 4-5 Q, 6-8 A, 9 Q, 10 A; west: 3 A
    assert not again.pending and not again.views
    assert isinstance(accounting.view(schema), View)
