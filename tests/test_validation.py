"""The compiled validators on the Cerberus behaviours that are easy to get wrong.

Each test states one behaviour, checks the compiled validator's answer, and checks that
Cerberus (``AssayValidator``) gives the same answer, so a test can never pin a behaviour
Cerberus does not have.
"""

from __future__ import annotations

import importlib.util
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cerberus import DocumentError
from structlog.testing import capture_logs

from assay.processors.validation import (
    AssayValidator,
    CompiledValidator,
    SchemaError,
    ValidationResult,
    coercers,
    compile_schema,
)


def check(schema: dict[str, Any], document: Any, purge_unknown: bool = False) -> ValidationResult:
    """The compiled result, after asserting it is Cerberus's, field for field."""
    compiled = compile_schema(schema, table="t", purge_unknown=purge_unknown)
    result = compiled.validate(document)
    reference = AssayValidator(schema, purge_unknown=purge_unknown)
    ok = reference.validate(document)
    assert result.ok == ok
    assert repr(result.errors) == repr(reference.errors)
    assert repr(result.document) == repr(reference.document if ok else None)
    return result


def errors(schema: dict[str, Any], document: Any, purge_unknown: bool = False) -> dict[str, Any]:
    return check(schema, document, purge_unknown).errors


def normalised(schema: dict[str, Any], document: Any) -> dict[str, Any] | None:
    result = check(schema, document)
    assert result.ok, result.errors
    return result.document


# -- normalisation -------------------------------------------------------------------


def test_a_valid_document_is_returned_normalised() -> None:
    schema = {"id": {"type": "integer", "coerce": "integer"}, "name": {"type": "string"}}
    result = check(schema, {"id": "42", "name": "Ada"})
    assert result == ValidationResult(ok=True, document={"id": 42, "name": "Ada"}, errors={})


def test_coercion_happens_before_the_rules() -> None:
    assert errors({"qty": {"type": "integer", "coerce": "integer", "min": 5}}, {"qty": "3"}) == {
        "qty": ["min value is 5"]
    }


def test_a_failed_coercion_keeps_the_value_and_reports_both_errors() -> None:
    assert errors({"qty": {"type": "integer", "coerce": "integer"}}, {"qty": "x"}) == {
        "qty": [
            "field 'qty' cannot be coerced: invalid literal for int() with base 10: 'x'",
            "must be of integer type",
        ]
    }


def test_nested_coercion_errors_come_after_the_nested_rule_errors() -> None:
    """Cerberus files a nested field's coercion error after the subschema's group error."""
    schema = {"m": {"type": "dict", "schema": {"x": {"type": "integer", "coerce": "integer"}}}}
    assert errors(schema, {"m": {"x": "q"}}) == {
        "m": [{"x": [
            "must be of integer type",
            "field 'x' cannot be coerced: invalid literal for int() with base 10: 'q'",
        ]}]
    }


def test_a_coercion_chain_stops_at_the_first_failure() -> None:
    schema = {"v": {"coerce": ["integer", "upper"]}}
    assert errors(schema, {"v": "x"}) == {
        "v": ["field 'v' cannot be coerced: invalid literal for int() with base 10: 'x'"]
    }


def test_a_nullable_none_passes_silently_through_failing_coercers() -> None:
    schema = {"v": {"type": "integer", "coerce": ["nullify_empty", "integer"], "nullable": True}}
    assert normalised(schema, {"v": " "}) == {"v": None}


def test_a_none_that_is_not_nullable_fails_coercion_and_nullable() -> None:
    assert errors({"v": {"coerce": "upper"}}, {"v": None}) == {
        "v": ["field 'v' cannot be coerced: expected a string, got NoneType",
              "null value not allowed"]
    }


def test_a_default_fills_a_missing_field_and_is_coerced() -> None:
    schema = {"n": {"type": "integer", "coerce": "integer", "default": "7"}}
    assert normalised(schema, {}) == {"n": 7}


def test_a_default_replaces_none_only_when_not_nullable() -> None:
    schema = {"a": {"default": 1}, "b": {"default": 2, "nullable": True}}
    assert normalised(schema, {"a": None, "b": None}) == {"a": 1, "b": None}


def test_defaults_are_appended_in_schema_order() -> None:
    schema = {"x": {"default": 1}, "y": {}, "z": {"default": 3}}
    assert list(normalised(schema, {"y": 0}) or ()) == ["y", "x", "z"]


