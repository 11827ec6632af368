"""Silver's cleaning made cheaper gives the same answers: the compiled row cleaner, the
number and integer fast paths, and the NUL check of a record."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from assay.contracts.config import Normalise, TableConfig
from assay.contracts.messages import BIGINT, Record
from assay.processors.cleaning import RowCleaner, picker
from assay.processors.normalise import (
    NUMERIC_DIGITS,
    CoercionError,
    ReferenceCleaner,
    _integer,
    _integral,
    _number,
    holds_nul,
)

TYPES = ("integer", "number", "boolean", "date", "timestamp", "text")
COLUMNS = ("a", "b", "c", "d", "e", "f")

texts = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=" \t\n\u00a0\u3000-+._eE0123456789", max_size=14),
    st.sampled_from(["", "  ", " 42 ", "4.5", "1e3", "NaN", "-Infinity", "yes", "N",
                     "2024-02-29", " 2014-09-12 11:15:07.263000000 ", "31/02/2024",
                     "9223372036854775807", "-9223372036854775809", "1_000", "٣", "  New  York"]),
)
values = st.one_of(st.none(), texts, st.integers(), st.floats(), st.booleans())
rules = st.builds(Normalise, trim=st.booleans(), collapse_whitespace=st.booleans(),
                  case=st.sampled_from([None, "upper", "lower"]), empty_to_null=st.booleans(),
                  default=st.one_of(st.none(), texts))


@st.composite
def tables(draw: st.DrawFn) -> tuple[TableConfig, dict[str, str]]:
    names = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=6, unique=True))
    types = {n: draw(st.sampled_from(TYPES)) for n in names}
    raw = names[: draw(st.integers(1, len(names)))]
    normalise = {n: draw(rules) for n in names if draw(st.booleans())}
    table = TableConfig(columns={n: types[n] for n in raw}, key=[raw[0]],
                        timezone=draw(st.sampled_from(["UTC", "America/New_York"])),
                        normalise=normalise)
    return table, {n: types[n] for n in names if n not in raw}


def outcome(clean: Any, row: dict[str, Any]) -> Any:
    try:
        return list(clean(row).items())
    except CoercionError as exc:
        return ("error", exc.field, exc.value, exc.expected, str(exc))


@settings(max_examples=400, deadline=None, database=None)
@given(tables(), st.lists(st.dictionaries(st.sampled_from(COLUMNS), values), max_size=4))
def test_compiled_cleaner_matches_the_reference(
        table: tuple[TableConfig, dict[str, str]], rows: list[dict[str, Any]]) -> None:
    config, derived = table
    compiled, reference = RowCleaner(config, derived), ReferenceCleaner(config, derived)
    for row in rows:
        assert outcome(compiled, row) == outcome(reference, row)


def test_the_compiled_source_holds_no_config_text() -> None:
    config = TableConfig(columns={'x"); import os; ("': "text"}, key=['x"); import os; ("'],
                         normalise={'x"); import os; ("': Normalise(default="'; evil")})
    source = RowCleaner(config, {}).source
    assert "import os" not in source and "evil" not in source


def number_checked(text: str) -> Decimal:
    """``_number`` before its fast path: every text's digits checked."""
    number = Decimal(text)
    if (not number.is_finite() or number.adjusted() >= NUMERIC_DIGITS[0]
            or number.as_tuple().exponent < -NUMERIC_DIGITS[1]):  # type: ignore[operator]
        raise ValueError(text)
    return number


def integer_checked(text: str) -> int:
    """``_integer`` before its fast path."""
    try:
        value = int(text) if len(text) <= 20 else _integral(Decimal(text))
    except ValueError:
        value = _integral(Decimal(text))
    if not BIGINT[0] <= value <= BIGINT[1]:
        raise ValueError(f"{text} is outside bigint")
    return value


numbers = st.one_of(texts, st.decimals().map(str), st.integers().map(str),
                    st.from_regex(r"\A[+-]?[0-9_]{0,25}(\.[0-9]{0,5})?([eE][+-]?[0-9]{1,6})?\Z"),
                    st.sampled_from(["1" * 17000, "0." + "1" * 16390, "1" * 16383 + ".5"]))


def verdict(coerce: Any, text: str) -> Any:
    try:
        value = coerce(text)
    except (ValueError, InvalidOperation, ArithmeticError) as exc:
        return ("error", type(exc))
    return (type(value), str(value))


ONE_COLUMN = {kind: TableConfig(columns={"n": kind}, key=["n"]) for kind in ("integer", "number")}
CLEANERS = {kind: (RowCleaner(config, {}), ReferenceCleaner(config, {}))
            for kind, config in ONE_COLUMN.items()}


@settings(max_examples=1000, deadline=None, database=None)
@given(numbers)
def test_number_and_integer_fast_paths_give_the_checked_verdicts(text: str) -> None:
    assert verdict(_number, text) == verdict(number_checked, text)
    assert verdict(_integer, text) == verdict(integer_checked, text)
    for compiled, reference in CLEANERS.values():  # as the compiled cleaner inlines them
        assert outcome(compiled, {"n": text}) == outcome(reference, {"n": text})


names = st.text(alphabet="ab\x00\\u0", min_size=1, max_size=6)
records = st.builds(Record, division=names, table=names, window=names,
                    row=st.integers(1, 9), payload=st.dictionaries(names, values, max_size=3),
                    seq=st.one_of(st.none(), names))


def texts(record: Record) -> list[str]:
    return [record.division, record.table, record.window, *record.payload,
            *(v for v in (record.seq, *record.payload.values()) if isinstance(v, str))]


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(records, max_size=5))
def test_the_nul_check_finds_every_record_that_holds_nul(batch: list[Record]) -> None:
    holding = [r for r in batch if any("\x00" in t for t in texts(r))]
    assert [r for r in batch if holds_nul(r)] == holding


@settings(max_examples=300, deadline=None, database=None)
@given(records, st.dictionaries(names, st.one_of(st.none(), names), max_size=2))
def test_the_nul_check_reads_a_landed_items_derived_values(
        record: Record, derived: dict[str, str | None]) -> None:
    expected = (any("\x00" in t for t in texts(record))
                or any("\x00" in k or "\x00" in (v or "") for k, v in derived.items()))
    assert holds_nul(record, derived) is expected


@given(row=st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=4) | st.none(),
                           max_size=8), data=st.data())
def test_a_picker_copies_the_named_fields_as_a_comprehension_would(
        row: dict[str, Any], data: st.DataObject) -> None:
    fields = data.draw(st.lists(st.sampled_from(sorted(row)), unique=True) if row
                       else st.just([]))
    picked = picker(fields)(row)
    assert picked == {f: row[f] for f in fields}
    assert list(picked) == fields
    picked.clear()
    assert all(f in row for f in fields)  # a new dict: the row is untouched
