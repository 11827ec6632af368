"""Messages between layers, cleaning rules and log redaction: small unit tests."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import msgspec
import pytest

from assay.contracts.config import Normalise, TableConfig
from assay.contracts.messages import Record, TableEnd, json_decoder, msgpack_decoder
from assay.logs import redact
from assay.processors.cleaning import RowCleaner
from assay.processors.normalise import CoercionError


def test_a_newer_writer_with_added_fields_is_still_read() -> None:
    newer = {"type": "record", "v": 2, "division": "d", "table": "t", "window": "w", "row": 1,
             "payload": {"a": "1"}, "priority": "high", "trace": {"id": 7}}
    record = json_decoder.decode(msgspec.json.encode(newer))
    assert isinstance(record, Record) and record.v == 2 and record.payload == {"a": "1"}
    packed = msgspec.msgpack.encode({**newer, "type": "table_end", "rows": 3})
    assert isinstance(msgpack_decoder.decode(packed), TableEnd)


def test_a_message_missing_an_envelope_field_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="row"):
        json_decoder.decode(b'{"type":"record","division":"d","table":"t","window":"w",'
                            b'"payload":{}}')


def test_passwords_in_urls_are_masked() -> None:
    assert redact("connecting to postgresql://app:s3cret@db:5432/x") == (
        "connecting to postgresql://app:***@db:5432/x")
    assert redact("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def table(**normalise: Normalise) -> TableConfig:
    return TableConfig(columns={"n": "integer", "x": "number", "d": "date", "t": "timestamp",
                                "b": "boolean", "s": "text"}, key=["n"],
                       timezone="America/New_York", normalise=normalise)


def test_coercion_of_each_type_from_text() -> None:
    row = RowCleaner(table(), {})({"n": " 42 ", "x": "1.50", "d": "2024-02-29",
                                   "t": "2024-07-01 12:00:00", "b": "Yes", "s": "  hi  "})
    assert row == {"n": 42, "x": Decimal("1.50"), "d": dt.date(2024, 2, 29),
                   "t": dt.datetime(2024, 7, 1, 16, 0, tzinfo=dt.UTC), "b": True, "s": "hi"}


def test_sql_server_timestamps_with_nine_fractional_digits() -> None:
    row = RowCleaner(table(), {})({"t": "2014-09-12 11:15:07.263000000"})
    assert row["t"] == dt.datetime(2014, 9, 12, 15, 15, 7, 263000, tzinfo=dt.UTC)


def test_empty_strings_become_null_and_defaults_apply() -> None:
    cleaner = RowCleaner(table(s=Normalise(default="none given")), {})
    assert cleaner({"n": "", "s": "   "}) == {"n": None, "x": None, "d": None, "t": None,
                                             "b": None, "s": "none given"}


def test_case_and_whitespace_rules() -> None:
    cleaner = RowCleaner(table(s=Normalise(case="upper", collapse_whitespace=True)), {})
    assert cleaner({"s": "  new   york "})["s"] == "NEW YORK"
    keep = RowCleaner(table(s=Normalise(trim=False, empty_to_null=False)), {})
    assert keep({"s": "  "})["s"] == "  "


@pytest.mark.parametrize(("column", "value"), [("n", "4.5"), ("x", "NaN"), ("d", "31/02/2024"),
                                               ("b", "maybe"), ("t", "yesterday")])
def test_values_that_do_not_fit_name_the_column(column: str, value: str) -> None:
    with pytest.raises(CoercionError) as info:
        RowCleaner(table(), {})({column: value})
    assert info.value.field == column and value in str(info.value)


def test_numbers_sent_as_json_numbers_are_read_too() -> None:
    row = RowCleaner(table(), {})({"n": 7, "x": 2.5, "b": False})
    assert (row["n"], row["x"], row["b"]) == (7, Decimal("2.5"), False)


async def test_an_unreachable_redis_is_retried_then_reported() -> None:
    import redis.asyncio as aioredis
    import redis.exceptions
    from structlog.testing import capture_logs

    from assay.runner import warn_without_persistence

    client = aioredis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    with capture_logs() as logs, pytest.raises(redis.exceptions.ConnectionError):
        await warn_without_persistence(client, attempts=2)
    await client.aclose()
    assert [e["event"] for e in logs] == ["redis_unreachable"]
