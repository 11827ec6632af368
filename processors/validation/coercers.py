"""Named coercers: the values a JSON schema may give to Cerberus's ``coerce`` rule.

Each coercer takes one value and returns the coerced value or raises; Cerberus turns the
exception's text into the error "field 'x' cannot be coerced: <text>", so the texts here
are written to be read in a dead-letter report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

_TRUE = frozenset({"true", "t", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "off"})


def _kind(value: Any) -> str:
    return type(value).__name__


def to_integer(value: Any) -> int:
    """An int from an int, a whole float or Decimal, or a string of digits (bools refused)."""
    if type(value) is str:
        return int(value)
    if isinstance(value, bool):
        raise TypeError("expected an integer, got bool")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return int(value)
    if isinstance(value, (float, Decimal)):
        whole = int(value)
        if whole != value:
            raise ValueError(f"{value!r} is not a whole number")
        return whole
    raise TypeError(f"expected a string or a number, got {_kind(value)}")


def to_float(value: Any) -> float:
    """A finite float from a number or a numeric string (bools refused)."""
    if type(value) is not str:
        if isinstance(value, bool):
            raise TypeError("expected a number, got bool")
        if not isinstance(value, (str, int, float, Decimal)):
            raise TypeError(f"expected a string or a number, got {_kind(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{value!r} is not a finite number")
    return result


def to_decimal(value: Any) -> Decimal:
    """A finite Decimal for money: floats go through their shortest repr, so 0.1 stays 0.1."""
    if isinstance(value, str):
        try:
            result = Decimal(value)  # surrounding whitespace and digit underscores allowed
        except InvalidOperation:
            raise ValueError(f"invalid decimal literal: {value!r}") from None
    elif isinstance(value, bool):
        raise TypeError("expected a number, got bool")
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, Decimal):
        result = value
    else:
        raise TypeError(f"expected a string or a number, got {_kind(value)}")
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return result


def to_string(value: Any) -> str:
    """A string from a string, a number or a date (ISO format); None, bools, containers refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        raise TypeError(f"expected a string or a number, got {_kind(value)}")
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"expected a string or a number, got {_kind(value)}")


def to_boolean(value: Any) -> bool:
    """A bool from a bool, 0 or 1, or a common spelling: true/false, t/f, yes/no, y/n, on/off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError(f"{value!r} is not a boolean")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TypeError(f"expected a boolean, got {_kind(value)} {value!r}")


def to_date(value: Any) -> date:
    """A date from a date or an ISO 8601 date string; datetimes refused (they carry a time)."""
    if isinstance(value, str):
        return date.fromisoformat(value.strip())
    if isinstance(value, datetime):
        raise TypeError("expected a date, got datetime")
    if isinstance(value, date):
        return value
    raise TypeError(f"expected an ISO date string, got {_kind(value)}")


def to_datetime(value: Any) -> datetime:
    """A datetime from a datetime or an ISO 8601 string (a trailing Z is accepted)."""
    if isinstance(value, str):
        return datetime.fromisoformat(value.strip())
    if isinstance(value, datetime):
        return value
    raise TypeError(f"expected an ISO datetime string, got {_kind(value)}")


def _not_text(value: Any) -> TypeError:
    return TypeError(f"expected a string, got {_kind(value)}")


def to_upper(value: Any) -> str:
    """The string in upper case."""
    if isinstance(value, str):
        return value.upper()
    raise _not_text(value)


def to_lower(value: Any) -> str:
    """The string in lower case."""
    if isinstance(value, str):
        return value.lower()
    raise _not_text(value)


def to_stripped(value: Any) -> str:
    """The string without leading and trailing whitespace."""
    if isinstance(value, str):
        return value.strip()
    raise _not_text(value)


def nullify_empty(value: Any) -> Any:
    """None for an empty or all-whitespace string; any other value unchanged."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


COERCERS: dict[str, Callable[[Any], Any]] = {
    "integer": to_integer,
    "float": to_float,
    "decimal": to_decimal,
    "string": to_string,
    "boolean": to_boolean,
    "date": to_date,
    "datetime": to_datetime,
    "upper": to_upper,
    "lower": to_lower,
    "strip": to_stripped,
    "nullify_empty": nullify_empty,
}
"""The names a schema's ``coerce`` rule may use, each with its function."""
