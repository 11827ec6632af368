"""The formula engine, called directly: config decoding, compile-time checks, per-row results."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from assay.contracts.formulas import Concat, Formulas, Operand
from assay.processors.formulas import (
    MASS_UNITS,
    CompiledFormulas,
    FormulaConfigError,
    FormulaError,
    compile_formulas,
)

COLUMNS = {
    "FirstName": "text", "LastName": "text", "Weight": "number", "Code": "text", "Qty": "integer",
    "Price": "number", "Day": "date", "Other": "date", "At": "timestamp", "Until": "timestamp",
    "Flag": "boolean", "Note": "text",
}
LA = "America/Los_Angeles"


def field(name: str, type_: str = "text", **spec: str) -> dict[str, Any]:
    return {"field": name, "type": type_, **spec}


def num(name: str) -> dict[str, Any]:
    return field(name, "number")


def day(name: str = "Day") -> dict[str, Any]:
    return field(name, "date", format="%Y-%m-%d")


def ts(name: str = "At", zone: str = LA) -> dict[str, Any]:
    return field(name, "timestamp", format="%Y-%m-%d %H:%M:%S", timezone=zone)


def value(v: object) -> dict[str, Any]:
    return {"value": v}


def ref(output: str) -> dict[str, Any]:
    return {"ref": output}


def compiled(formulas: dict[str, Any], columns: dict[str, str] = COLUMNS) -> CompiledFormulas:
    return compile_formulas("t", columns, msgspec.json.decode(msgspec.json.encode(formulas),
                                                              type=Formulas))


def out(formula: dict[str, Any], **row: str | None) -> object:
    return compiled({"out": formula}).apply(row)["out"]


def config_error(formula: dict[str, Any], columns: dict[str, str] = COLUMNS) -> str:
    with pytest.raises(FormulaConfigError) as caught:
        compiled({"out": formula}, columns)
    return str(caught.value)


def row_error(formula: dict[str, Any], **row: str | None) -> FormulaError:
    with pytest.raises(FormulaError) as caught:
        out(formula, **row)
    return caught.value


# -- the JSON shape --------------------------------------------------------------------------------


def test_json_decodes_into_tagged_structs() -> None:
    formulas = msgspec.json.decode(
        b'{"name": {"op": "concat", "args": [{"field": "FirstName"}], "separator": " "}}',
        type=Formulas,
    )
    assert formulas == {"name": Concat(args=[Operand(field="FirstName")], separator=" ")}


def test_unknown_op_is_refused_with_its_path() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"'multiply' - at `\$\[...\]\.op`"):
        msgspec.json.decode(b'{"x": {"op": "multiply", "args": []}}', type=Formulas)


def test_unknown_key_is_refused_with_its_path() -> None:
    doc = b'{"x": {"op": "upper", "arg": {"field": "Note", "typ": "text"}}}'
    with pytest.raises(msgspec.ValidationError, match=r"unknown field `typ` - at `\$\[...\]\.arg`"):
        msgspec.json.decode(doc, type=Formulas)


def test_operand_with_two_sources_is_refused() -> None:
    doc = b'{"x": {"op": "upper", "arg": {"field": "Note", "value": "a"}}}'
    with pytest.raises(msgspec.ValidationError, match=r"exactly one of .* at `\$\[...\]\.arg`"):
        msgspec.json.decode(doc, type=Formulas)


def test_arithmetic_needs_two_operands() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"length >= 2 - at `\$\[...\]\.args`"):
        msgspec.json.decode(b'{"x": {"op": "add", "args": [{"value": 1}]}}', type=Formulas)


# -- compile-time checks ---------------------------------------------------------------------------


def test_missing_field_names_table_formula_and_path() -> None:
    message = config_error({"op": "add", "args": [value(1), num("Wieght")]})
    assert message == ("table 't', formula 'out' at $.args[1]: field 'Wieght' is not a column "
                       "of the table (did you mean 'Weight'?)")


def test_forward_reference_is_refused() -> None:
    formulas = {"a": {"op": "upper", "arg": {"ref": "b"}}, "b": {"op": "trim", "arg": value("x")}}
    with pytest.raises(FormulaConfigError, match=r"'a' at \$\.arg: ref 'b' is defined later"):
        compiled(formulas)


def test_unknown_reference_is_refused() -> None:
    assert "ref 'nope' is not an output" in config_error({"op": "upper", "arg": {"ref": "nope"}})


def test_self_reference_is_refused() -> None:
    assert "ref 'out' is this formula itself" in config_error({"op": "trim", "arg": {"ref": "out"}})


def test_reference_to_earlier_output_is_used() -> None:
    formulas = {"a": {"op": "trim", "arg": field("Note")}, "b": {"op": "upper", "arg": ref("a")}}
    assert compiled(formulas).apply({"Note": " x "}) == {"a": "x", "b": "X"}


def test_output_named_like_a_column_is_refused() -> None:
    with pytest.raises(FormulaConfigError, match="output 'Note' has the same name as a column"):
        compiled({"Note": {"op": "trim", "arg": field("Note")}})


def test_output_types_are_inferred() -> None:
    formulas = {
        "a": {"op": "concat", "args": [field("Note")]},
        "b": {"op": "add", "args": [field("Qty", "integer"), value(1)]},
        "c": {"op": "div", "args": [field("Qty", "integer"), value(2)]},
        "d": {"op": "date_part", "arg": day(), "part": "year"},
        "e": {"op": "if", "when": {"cmp": "is_null", "arg": ts()}, "then": ts("Until")},
        "f": {"op": "coalesce", "args": [field("Flag", "boolean")]},
    }
    assert compiled(formulas).output_types == {
        "a": "text", "b": "integer", "c": "number", "d": "integer", "e": "timestamp",
        "f": "boolean",
    }


def test_adding_a_date_to_a_number_is_refused() -> None:
    message = config_error({"op": "add", "args": [num("Weight"), day()]})
    assert message.endswith("at $.args[1]: arithmetic needs number or integer, but field 'Day' "
                            "is date")


def test_date_part_of_a_number_is_refused() -> None:
    assert "date_part needs date or timestamp" in config_error(
        {"op": "date_part", "arg": num("Weight"), "part": "year"}
    )


def test_convert_of_text_is_refused() -> None:
    message = config_error({"op": "convert", "arg": field("Weight"), "from": "pound", "to": "gram"})
    assert "at $.arg: convert needs number or integer, but field 'Weight' is text" in message


def test_column_declared_date_cannot_be_read_as_number() -> None:
    message = config_error({"op": "round", "arg": num("Day")})
    assert "at $.arg.type: field 'Day' is declared date and cannot be read as number" in message


def test_column_declared_text_may_be_read_as_number() -> None:
    assert out({"op": "round", "arg": num("Note")}, Note="2.5") == 3


def test_date_without_format_is_refused() -> None:
    assert "need a strptime `format`" in config_error(
        {"op": "date_part", "arg": field("Day", "date"), "part": "day"}
    )


def test_unusable_format_is_refused() -> None:
    message = config_error({"op": "date_part", "arg": field("Day", "date", format="%Y-%Q"),
                            "part": "day"})
    assert "at $.arg.format: format '%Y-%Q' is not usable" in message


def test_unknown_timezone_is_refused() -> None:
    assert "timezone 'Mars/Base' is not an IANA zone name" in config_error(
        {"op": "date_part", "arg": ts(zone="Mars/Base"), "part": "day", "timezone": "UTC"}
    )


def test_format_on_a_number_is_refused() -> None:
    message = config_error({"op": "round", "arg": field("Weight", "number", format="%d")})
    assert "at $.arg.format: format applies only to types date and timestamp" in message


def test_untyped_null_literal_is_refused() -> None:
    assert "a null value needs a type" in config_error({"op": "upper", "arg": value(None)})


def test_typed_literal_is_read_like_raw_text() -> None:
    start = {"value": "2020-02-28", "type": "date", "format": "%Y-%m-%d"}
    assert out({"op": "duration", "start": start, "end": day(), "unit": "days"},
               Day="2020-03-01") == 2


def test_bad_typed_literal_is_refused_at_compile_time() -> None:
    literal = {"value": "2021-02-29", "type": "date", "format": "%Y-%m-%d"}
    assert "is not a date in format" in config_error(
        {"op": "date_part", "arg": literal, "part": "day"}
    )


# -- reading raw text ------------------------------------------------------------------------------


def test_unparsable_number_is_a_row_error_naming_the_value() -> None:
    error = row_error({"op": "round", "arg": num("Weight")}, Weight="12,5")
    assert (error.field, error.reason) == ("out", "field 'Weight' value '12,5' is not a number")


@pytest.mark.parametrize("text", ["NaN", "Infinity", "1e"])
def test_non_finite_number_is_a_row_error(text: str) -> None:
    assert row_error({"op": "round", "arg": num("Weight")}, Weight=text).field == "out"


def test_blank_number_reads_as_null() -> None:
    assert out({"op": "round", "arg": num("Weight")}, Weight="  ") is None


def test_text_is_read_as_is() -> None:
    assert out({"op": "concat", "args": [field("Note")]}, Note="  ") == "  "


def test_integer_with_a_fraction_is_a_row_error() -> None:
    assert "is not an integer" in row_error(
        {"op": "add", "args": [field("Qty", "integer"), value(1)]}, Qty="12.0"
    ).reason


@pytest.mark.parametrize(("text", "expected"), [("Yes", True), ("0", False), (" t ", True)])
def test_boolean_words(text: str, expected: bool) -> None:
    assert out({"op": "coalesce", "args": [field("Flag", "boolean")]}, Flag=text) is expected


def test_impossible_date_is_a_row_error() -> None:
    error = row_error({"op": "date_part", "arg": day(), "part": "day"}, Day="2021-02-29")
    assert error.reason == "field 'Day' value '2021-02-29' is not a date in format '%Y-%m-%d'"


def test_timestamp_is_read_in_its_zone_and_returned_in_utc() -> None:
    assert out({"op": "coalesce", "args": [ts()]}, At="2021-07-01 12:00:00") == datetime(
        2021, 7, 1, 19, tzinfo=UTC
    )


def test_repeated_local_time_is_the_first_one() -> None:
    assert out({"op": "coalesce", "args": [ts()]}, At="2021-11-07 01:30:00") == datetime(
        2021, 11, 7, 8, 30, tzinfo=UTC
    )


def test_skipped_local_time_is_a_row_error() -> None:
    error = row_error({"op": "coalesce", "args": [ts()]}, At="2021-03-14 02:30:00")
    assert "does not exist in America/Los_Angeles" in error.reason


def test_timestamp_with_an_offset_keeps_it() -> None:
    arg = field("At", "timestamp", format="%Y-%m-%dT%H:%M:%S%z", timezone=LA)
    assert out({"op": "coalesce", "args": [arg]}, At="2021-07-01T12:00:00+02:00") == datetime(
        2021, 7, 1, 10, tzinfo=UTC
    )


# -- concat ----------------------------------------------------------------------------------------


def test_concat_joins_names() -> None:
    formula = {"op": "concat", "args": [field("FirstName"), field("LastName")], "separator": " "}
    assert out(formula, FirstName="Ada", LastName="Lovelace") == "Ada Lovelace"


def test_concat_writes_each_type_as_text() -> None:
    args = [num("Weight"), day(), field("Flag", "boolean"), ts()]
    formula = {"op": "concat", "args": args, "separator": "|"}
    row = {"Weight": "1E+3", "Day": "2020-02-29", "Flag": "1", "At": "2021-01-01 00:00:00"}
    assert out(formula, **row) == "1000|2020-02-29|true|2021-01-01T08:00:00+00:00"


def test_concat_with_a_null_is_null() -> None:
    formula = {"op": "concat", "args": [field("FirstName"), field("LastName")]}
    assert out(formula, FirstName="Ada", LastName=None) is None


def test_concat_skip_nulls_leaves_out_null_and_its_separator() -> None:
    formula = {"op": "concat", "args": [field("FirstName"), field("Note"), field("LastName")],
               "separator": " ", "skip_nulls": True}
    assert out(formula, FirstName="Ada", Note=None, LastName="Lovelace") == "Ada Lovelace"


def test_concat_skip_nulls_of_only_nulls_is_null() -> None:
    formula = {"op": "concat", "args": [field("FirstName")], "skip_nulls": True}
    assert out(formula, FirstName=None) is None


# -- convert ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "source", "target", "expected"),
    [
        ("1", "pound", "kilogram", "0.45359237"),
        ("1", "short_ton", "pound", "2000"),
        ("1", "long_ton", "pound", "2240"),
        ("1", "tonne", "kilogram", "1000"),
        ("1000", "gram", "kilogram", "1"),
        ("2240", "pound", "long_ton", "1"),
        ("1", "pound", "tonne", "0.00045359237"),
        ("1", "long_ton", "tonne", "1.0160469088"),
    ],
)
def test_convert_uses_exact_factors(amount: str, source: str, target: str, expected: str) -> None:
    formula = {"op": "convert", "arg": num("Weight"), "from": source, "to": target}
    assert out(formula, Weight=amount) == Decimal(expected)


def by_code(to: str = "gram") -> dict[str, Any]:
    return {"op": "convert", "arg": num("Weight"), "from_code": field("Code"),
            "units": {"LB": "pound", "G": "gram"}, "to": to}


@pytest.mark.parametrize(
    ("code", "grams"), [("LB ", "907.18474"), ("G  ", "2"), (" LB", "907.18474")]
)
def test_convert_reads_padded_unit_codes(code: str, grams: str) -> None:
    assert out(by_code(), Weight="2", Code=code) == Decimal(grams)


def test_convert_unknown_code_is_a_row_error() -> None:
    error = row_error(by_code(), Weight="1", Code="KG ")
    assert error.reason == "field 'Code' value 'KG ' is not a known unit code (G, LB)"


@pytest.mark.parametrize("code", [None, "   "])
def test_convert_without_a_unit_code_is_null(code: str | None) -> None:
    assert out(by_code(), Weight="1", Code=code) is None


def test_convert_of_null_is_null() -> None:
    assert out(by_code(), Weight=None, Code="LB") is None


@pytest.mark.parametrize(
    ("formula", "path"),
    [
        (by_code("ton"), "$.to"),
        ({**by_code(), "units": {"T ": "ton"}}, "$.units['T ']"),
        ({"op": "convert", "arg": num("Weight"), "from": "ton", "to": "gram"}, "$.from"),
    ],
)
def test_ton_is_refused_as_ambiguous(formula: dict[str, Any], path: str) -> None:
    message = config_error(formula)
    assert message.endswith(f"at {path}: unit 'ton' is ambiguous: choose short_ton (2000 lb), "
                            "long_ton (2240 lb) or tonne (1000 kg)")


def test_unknown_unit_is_refused() -> None:
    assert "unit 'pund' is not one of" in config_error(
        {"op": "convert", "arg": num("Weight"), "from": "pund", "to": "gram"}
    )


def test_convert_with_both_unit_sources_is_refused() -> None:
    assert "either `from` or `from_code`" in config_error({**by_code(), "from": "pound"})


def test_unit_codes_equal_after_trimming_are_refused() -> None:
    assert "unit code 'LB' is given twice" in config_error(
        {**by_code(), "units": {"LB": "pound", "LB ": "pound"}}
    )


units = st.sampled_from(MASS_UNITS)
amounts = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1e9"), places=6)


@given(source=units, target=units, amount=amounts)
def test_convert_there_and_back_returns_the_input(source: str, target: str,
                                                  amount: Decimal) -> None:
    there = {"op": "convert", "arg": num("Weight"), "from": source, "to": target}
    back = {"op": "convert", "arg": ref("there"), "from": target, "to": source}
    result = compiled({"there": there, "back": back}).apply({"Weight": str(amount)})["back"]
    assert isinstance(result, Decimal)
    assert abs(result - amount) <= amount * Decimal("1e-26")


# -- date_part and duration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "part", "expected"),
    [
        ("2020-02-29", "year", 2020),
        ("2020-02-29", "month", 2),
        ("2020-02-29", "day", 29),
        ("2020-02-29", "day_of_year", 60),
        ("2020-02-29", "weekday", 6),
        ("2020-03-31", "quarter", 1),
        ("2020-04-01", "quarter", 2),
        ("2020-12-31", "quarter", 4),
        ("2020-12-31", "day_of_year", 366),
        ("2020-12-31", "week", 53),
        ("2021-01-01", "week", 53),
        ("2021-01-01", "iso_year", 2020),
        ("2021-01-01", "year", 2021),
        ("2021-01-04", "week", 1),
        ("2021-01-04", "weekday", 1),
    ],
)
def test_date_parts(text: str, part: str, expected: int) -> None:
    assert out({"op": "date_part", "arg": day(), "part": part}, Day=text) == expected


def test_date_part_reads_a_timestamp_in_its_timezone() -> None:
    formula = {"op": "date_part", "arg": ts(), "part": "day", "timezone": LA}
    assert out(formula, At="2021-01-01 20:00:00") == 1


def test_date_part_reads_a_timestamp_in_utc() -> None:
    formula = {"op": "date_part", "arg": ts(), "part": "day", "timezone": "UTC"}
    assert out(formula, At="2021-01-01 20:00:00") == 2


def test_date_part_of_a_timestamp_needs_a_timezone() -> None:
    assert "give the `timezone`" in config_error({"op": "date_part", "arg": ts(), "part": "day"})


def test_date_part_of_null_is_null() -> None:
    assert out({"op": "date_part", "arg": day(), "part": "week"}, Day=None) is None


def duration(unit: str, start: dict[str, Any] | None = None, end: dict[str, Any] | None = None,
             **options: object) -> dict[str, Any]:
    return {"op": "duration", "start": start or day(), "end": end or day("Other"), "unit": unit,
            **options}


@pytest.mark.parametrize(
    ("start", "end", "days"),
    [("2020-02-28", "2020-03-01", 2), ("2021-02-28", "2021-03-01", 1),
     ("2021-01-31", "2021-02-28", 28), ("2020-01-01", "2021-01-01", 366)],
)
def test_duration_in_days_over_month_ends(start: str, end: str, days: int) -> None:
    assert out(duration("days"), Day=start, Other=end) == days


def test_duration_in_weeks_is_a_decimal() -> None:
    result = out(duration("weeks"), Day="2021-01-01", Other="2021-01-11")
    assert result == Decimal(10) / Decimal(7)


def test_whole_duration_truncates_toward_zero() -> None:
    assert out(duration("weeks", whole=True), Day="2021-01-11", Other="2021-01-01") == -1


def test_day_across_spring_forward_has_23_hours() -> None:
    formula = duration("hours", ts(), ts("Until"))
    assert out(formula, At="2021-03-14 00:00:00", Until="2021-03-15 00:00:00") == 23


def test_day_across_fall_back_has_25_hours() -> None:
    formula = duration("hours", ts(), ts("Until"))
    assert out(formula, At="2021-11-07 00:00:00", Until="2021-11-08 00:00:00") == 25


def test_duration_between_a_date_and_a_timestamp_is_refused() -> None:
    assert "at $.end: duration from field 'Day' needs date" in config_error(
        duration("days", day(), ts())
    )


def test_duration_with_a_null_end_is_null() -> None:
    assert out(duration("days"), Day="2021-01-01", Other=None) is None


# -- arithmetic and round --------------------------------------------------------------------------


def test_add_of_integers_is_an_integer() -> None:
    result = out({"op": "add", "args": [field("Qty", "integer"), value(2)]}, Qty="40")
    assert (result, type(result)) == (42, int)


def test_add_of_integer_and_number_is_a_decimal() -> None:
    assert out({"op": "add", "args": [field("Qty", "integer"), value(0.1)]}, Qty="1") == Decimal(
        "1.1"
    )


def test_sub_folds_from_the_left() -> None:
    assert out({"op": "sub", "args": [num("Price"), value(1), value(2)]}, Price="10") == 7


def test_mul_is_exact() -> None:
    assert out({"op": "mul", "args": [num("Price"), num("Weight")]}, Price="0.1",
               Weight="3") == Decimal("0.3")


def test_div_of_integers_is_a_decimal() -> None:
    assert out({"op": "div", "args": [value(7), value(2)]}) == Decimal("3.5")


def test_div_by_zero_is_a_row_error_naming_the_divisor() -> None:
    error = row_error({"op": "div", "args": [num("Price"), field("Qty", "integer")]},
                      Price="1", Qty="0")
    assert error.reason == "division by zero: field 'Qty' is 0"


def test_overflow_is_a_row_error() -> None:
    error = row_error({"op": "mul", "args": [num("Price"), value(10)]}, Price="9e999999")
    assert error.reason == "a number is out of range (overflow)"


def test_div_of_null_by_zero_is_null() -> None:
    assert out({"op": "div", "args": [num("Price"), value(0)]}, Price=None) is None


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_arithmetic_with_a_null_is_null(op: str) -> None:
    assert out({"op": op, "args": [value(1), num("Price")]}, Price=None) is None


@pytest.mark.parametrize(
    ("text", "digits", "expected"),
    [("2.5", 0, "3"), ("-2.5", 0, "-3"), ("3.5", 0, "4"), ("1.005", 2, "1.01"),
     ("1.004", 2, "1.00")],
)
def test_round_is_half_up(text: str, digits: int, expected: str) -> None:
    result = out({"op": "round", "arg": num("Price"), "digits": digits}, Price=text)
    assert str(result) == expected


def test_round_of_an_integer_is_unchanged() -> None:
    assert out({"op": "round", "arg": field("Qty", "integer"), "digits": 2}, Qty="7") == 7


def test_round_of_null_is_null() -> None:
    assert out({"op": "round", "arg": num("Price")}, Price=None) is None


# -- coalesce and text -----------------------------------------------------------------------------


def test_coalesce_is_the_first_non_null() -> None:
    formula = {"op": "coalesce", "args": [field("Note"), field("FirstName"), value("?")]}
    assert out(formula, Note=None, FirstName="Ada") == "Ada"


def test_coalesce_of_only_nulls_is_null() -> None:
    assert out({"op": "coalesce", "args": [field("Note")]}, Note=None) is None


def test_coalesce_widens_an_integer_to_a_number() -> None:
    result = out({"op": "coalesce", "args": [num("Price"), value(0)]}, Price=None)
    assert (result, type(result)) == (0, Decimal)


def test_coalesce_of_text_and_number_is_refused() -> None:
    assert "at $.args[1]: coalesce: field 'Weight' is number, expected text" in config_error(
        {"op": "coalesce", "args": [field("Note"), num("Weight")]}
    )


@pytest.mark.parametrize(("op", "expected"), [("upper", " ÄB C "), ("lower", " äb c "),
                                              ("trim", "äB c")])
def test_text_ops(op: str, expected: str) -> None:
    assert out({"op": op, "arg": field("Note")}, Note=" äB c ") == expected


@pytest.mark.parametrize("op", ["upper", "lower", "trim"])
def test_text_op_of_null_is_null(op: str) -> None:
    assert out({"op": op, "arg": field("Note")}, Note=None) is None


def test_upper_of_a_number_is_refused() -> None:
    assert "upper needs text, but field 'Weight' is number" in config_error(
        {"op": "upper", "arg": num("Weight")}
    )


# -- if --------------------------------------------------------------------------------------------


def heavy(cmp: str = "gt") -> dict[str, Any]:
    return {"op": "if", "when": {"cmp": cmp, "left": num("Weight"), "right": value(10)},
            "then": value("heavy"), "else": value("light")}


@pytest.mark.parametrize(
    ("cmp", "weight", "expected"),
    [("gt", "11", "heavy"), ("gt", "10", "light"), ("ge", "10", "heavy"), ("lt", "9.5", "heavy"),
     ("le", "10.0", "heavy"), ("eq", "10.00", "heavy"), ("ne", "10", "light")],
)
def test_if_compares(cmp: str, weight: str, expected: str) -> None:
    assert out(heavy(cmp), Weight=weight) == expected


def test_if_with_a_null_side_takes_else() -> None:
    assert out(heavy(), Weight=None) == "light"


def test_if_without_else_is_null() -> None:
    formula = heavy()
    del formula["else"]
    assert out(formula, Weight="1") is None


@pytest.mark.parametrize(("cmp", "weight", "expected"),
                         [("is_null", None, "x"), ("is_null", "1", "y"), ("not_null", "1", "x")])
def test_if_null_tests(cmp: str, weight: str | None, expected: str) -> None:
    formula = {"op": "if", "when": {"cmp": cmp, "arg": num("Weight")}, "then": value("x"),
               "else": value("y")}
    assert out(formula, Weight=weight) == expected


def test_if_branches_of_different_types_are_refused() -> None:
    formula = {**heavy(), "else": value(1)}
    assert "at $.else: if: value 1 is integer, expected text" in config_error(formula)


def test_if_comparing_text_with_a_number_is_refused() -> None:
    formula = heavy()
    formula["when"]["right"] = value("10")
    assert "at $.when.right: comparing with field 'Weight': value \"10\" is text" in config_error(
        formula
    )


# -- properties ------------------------------------------------------------------------------------


NAMES = compiled({"out": {"op": "concat", "args": [field("FirstName"), field("Note"),
                                                   field("LastName")],
                          "separator": "-", "skip_nulls": True}})
names = st.one_of(st.none(), st.text(max_size=5))


@given(first=names, middle=names, last=names)
def test_concat_skip_nulls_joins_the_non_nulls(first: str | None, middle: str | None,
                                               last: str | None) -> None:
    present = [n for n in (first, middle, last) if n is not None]
    result = NAMES.apply({"FirstName": first, "Note": middle, "LastName": last})["out"]
    assert result == ("-".join(present) if present else None)


def test_apply_returns_outputs_in_config_order() -> None:
    formulas = {"b": {"op": "trim", "arg": field("Note")}, "a": {"op": "upper", "arg": ref("b")}}
    assert list(compiled(formulas).apply({"Note": "x"})) == ["b", "a"]


def test_date_literal_in_a_comparison() -> None:
    cutoff = {"value": "2020-02-29", "type": "date", "format": "%Y-%m-%d"}
    formula = {"op": "if", "when": {"cmp": "le", "left": day(), "right": cutoff},
               "then": value(True), "else": value(False)}
    assert out(formula, Day="2020-02-29") is True


def test_bad_field_is_blamed_on_the_first_output_reading_it() -> None:
    formulas = {"a": {"op": "round", "arg": num("Weight")},
                "b": {"op": "mul", "args": [num("Weight"), value(2)]}}
    with pytest.raises(FormulaError) as caught:
        compiled(formulas).apply({"Weight": "heavy"})
    assert caught.value.field == "a"
