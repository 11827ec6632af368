"""Silver's cleaning of one table's row: per-column normalisation, then type coercion.

The coercers, and ``ReferenceCleaner``: the cleaning as one closure per column, the
behaviour that the compiled ``cleaning.RowCleaner`` Silver runs must match exactly. A
value that cannot be coerced to its column's type raises ``CoercionError`` naming the
column, the value and the expected type; Silver quarantines the row with it.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from assay.contracts.config import Normalise, TableConfig
from assay.contracts.messages import BIGINT, Record

Cleaner = Callable[[str | None], str | None]
Coercer = Callable[[str], Any]

SPACES = re.compile(r"\s+")
TRUE = {"true", "t", "yes", "y", "1"}
FALSE = {"false", "f", "no", "n", "0"}
PARSED = 4096
"""Distinct date and timestamp texts each column keeps parsed (values are immutable)."""


class CoercionError(ValueError):
    """A value that does not fit its column's type."""

    def __init__(self, field: str, value: str, expected: str) -> None:
        super().__init__(f"field {field!r}: {value!r} is not a valid {expected}")
        self.field = field
        self.value = value
        self.expected = expected


def cleaner(rule: Normalise) -> Cleaner:
    """The text clean-up of one column, as one closure."""
    trim, collapse, case = rule.trim, rule.collapse_whitespace, rule.case
    empty_to_null, default = rule.empty_to_null, rule.default

    def clean(value: str | None) -> str | None:
        if value is None:
            return default
        if trim:
            value = value.strip()
        if collapse:
            value = SPACES.sub(" ", value)
        if case == "upper":
            value = value.upper()
        elif case == "lower":
            value = value.lower()
        if empty_to_null and not value:
            return default
        return value

    return clean


NUMERIC_DIGITS = (131_072, 16_383)
"""PostgreSQL ``numeric``: at most this many digits before and after the decimal point."""


def _integer(text: str) -> int:
    if len(text) <= 18:  # 18 characters hold no integer outside bigint
        try:
            return int(text)
        except ValueError:
            pass
    try:
        value = int(text) if len(text) <= 20 else _integral(Decimal(text))
    except ValueError:
        value = _integral(Decimal(text))
    if not BIGINT[0] <= value <= BIGINT[1]:  # an integer column is PostgreSQL bigint
        raise ValueError(f"{text} is outside bigint")
    return value


def _integral(number: Decimal) -> int:
    if not number.is_finite() or number.adjusted() > 19 or number != number.to_integral_value():
        raise ValueError(str(number))
    return int(number)


def _number(text: str) -> Decimal:
    number = Decimal(text)
    if (len(text) <= NUMERIC_DIGITS[1] and "e" not in text and "E" not in text
            and number.is_finite()):
        return number  # without an exponent, no more digits than characters
    if (not number.is_finite() or number.adjusted() >= NUMERIC_DIGITS[0]
            or number.as_tuple().exponent < -NUMERIC_DIGITS[1]):  # type: ignore[operator]
        raise ValueError(text)
    return number


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError(text)


def _timestamp_parser(formats: list[str], zone: ZoneInfo) -> Coercer:
    # Exports repeat their timestamps (an order's date on each of its lines): the parse,
    # and above all the time zone conversion, is done once per distinct text.
    @functools.lru_cache(maxsize=PARSED)
    def parse(text: str) -> dt.datetime:
        value = _iso_datetime(text)
        if value is None:
            for fmt in formats:
                try:
                    value = dt.datetime.strptime(text, fmt)
                    break
                except ValueError:
                    continue
            else:
                raise ValueError(text)
        if value.tzinfo is None:
            value = value.replace(tzinfo=zone)
        return value.astimezone(dt.UTC)

    return parse


def _iso_datetime(text: str) -> dt.datetime | None:
    """ISO 8601, also with more than six fractional digits (SQL Server exports have 9)."""
    dot = text.find(".")
    if dot != -1:
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        if end - dot > 7:
            text = text[: dot + 7] + text[end:]
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def _date_parser(formats: list[str]) -> Coercer:
    @functools.lru_cache(maxsize=PARSED)
    def parse(text: str) -> dt.date:
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
        for fmt in formats:
            try:
                return dt.datetime.strptime(text, fmt).date()
            except ValueError:
                continue
        stamp = _iso_datetime(text)
        if stamp is not None and stamp.time() == dt.time():
            return stamp.date()
        raise ValueError(text)

    return parse


def coercer(column_type: str, table: TableConfig) -> Coercer | None:
    """Text to the column's Python type; None for text columns."""
    if column_type == "integer":
        return _integer
    if column_type == "number":
        return _number
    if column_type == "boolean":
        return _boolean
    if column_type == "date":
        return _date_parser(table.date_formats)
    if column_type == "timestamp":
        return _timestamp_parser(table.timestamp_formats, ZoneInfo(table.timezone))
    return None


class ReferenceCleaner:
    """Normalises and types the raw and derived values of one table's rows.

    Each column gets one closure doing its clean-up and its coercion; the common case
    (trim, empty to null, no default, no case change) takes a short path. This is the
    reference the compiled ``cleaning.RowCleaner`` is tested against.
    """

    def __init__(self, table: TableConfig, derived_types: Mapping[str, str]) -> None:
        types = {**table.columns, **derived_types}
        self.steps: list[tuple[str, Callable[[Any], Any]]] = [
            (column, _column_step(column, column_type, table.normalise.get(column), table))
            for column, column_type in types.items()
        ]

    def __call__(self, values: Mapping[str, Any]) -> dict[str, Any]:
        get = values.get
        return {column: step(get(column)) for column, step in self.steps}


def _column_step(column: str, column_type: str, rule: Normalise | None,
                 table: TableConfig) -> Callable[[Any], Any]:
    coerce = coercer(column_type, table)
    errors = (ValueError, InvalidOperation, ArithmeticError)
    if rule is None or rule == Normalise():

        def plain(value: Any) -> Any:
            if value is None:
                return None
            if value.__class__ is not str:
                value = as_text(value)
            value = value.strip()
            if not value:
                return None
            if coerce is None:
                return value
            try:
                return coerce(value)
            except errors as exc:
                raise CoercionError(column, value, column_type) from exc

        return plain
    clean = cleaner(rule)

    def configured(value: Any) -> Any:
        if value is not None and value.__class__ is not str:
            value = as_text(value)
        value = clean(value)
        if value is None or coerce is None:
            return value
        try:
            return coerce(value)
        except errors as exc:
            raise CoercionError(column, value, column_type) from exc

    return configured


def as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


NUL = "NUL character in a text value (PostgreSQL text cannot hold it)"


def holds_nul(record: Record, derived: Mapping[str, str | None] | None = None) -> bool:
    """Whether a text of a record (or its derived values) holds NUL, which no PostgreSQL
    text can: such a record is refused at a layer's door. A layer asks only after PostgreSQL
    has refused a batch for it (``db.pool.refusing_nul``); the batch is then written again
    without the records that hold one."""
    # JSON writes NUL as \u0000 (and a backslash as \\): no such escape, no NUL.
    names = record.division + record.window + record.table + (
        record.seq if isinstance(record.seq, str) else "")
    if b"\\u0000" not in _json(record.payload) and (
            not derived or b"\\u0000" not in _json(derived)):
        return "\x00" in names
    values = [*record.payload.items(), *(derived or {}).items()]
    return "\x00" in names or any(
        "\x00" in k or (isinstance(v, str) and "\x00" in v) for k, v in values)


_json = msgspec.json.encode