def test_a_mutable_default_is_not_shared_between_documents() -> None:
    compiled = compile_schema({"tags": {"type": "list", "default": []}}, table="t")
    first, second = compiled.validate({}), compiled.validate({})
    assert first.document is not None and second.document is not None
    first.document["tags"].append("x")
    assert second.document == {"tags": []}


def test_purge_unknown_drops_unknown_fields() -> None:
    result = check({"a": {}}, {"a": 1, "b": 2}, purge_unknown=True)
    assert result.document == {"a": 1}


def test_purge_unknown_reaches_nested_mappings() -> None:
    schema = {"m": {"type": "dict", "schema": {"x": {}}}}
    assert check(schema, {"m": {"x": 1, "y": 2}}, purge_unknown=True).document == {"m": {"x": 1}}


def test_list_items_are_coerced_and_none_items_take_the_default() -> None:
    schema = {"l": {"type": "list",
                    "schema": {"type": "integer", "coerce": "integer", "default": 0}}}
    assert normalised(schema, {"l": ["1", None, 3]}) == {"l": [1, 0, 3]}


def test_the_input_document_is_not_modified() -> None:
    document = {"m": {"x": "1"}, "l": ["2"]}
    schema = {"m": {"type": "dict", "schema": {"x": {"coerce": "integer"}}},
              "l": {"type": "list", "schema": {"coerce": "integer"}}}
    assert normalised(schema, document) == {"m": {"x": 1}, "l": [2]}
    assert document == {"m": {"x": "1"}, "l": ["2"]}


# -- nullable, required, unknown -------------------------------------------------------


def test_a_nullable_none_skips_every_other_rule() -> None:
    schema = {"v": {"type": "integer", "nullable": True, "min": 3, "allowed": [5]}}
    assert normalised(schema, {"v": None}) == {"v": None}


def test_a_none_that_is_not_nullable_gets_only_the_null_error() -> None:
    schema = {"v": {"type": "integer", "min": 3, "allowed": [5]}}
    assert errors(schema, {"v": None}) == {"v": ["null value not allowed"]}


def test_a_required_field_may_be_none_but_not_missing() -> None:
    schema = {"v": {"required": True, "nullable": True}}
    assert check(schema, {"v": None}).ok
    assert errors(schema, {}) == {"v": ["required field"]}


def test_an_unknown_field_is_an_error() -> None:
    assert errors({"a": {}}, {"a": 1, "b": 2}) == {"b": ["unknown field"]}


def test_allow_unknown_applies_to_its_nested_mapping() -> None:
    schema = {"m": {"type": "dict", "allow_unknown": True, "schema": {"x": {}}}}
    assert check(schema, {"m": {"x": 1, "y": 2}}).ok
    assert errors(schema, {"m": {}, "y": 2}) == {"y": ["unknown field"]}


def test_require_all_makes_nested_fields_required() -> None:
    schema = {"m": {"type": "dict", "require_all": True, "schema": {"x": {}, "y": {}}}}
    assert errors(schema, {"m": {"x": 1}}) == {"m": [{"y": ["required field"]}]}


# -- types -------------------------------------------------------------------------------


def test_integer_accepts_booleans_as_python_does() -> None:
    assert check({"v": {"type": "integer"}}, {"v": True}).ok


def test_number_refuses_booleans() -> None:
    assert errors({"v": {"type": "number"}}, {"v": True}) == {"v": ["must be of number type"]}


def test_float_accepts_integers() -> None:
    assert check({"v": {"type": "float"}}, {"v": 3}).ok


def test_date_accepts_datetimes_but_datetime_refuses_dates() -> None:
    assert check({"v": {"type": "date"}}, {"v": datetime(2024, 1, 1)}).ok
    assert not check({"v": {"type": "datetime"}}, {"v": date(2024, 1, 1)}).ok


def test_a_list_of_types_accepts_any_of_them() -> None:
    schema = {"v": {"type": ["integer", "string"]}}
    assert check(schema, {"v": "x"}).ok
    assert errors(schema, {"v": 1.5}) == {"v": ["must be of ['integer', 'string'] type"]}


def test_a_wrong_type_skips_the_other_rules() -> None:
    schema = {"v": {"type": "integer", "min": 3, "regex": "a"}}
    assert errors(schema, {"v": "b"}) == {"v": ["must be of integer type"]}


