"""assay's ``timestamptz`` codec gives what asyncpg's own gives, value for value, both ways."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from assay.db.codecs import decode_timestamptz, encode_timestamptz, set_codecs

Pair = tuple[asyncpg.Connection, asyncpg.Connection]

times = st.one_of(
    st.datetimes(timezones=st.timezones()),
    st.datetimes(min_value=dt.datetime(1900, 1, 1)),  # naive: local time
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(9999, 12, 30)),
    st.sampled_from([dt.datetime.max, dt.datetime.min, dt.datetime.max.replace(tzinfo=dt.UTC),
                     dt.datetime.min.replace(tzinfo=dt.UTC),
                     dt.datetime(2000, 1, 1, tzinfo=dt.UTC)]),
)


@pytest.fixture
async def pair(database_url: str) -> AsyncIterator[Pair]:
    """A connection with asyncpg's codec and one with assay's."""
    theirs = await asyncpg.connect(database_url)
    ours = await asyncpg.connect(database_url)
    await set_codecs(ours)
    try:
        yield theirs, ours
    finally:
        await theirs.close()
        await ours.close()


async def outcome(conn: asyncpg.Connection, query: str, value: object) -> object:
    try:
        return await conn.fetchval(query, value)
    except (asyncpg.DataError, OverflowError, TypeError, ValueError) as exc:
        return type(exc)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=times)
@example(value=dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC))
@example(value=dt.datetime(2014, 5, 31, tzinfo=dt.timezone(dt.timedelta(hours=-7))))
async def test_values_go_in_and_come_back_as_with_asyncpg(pair: Pair, value: object) -> None:
    theirs, ours = pair
    sent = await outcome(theirs, "SELECT $1::timestamptz::text", value)
    assert await outcome(ours, "SELECT $1::timestamptz::text", value) == sent
    if isinstance(sent, str):
        back = await outcome(theirs, "SELECT $1::text::timestamptz", sent)
        mine = await outcome(ours, "SELECT $1::text::timestamptz", sent)
        assert mine == back
        assert getattr(mine, "tzinfo", None) == getattr(back, "tzinfo", None)


async def test_what_is_not_a_time_is_refused_as_asyncpg_refuses_it(pair: Pair) -> None:
    theirs, ours = pair
    for value in ("2014-05-31", 1_400_000_000, None):
        assert (await outcome(ours, "SELECT $1::timestamptz::text", value)
                == await outcome(theirs, "SELECT $1::timestamptz::text", value))


def test_the_codec_round_trips_and_keeps_the_infinities() -> None:
    stamp = dt.datetime(2011, 5, 31, 12, 0, 0, 1, tzinfo=dt.UTC)
    assert decode_timestamptz(encode_timestamptz(stamp)) == stamp
    assert encode_timestamptz(dt.datetime.max) == (2**63 - 1,)
    assert decode_timestamptz((-(2**63),)) == dt.datetime.min
    with pytest.raises(TypeError, match="got 'str'"):
        encode_timestamptz("2011-05-31")  # type: ignore[arg-type]
