"""Silver's writer stages numbers as text and casts them: the stored values are those
asyncpg's binary ``numeric`` encoder would have stored, through insert, upsert and delete."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from assay.db.schema import migrate
from assay.db.silver import SilverWriter, silver_shape

numbers = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=None,
                min_value=Decimal("-1e30"), max_value=Decimal("1e30")),
    st.builds(lambda digits, exponent: Decimal(digits).scaleb(exponent),
              st.integers(-10**40, 10**40), st.integers(-60, 40)),
    st.none(),
)


def row(writer: SilverWriter, k: int, price: Decimal | None, entry: str,
        deleted: bool = False) -> tuple[Any, ...]:
    values = {"k": k, "price": price, "note": f"n{k}", "_division": "east", "_window": "w1",
              "_row": k, "_entry": entry, "_deleted": deleted}
    return tuple(values[c] for c in writer.columns)


async def writer_for(pool: asyncpg.Pool, schema: str) -> SilverWriter:
    shape = silver_shape("priced", {"k": "integer", "price": "number", "note": "text"}, ["k"])
    async with pool.acquire() as conn:
        await migrate(conn, schema, [shape])
    return SilverWriter(schema, shape, None)


async def stored(pool: asyncpg.Pool, schema: str) -> dict[int, tuple[str | None, bool]]:
    rows = await pool.fetch(f'SELECT k, price::text AS p, "_deleted" AS d'
                            f' FROM "{schema}"."silver_priced"')
    return {r["k"]: (r["p"], r["d"]) for r in rows}


async def binary(pool: asyncpg.Pool, value: Decimal | None) -> str | None:
    """What asyncpg's own encoder makes of the value, as PostgreSQL's text."""
    text: str | None = await pool.fetchval("SELECT $1::numeric::text", value)
    return text


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(numbers, min_size=1, max_size=12))
@example(values=[Decimal("20.1865"), Decimal("1E+3"), Decimal("-0"), Decimal("1E-7"),
                 Decimal("0.00"), Decimal("-123456789.000100"), None])
async def test_numbers_are_stored_as_the_binary_encoder_stores_them(
        pool: asyncpg.Pool, schema: str, values: list[Decimal | None]) -> None:
    writer = await writer_for(pool, schema)
    await pool.execute(f'TRUNCATE "{schema}"."silver_priced"')
    async with pool.acquire() as conn, conn.transaction():
        await writer.merge(conn, [row(writer, k, v, "e1") for k, v in enumerate(values)])
    expected = {k: (await binary(pool, v), False) for k, v in enumerate(values)}
    assert await stored(pool, schema) == expected


async def test_upserts_and_tombstones_go_through_the_same_stage(
        pool: asyncpg.Pool, schema: str) -> None:
    writer = await writer_for(pool, schema)
    async with pool.acquire() as conn:
        async with conn.transaction():
            await writer.merge(conn, [row(writer, 1, Decimal("1.5"), "e1"),
                                      row(writer, 2, Decimal("2.50"), "e1")])
        async with conn.transaction():  # 2 stored: the plain insert conflicts, the upsert runs
            await writer.merge(conn, [row(writer, 2, Decimal("9.99"), "e2"),
                                      row(writer, 3, Decimal("3E+2"), "e2"),
                                      row(writer, 1, None, "e2", deleted=True)])
        async with conn.transaction():  # an older version changes nothing
            await writer.merge(conn, [row(writer, 2, Decimal("0"), "e0")])
    assert await stored(pool, schema) == {
        1: ("1.5", True), 2: ("9.99", False), 3: ("300", False)}
    assert writer.first.skip > 0  # the conflict sent later batches straight to the upsert