def test_the_other_cerberus_types_work_too() -> None:
    schema = {"s": {"type": "set"}, "c": {"type": "container"}, "b": {"type": "binary"}}
    assert check(schema, {"s": {1}, "c": [1], "b": b"x"}).ok
    assert errors(schema, {"s": [1], "c": "x", "b": "x"}) == {
        "b": ["must be of binary type"], "c": ["must be of container type"],
        "s": ["must be of set type"],
    }


def test_a_coercer_may_be_a_callable_in_a_schema_built_in_python() -> None:
    assert normalised({"v": {"coerce": [str.strip, int]}}, {"v": " 4 "}) == {"v": 4}


def test_money_is_a_decimal() -> None:
    schema = {"price": {"type": "decimal", "coerce": "decimal", "min": 0}}
    assert normalised(schema, {"price": "12.50"}) == {"price": Decimal("12.50")}
    assert errors(schema, {"price": "-1"}) == {"price": ["min value is 0"]}


# -- empty, lengths, ranges, regex ---------------------------------------------------------


def test_without_the_empty_rule_an_empty_string_meets_the_other_rules() -> None:
    """A field's messages come in the order of their rules' names, as Cerberus sorts them."""
    schema = {"v": {"type": "string", "minlength": 2, "allowed": ["ab"]}}
    assert errors(schema, {"v": ""}) == {"v": ["unallowed value ", "min length is 2"]}


def test_empty_false_reports_emptiness_instead_of_the_length_rules() -> None:
    schema = {"v": {"type": "string", "empty": False, "minlength": 2, "regex": "a+"}}
    assert errors(schema, {"v": ""}) == {"v": ["empty values not allowed"]}


def test_empty_still_leaves_min_and_max_to_run() -> None:
    schema = {"v": {"type": "string", "empty": True, "min": "b"}}
    assert errors(schema, {"v": ""}) == {"v": ["min value is b"]}


def test_min_and_max_compare_strings() -> None:
    assert errors({"v": {"max": "m"}}, {"v": "z"}) == {"v": ["max value is m"]}


def test_min_and_max_skip_values_they_cannot_compare() -> None:
    assert check({"v": {"min": 5}}, {"v": "text"}).ok


def test_regex_matches_from_the_start_up_to_an_added_dollar() -> None:
    """Not a full match: ``a|b`` becomes ``a|b$``, which matches "ax" by its first branch."""
    assert check({"v": {"regex": "a|b"}}, {"v": "ax"}).ok
    assert errors({"v": {"regex": "a|b"}}, {"v": "xb!"}) == {
        "v": ["value does not match regex 'a|b'"]
    }


def test_regex_dollar_matches_before_a_final_newline() -> None:
    assert check({"v": {"regex": "ab"}}, {"v": "ab\n"}).ok


# -- allowed, forbidden ------------------------------------------------------------------------


def test_allowed_on_a_list_names_the_unallowed_items() -> None:
    schema = {"v": {"type": "list", "allowed": ["a", "b"]}}
    assert errors(schema, {"v": ["a", "x", "y"]}) == {"v": ["unallowed values ('x', 'y')"]}


def test_forbidden_on_a_scalar_names_the_value() -> None:
    assert errors({"v": {"forbidden": ["root"]}}, {"v": "root"}) == {"v": ["unallowed value root"]}


def test_forbidden_on_a_list_names_the_forbidden_items() -> None:
    assert errors({"v": {"forbidden": ["x"]}}, {"v": ["x", "y"]}) == {
        "v": ["unallowed values ['x']"]
    }


# -- nesting ---------------------------------------------------------------------------------


def test_list_item_errors_are_keyed_by_index() -> None:
    schema = {"l": {"type": "list", "schema": {"type": "integer"}}}
    assert errors(schema, {"l": [1, "a", 2, "b"]}) == {
        "l": [{1: ["must be of integer type"], 3: ["must be of integer type"]}]
    }


def test_items_checks_each_position() -> None:
    schema = {"p": {"type": "list", "items": [{"type": "string"}, {"type": "integer"}]}}
    assert errors(schema, {"p": ["a", "b"]}) == {"p": [{1: ["must be of integer type"]}]}


def test_items_reports_a_length_mismatch() -> None:
    schema = {"p": {"type": "list", "items": [{"type": "string"}, {"type": "integer"}]}}
    assert errors(schema, {"p": ["a"]}) == {"p": ["length of list should be 2, it is 1"]}


