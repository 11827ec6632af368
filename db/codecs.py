"""``timestamptz`` for the pool's connections, at half asyncpg's cost per value.

asyncpg's binary encoder spends about 0.6 µs on each ``timestamptz`` (it compares the value
with two naive infinities, makes a UTC copy and a ``timedelta``, then reads its parts); a
COPY of Silver rows pays it for every timestamp column of every row, and Bronze for each
row's ``_received_at``. Here an aware ``datetime`` is one subtraction and one floor division
(microseconds since 2000-01-01 UTC, which asyncpg's tuple format sends as is): about 0.3 µs.

Every value is encoded and decoded exactly as asyncpg does it (``tests/test_codecs.py``
compares the two): naive datetimes are local time, a ``date`` is local midnight,
``datetime.max`` and ``datetime.min`` are PostgreSQL's infinities and back.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
"""PostgreSQL's epoch: a ``timestamptz`` is microseconds since then."""
MICROSECOND = dt.timedelta(microseconds=1)
PG_INFINITY, PG_NEGATIVE_INFINITY = 2**63 - 1, -(2**63)
INFINITY, NEGATIVE_INFINITY = dt.datetime.max, dt.datetime.min
"""What asyncpg makes of PostgreSQL's infinities (naive, as asyncpg returns them)."""
_INFINITY_US = (INFINITY.replace(tzinfo=dt.UTC) - EPOCH) // MICROSECOND
_NEGATIVE_INFINITY_US = (NEGATIVE_INFINITY.replace(tzinfo=dt.UTC) - EPOCH) // MICROSECOND
"""Aware values at the ends of ``datetime``'s range, which asyncpg also sends as infinities."""


def encode_timestamptz(value: dt.datetime | dt.date) -> tuple[int]:
    """A ``datetime`` (or ``date``) as asyncpg's tuple form of ``timestamptz``."""
    try:
        micros: int = (value - EPOCH) // MICROSECOND
    except TypeError:  # naive, a date, or not a time at all
        return encode_timestamptz(_aware(value))
    if micros == _INFINITY_US:
        return (PG_INFINITY,)
    if micros == _NEGATIVE_INFINITY_US:
        return (PG_NEGATIVE_INFINITY,)
    return (micros,)


def _aware(value: object) -> dt.datetime:
    if isinstance(value, dt.datetime):
        if value == INFINITY:
            return INFINITY.replace(tzinfo=dt.UTC)
        if value == NEGATIVE_INFINITY:
            return NEGATIVE_INFINITY.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)  # naive: local time
    if isinstance(value, dt.date):
        local = dt.datetime.now(dt.UTC).astimezone().utcoffset()
        return dt.datetime(value.year, value.month, value.day,
                           tzinfo=dt.timezone(local or dt.timedelta(0)))
    raise TypeError(f"expected a datetime.date or datetime.datetime instance, got "
                    f"{type(value).__name__!r}")


def decode_timestamptz(value: tuple[int]) -> dt.datetime:
    micros = value[0]
    if micros == PG_INFINITY:
        return INFINITY
    if micros == PG_NEGATIVE_INFINITY:
        return NEGATIVE_INFINITY
    return EPOCH + dt.timedelta(microseconds=micros)


async def set_codecs(conn: asyncpg.Connection) -> None:
    """Install the codecs on a new connection (the pool's ``init``)."""
    await conn.set_type_codec("timestamptz", schema="pg_catalog", encoder=encode_timestamptz,
                              decoder=decode_timestamptz, format="tuple")