def test_errors_three_levels_down_nest_as_cerberus_nests_them() -> None:
    schema = {"orders": {"type": "list", "schema": {
        "type": "dict", "schema": {"qty": {"type": "integer", "min": 1}},
    }}}
    assert errors(schema, {"orders": [{"qty": 1}, {"qty": 0}]}) == {
        "orders": [{1: [{"qty": ["min value is 1"]}]}]
    }


def test_a_field_gets_its_own_and_its_childrens_errors() -> None:
    schema = {"l": {"type": "list", "maxlength": 1, "schema": {"type": "integer"}}}
    assert errors(schema, {"l": [1, "x"]}) == {
        "l": ["max length is 1", {1: ["must be of integer type"]}]
    }


def test_a_list_given_for_a_mapping_is_a_type_error_without_cerberus() -> None:
    schema = {"m": {"type": "dict", "schema": {"x": {"type": "integer"}}}}
    compiled = compile_schema(schema, table="t")
    assert compiled.validate({"m": [1]}).errors == {"m": ["must be of dict type"]}
    assert compiled.reference_runs == 0
    assert errors(schema, {"m": [1]}) == {"m": ["must be of dict type"]}


# -- what is left to Cerberus ----------------------------------------------------------------


def test_typical_invalid_documents_stay_on_the_compiled_path() -> None:
    schema = {"a": {"type": "integer", "coerce": "integer", "min": 0, "required": True},
              "m": {"type": "dict", "schema": {"x": {"allowed": [1]}}},
              "l": {"type": "list", "schema": {"type": "string", "regex": "[a-z]+"}}}
    compiled = compile_schema(schema, table="t")
    for document in ({"a": "-1"}, {"a": "x", "m": {"x": 2}}, {"l": ["A", 1]}, {"zz": 1}, {},
                     {"a": None, "m": None, "l": None}, {"a": 1, "m": "no", "l": 5}):
        assert not compiled.validate(document).ok
    assert compiled.reference_runs == 0


def test_a_dict_given_for_a_list_of_items_is_left_to_cerberus() -> None:
    schema = {"l": {"type": "list", "schema": {"type": "integer"}}}
    compiled = compile_schema(schema, table="t")
    assert compiled.validate({"l": {"k": 1}}).errors == {"l": ["must be of list type"]}
    assert compiled.reference_runs == 1


def test_a_value_cerberus_fails_on_fails_the_same_way() -> None:
    """Cerberus cannot put unhashable items in a set for ``forbidden``; neither can we."""
    compiled = compile_schema({"v": {"forbidden": [1]}}, table="t")
    with pytest.raises(TypeError):
        AssayValidator({"v": {"forbidden": [1]}}).validate({"v": [[1]]})
    with pytest.raises(TypeError):
        compiled.validate({"v": [[1]]})


def test_a_document_that_is_not_a_mapping_raises_as_in_cerberus() -> None:
    with pytest.raises(DocumentError):
        compile_schema({"a": {}}, table="t").validate([("a", 1)])  # type: ignore[arg-type]


def test_unsupported_rules_fall_back_to_cerberus_and_are_logged_once() -> None:
    schema = {"a": {"type": "string", "check_with": "bogus_checker"},
              "b": {"type": "dict", "keysrules": {"type": "string"}}}
    schema = {"a": {"type": "integer", "dependencies": "b"}, "b": schema["b"]}
    with capture_logs() as logs:
        compiled = compile_schema(schema, table="orders")
    assert compiled.fallback_rules == ("dependencies", "keysrules")
    assert logs == [{"event": "validation_fallback", "table": "orders",
                     "rules": ["dependencies", "keysrules"], "log_level": "warning"}]
    assert errors(schema, {"a": 1}) == {"a": ["field 'b' is required"]}
    assert compiled.validate({"a": 1}).errors == {"a": ["field 'b' is required"]}


# -- schemas ---------------------------------------------------------------------------------


def test_an_invalid_schema_is_refused_naming_the_table() -> None:
    with pytest.raises(SchemaError, match=r"table 'orders'.*unallowed value upside_down"):
        compile_schema({"a": {"coerce": "upside_down"}}, table="orders")


def test_an_unknown_rule_is_refused() -> None:
    with pytest.raises(SchemaError, match="unknown rule"):
        compile_schema({"a": {"minimum": 3}}, table="t")


def test_a_regex_that_does_not_compile_is_refused_at_start_up() -> None:
    with pytest.raises(SchemaError, match=r"regex '\(' does not compile"):
        compile_schema({"a": {"regex": "("}}, table="t")


def test_non_string_field_names_are_left_to_cerberus() -> None:
    schema: dict[Any, Any] = {1: {"type": "integer"}, "a": {}}
    compiled = compile_schema(schema, table="t")
    assert compiled.fallback_rules == ("non-string field names",)
    assert errors(schema, {1: "x", "b": 2}) == {
        1: ["must be of integer type"], "b": ["unknown field"]
    }


def test_the_schema_given_is_not_modified() -> None:
    schema = {"a": {"anyof_type": ["string", "integer"]}}
    compile_schema(schema, table="t")
    assert schema == {"a": {"anyof_type": ["string", "integer"]}}


def test_schema_text_never_becomes_code() -> None:
    name = "x') or __import__('os').system('echo pwned') or ('"
    compiled = compile_schema({name: {"type": "string", "regex": "'\"\n", "allowed": [name]}},
                              table="t")
    assert name not in compiled.source and "pwned" not in compiled.source
    assert errors({name: {"regex": "a"}}, {name: "b"}) == {name: ["value does not match regex 'a'"]}


def test_the_benchmark_schema_compiles_without_fallback() -> None:
    path = Path(__file__).resolve().parents[1] / "bench" / "validation.py"
    spec = importlib.util.spec_from_file_location("bench_validation", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    compiled = compile_schema(bench.SCHEMA, table="orders")
    assert isinstance(compiled, CompiledValidator)
    assert compiled.fallback_rules == ()
    for record in bench.make_records(200):
        reference = AssayValidator(bench.SCHEMA)
        ok = reference.validate(record)
        assert compiled.validate(record) == ValidationResult(
            ok, reference.document if ok else None, reference.errors)
    assert compiled.reference_runs == 0


# -- the named coercers ----------------------------------------------------------------------


@pytest.mark.parametrize(("coercer", "value", "expected"), [
    (coercers.to_integer, " 12 ", 12),
    (coercers.to_integer, 3.0, 3),
    (coercers.to_float, "1.5", 1.5),
    (coercers.to_decimal, "12.50", Decimal("12.50")),
    (coercers.to_decimal, 0.1, Decimal("0.1")),
    (coercers.to_string, 12, "12"),
    (coercers.to_boolean, " Yes ", True),
    (coercers.to_boolean, "off", False),
    (coercers.to_date, "2024-02-29", date(2024, 2, 29)),
    (coercers.to_datetime, "2024-02-29T10:00:00", datetime(2024, 2, 29, 10)),
    (coercers.to_upper, "eur", "EUR"),
    (coercers.to_lower, "EUR", "eur"),
    (coercers.to_stripped, " a ", "a"),
    (coercers.nullify_empty, "  ", None),
    (coercers.nullify_empty, 0, 0),
])
def test_a_coercer_converts(coercer: Any, value: Any, expected: Any) -> None:
    result = coercer(value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(("coercer", "value", "message"), [
    (coercers.to_integer, True, "expected an integer, got bool"),
    (coercers.to_integer, 2.5, "2.5 is not a whole number"),
    (coercers.to_float, "nan", "'nan' is not a finite number"),
    (coercers.to_decimal, "1,5", "invalid decimal literal: '1,5'"),
    (coercers.to_decimal, "Infinity", "'Infinity' is not a finite number"),
    (coercers.to_string, None, "expected a string or a number, got NoneType"),
    (coercers.to_boolean, "maybe", "'maybe' is not a boolean"),
    (coercers.to_date, datetime(2024, 1, 1), "expected a date, got datetime"),
    (coercers.to_upper, 1, "expected a string, got int"),
])
def test_a_coercer_refuses_with_a_readable_reason(coercer: Any, value: Any, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message.replace("(", r"\(")):
        coercer(value)


def test_the_demo_config_compiles_without_fallback() -> None:
    from pathlib import Path

    from assay.contracts.config import load_config
    from assay.processors.plan import build_plan

    plan = build_plan(load_config(Path(__file__).resolve().parents[1] / "config"))
    validators = {n: t.validator for n, t in plan.tables.items() if t.validator is not None}
    assert len(validators) == len(plan.tables)
    assert {n: v.fallback_rules for n, v in validators.items() if v.fallback_rules} == {}
