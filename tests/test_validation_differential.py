"""Differential test: compiled validators against Cerberus on generated schemas and documents.

Hypothesis draws a schema made of the supported rules (nested dict and list schemas, items)
and a batch of documents aimed at it: valid values, values at the limits, wrong types,
missing keys, None, unknown keys, unicode, huge integers, strings that coerce and strings
that do not. Every document must get the same verdict, the same normalised document and
the same error tree, compared by ``repr`` so that types and key order count too.

The normal run is fixed-seed (``derandomize``) and checks ``ASSAY_HYPOTHESIS_EXAMPLES``
documents (20,000 by default, about 40 s); set it higher for a longer run, e.g.
``ASSAY_HYPOTHESIS_EXAMPLES=100000 pytest tests/test_validation_differential.py`` (about
4 min; the timeout grows with it). The run prints how often each rule and each nesting
depth was exercised; the tests fail if a rule or a depth never was.
"""

from __future__ import annotations

import copy
import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import cerberus
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.processors.validation import SUPPORTED_RULES, AssayValidator, SchemaError, compile_schema

DOCUMENTS = int(os.environ.get("ASSAY_HYPOTHESIS_EXAMPLES", "20000"))
pytestmark = pytest.mark.timeout(max(300, DOCUMENTS // 100))
"""Generous: the machine is shared, and the run is one fixture (about 40 s when idle)."""
DOCUMENTS_PER_SCHEMA = 20
MAX_DEPTH = 3

Schema = dict[str, Any]
Draw = Callable[[st.SearchStrategy[Any]], Any]

# -- schemas --------------------------------------------------------------------------

FIELD_NAMES = ["a", "b", "qty", "name", "price", "when", "tags", "é", "日付", "schema"]
TEXTS = ["", "a", "abc", "ABC", " x ", "é", "日本", "a\n", "EUR", "eur", "12", " 7 ", "1_000",
         "3.5", "-4", "true", "no", "2024-01-31", "2024-02-30", "2024-01-31T10:00:00",
         "2024-01-31T10:00:00Z", "ab", "b", "m", "zz", "ABC-1234", "x@y.io", "  ", "nan"]
PATTERNS = ["[a-z]+", "a|b", r"\d{2,3}", "x.*", r"[A-Z]{3}-\d{4}", "ab$", "é+", "", ".*",
            "(?i)abc", r"[0-9]+(\.[0-9]+)?", r"\$"]
STRING_COERCERS: list[Any] = ["strip", "upper", "lower", "string", "nullify_empty",
                              ["strip", "upper"], ["nullify_empty", "strip"]]
COERCERS: dict[str, list[Any]] = {
    "string": STRING_COERCERS,
    "integer": ["integer", ["strip", "integer"], ["nullify_empty", "integer"], "float"],
    "float": ["float", ["nullify_empty", "float"], "integer"],
    "number": ["float", "integer", "decimal"],
    "decimal": ["decimal", ["nullify_empty", "decimal"]],
    "boolean": ["boolean", ["strip", "boolean"]],
    "date": ["date", ["nullify_empty", "date"]],
    "datetime": ["datetime", "date"],
    "any": ["nullify_empty", "string", "integer", "upper"],
}
SCALAR_KINDS = ["string", "integer", "float", "number", "decimal", "boolean", "date",
                "datetime", "any"]
HUGE = 2**70
WHEN = datetime(2024, 1, 31, 10, 0)


def _sometimes(draw: Draw, odds: int = 3) -> bool:
    return draw(st.integers(0, odds - 1)) == 0


def _limits(kind: str) -> list[Any]:
    table: dict[str, list[Any]] = {
        "string": ["b", "m", "A", ""],
        "integer": [0, 1, 5, -3, HUGE, 2.5],
        "float": [0.0, 1.5, -2, 10],
        "number": [0, 1.5, -2, 10],
        "decimal": [0, 1, Decimal("2.50"), 9.99],
        "boolean": [True, False],
        "date": [date(2024, 1, 31), "2024-01-31"],
        "datetime": [WHEN, date(2024, 1, 1)],
        "any": [0, "m", 1.5],
    }
    return table[kind]


def _choices(kind: str) -> list[Any]:
    """Values for allowed/forbidden lists."""
    table: dict[str, list[Any]] = {
        "string": ["a", "abc", "EUR", "é", "", "ab", "zz"],
        "integer": [0, 1, 5, HUGE, -1, True],
        "float": [0.0, 1.5, 1, 2.25],
        "number": [0, 1.5, 2],
        "decimal": [Decimal("1.5"), 1, 2.25],
        "boolean": [True, False],
        "date": [date(2024, 1, 31)],
        "datetime": [WHEN],
        "any": ["a", 1, None, 1.5],
    }
    return table[kind]


@st.composite
def field_rules(draw: st.DrawFn, depth: int) -> dict[str, Any]:
    """One field's rules: a kind (type), then a random selection of the rules that suit it."""
    kinds = [*SCALAR_KINDS, "dict", "list"] if depth < MAX_DEPTH else SCALAR_KINDS
    kind = draw(st.sampled_from(kinds))
    rules: dict[str, Any] = {}
    if kind != "any":
        rules["type"] = kind
        if kind in ("integer", "string") and _sometimes(draw, 6):
            rules["type"] = [kind, draw(st.sampled_from(["string", "integer", "list", "dict"]))]
    if _sometimes(draw):
        rules["required"] = draw(st.booleans())
    if _sometimes(draw):
        rules["nullable"] = draw(st.booleans())
    if _sometimes(draw, 5):
        rules["meta"] = {"note": "ignored"}
    if kind == "dict":
        rules.update(draw(_dict_rules(depth)))
    elif kind == "list":
        rules.update(draw(_list_rules(depth)))
    else:
        rules.update(draw(_scalar_rules(kind)))
    if _sometimes(draw, 4):
        usual = _choices(kind) if kind in SCALAR_KINDS else [[1], {"a": 1}]
        rules["default"] = draw(st.sampled_from([*usual, None, "7", [], {}]))
    return rules


@st.composite
def _scalar_rules(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    rules: dict[str, Any] = {}
    if _sometimes(draw):
        rules["min"] = draw(st.sampled_from(_limits(kind)))
    if _sometimes(draw):
        rules["max"] = draw(st.sampled_from(_limits(kind)))
    if _sometimes(draw, 2):
        rules["coerce"] = draw(st.sampled_from(COERCERS[kind]))
    if _sometimes(draw):
        values = draw(st.lists(st.sampled_from(_choices(kind)), min_size=1, max_size=3))
        rules[draw(st.sampled_from(["allowed", "forbidden"]))] = values
    if kind in ("string", "any"):
        if _sometimes(draw):
            rules["regex"] = draw(st.sampled_from(PATTERNS))
        if _sometimes(draw):
            rules["minlength"] = draw(st.integers(0, 3))
        if _sometimes(draw):
            rules["maxlength"] = draw(st.integers(0, 4))
        if _sometimes(draw):
            rules["empty"] = draw(st.booleans())
    return rules


@st.composite
def _dict_rules(draw: st.DrawFn, depth: int) -> dict[str, Any]:
    rules: dict[str, Any] = {}
    if not _sometimes(draw, 6):
        rules["schema"] = draw(schemas(depth + 1))
    for rule in ("allow_unknown", "purge_unknown", "require_all", "empty"):
        if _sometimes(draw, 4):
            rules[rule] = draw(st.booleans())
    if _sometimes(draw, 6):
        rules["minlength"] = draw(st.integers(0, 2))
    return rules


@st.composite
def _list_rules(draw: st.DrawFn, depth: int) -> dict[str, Any]:
    rules: dict[str, Any] = {}
    shape = draw(st.sampled_from(["schema", "schema", "items", "both", "none"]))
    if shape in ("schema", "both"):
        rules["schema"] = draw(field_rules(depth + 1))
    if shape in ("items", "both"):
        rules["items"] = draw(st.lists(field_rules(depth + 1), min_size=1, max_size=3))
    if _sometimes(draw):
        rules["minlength"] = draw(st.integers(0, 2))
    if _sometimes(draw):
        rules["maxlength"] = draw(st.integers(0, 3))
    if _sometimes(draw, 4):
        rules["empty"] = draw(st.booleans())
    if _sometimes(draw, 5):
        values = draw(st.lists(st.sampled_from(["a", 1, 1.5]), min_size=1, max_size=2))
        rules[draw(st.sampled_from(["allowed", "forbidden"]))] = values
    return rules


def schemas(depth: int = 0) -> st.SearchStrategy[Schema]:
    """A schema of 1 to 4 fields (0 to 3 below the top)."""
    return st.dictionaries(st.sampled_from(FIELD_NAMES), field_rules(depth),
                           min_size=0 if depth else 1, max_size=4 if depth == 0 else 3)


# -- documents ------------------------------------------------------------------------

ODD_VALUES: list[Any] = [None, "", "x", 0, 1, -1, True, False, 1.5, float("inf"), HUGE,
                         Decimal("NaN"), Decimal("1.50"), [], [1, "a"], {}, {"k": 1},
                         ("t",), date(2024, 1, 31), WHEN, [[1]], "ｆｕｌｌ", "\x00"]
EXTRA_KEYS: list[Any] = ["zz", "extra", "Ω", "zz", "extra", "Ω", "zz", "extra", "Ω", 1]
"""Unknown keys; 1 (not a string) is a key the compiled validators leave to Cerberus."""


def _kind_of(rules: dict[str, Any]) -> str:
    types = rules.get("type", "any")
    return types if isinstance(types, str) else types[0]


def _near(limit: Any) -> list[Any]:
    if isinstance(limit, bool) or not isinstance(limit, int | float | Decimal):
        return [limit]
    half: Any = Decimal("0.5") if isinstance(limit, Decimal) else 0.5
    return [limit - 1, limit, limit + 1, limit - half, str(limit)]


def _pick(draw: Draw, choices: list[Any]) -> Any:
    """One of the choices (a cached integer strategy: cheaper than a new sampled_from)."""
    return choices[draw(st.integers(0, len(choices) - 1))]


def _value(draw: Draw, rules: dict[str, Any], depth: int, gentle: bool) -> Any:
    """A value aimed at a field's rules: mostly plausible, sometimes near a limit, sometimes
    odd; a gentle value is one of the allowed values or a limit when the rules have them."""
    kind = _kind_of(rules)
    if gentle and kind in SCALAR_KINDS:
        fits = list(rules.get("allowed", ())) or [rules[r] for r in ("min", "max") if r in rules]
        if fits and not _sometimes(draw, 4):
            return _pick(draw, fits)
    roll = draw(st.integers(0, 9))
    if roll == 0 and not gentle:
        return _pick(draw, ODD_VALUES)
    if roll == 1:
        near = [v for rule in ("min", "max") if rule in rules for v in _near(rules[rule])]
        near += list(rules.get("allowed", [])) + list(rules.get("forbidden", []))
        if near:
            return _pick(draw, near)
    if kind == "dict":
        inner = rules.get("schema")
        if isinstance(inner, dict) and not _sometimes(draw, 8):
            return document_for(draw, inner, depth + 1, gentle)
        return _pick(draw, [{}, {"zz": 1}, {"a": None}, [{"a": 1}], "a"])
    if kind == "list":
        return _list_value(draw, rules, depth, gentle)
    return draw(SCALARS[kind])


def _list_value(draw: Draw, rules: dict[str, Any], depth: int, gentle: bool) -> Any:
    if "items" in rules and not _sometimes(draw, 4):
        items = rules["items"]
        result = [_value(draw, item, depth + 1, gentle) for item in items]
        return result[: draw(st.integers(0, len(result)))] if _sometimes(draw, 5) else result
    item_rules: dict[str, Any] = rules["schema"] if isinstance(rules.get("schema"), dict) else {}
    size = draw(st.integers(0, 3))
    result = [_value(draw, item_rules, depth + 1, gentle) for _ in range(size)]
    return tuple(result) if _sometimes(draw, 20) else result


_TEXTS = st.sampled_from(TEXTS)
_TEXT = st.one_of(_TEXTS, _TEXTS, _TEXTS, st.text("aAbé日 -1_.\n", max_size=4))
SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "string": _TEXT,
    "integer": st.one_of(st.integers(-3, 25), _TEXT,
                         st.sampled_from([HUGE, -HUGE, 2.0, 2.5, True, "1" * 30])),
    "float": st.one_of(st.floats(-10, 10), st.integers(-3, 12), _TEXT),
    "number": st.one_of(st.floats(-10, 10), st.integers(-3, 12), _TEXT, st.booleans()),
    "decimal": st.one_of(st.sampled_from([Decimal("1.25"), Decimal("-0.5"), 3, 2.5]), _TEXT),
    "boolean": st.one_of(st.booleans(), _TEXT, st.sampled_from([0, 1, 2, "YES", " off "])),
    "date": st.one_of(st.sampled_from([date(2024, 2, 29), WHEN, date(1999, 12, 31)]), _TEXT),
    "datetime": st.one_of(st.sampled_from([WHEN, datetime(2024, 1, 31, tzinfo=UTC),
                                           date(2024, 1, 1)]), _TEXT),
    "any": st.one_of(_TEXT, st.integers(-3, 25), st.sampled_from(ODD_VALUES)),
}
"""Plausible values of each kind: right type, strings that coerce, strings that do not."""


def document_for(draw: Draw, schema: Schema, depth: int = 0,
                 gentle: bool | None = None) -> dict[Any, Any]:
    """A document for a schema: each field present, None or missing; now and then an
    unknown key; now and then the keys rotated. Half the top-level documents are
    gentle: they aim to be valid (required fields present, None only where nullable).

    A plain function of ``draw`` (not a composite strategy): building a strategy per
    document costs more than drawing it.
    """
    if gentle is None:
        gentle = draw(st.booleans())
    document: dict[Any, Any] = {}
    for field, rules in schema.items():
        roll = draw(st.integers(0, 9))
        if roll == 0 and not (gentle and rules.get("required")):
            continue
        if roll == 1 and (rules.get("nullable") or not gentle):
            document[field] = None
        else:
            document[field] = _value(draw, rules, depth, gentle)
    if not gentle and _sometimes(draw, 6):
        document[_pick(draw, EXTRA_KEYS)] = _pick(draw, ODD_VALUES)
    if len(document) > 1 and _sometimes(draw, 4):
        items = list(document.items())
        turn = draw(st.integers(1, len(items) - 1))
        document = dict(items[turn:] + items[:turn])
    return document


# -- the comparison -------------------------------------------------------------------

class Exercised:
    """Counts what the run exercised: rules in schemas, errors by rule and by depth."""

    def __init__(self) -> None:
        self.in_schema: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.effects: Counter[str] = Counter()
        self.schema_depth: Counter[int] = Counter()
        self.error_depth: Counter[int] = Counter()
        self.documents = 0
        self.valid = 0
        self.raised = 0
        self.handed_over = 0
        self.kept = 0
        """Valid documents ``check`` answered with None (normalising changes nothing)."""
        self.seconds = 0.0
        self.schemas = 0
        self.invalid_schemas = 0

    def schema(self, schema: Schema) -> None:
        self.schemas += 1
        self.schema_depth[_depth(schema)] += 1

    def document(self, schema: Schema, document: dict[Any, Any], purge: bool,
                 validator: Any, ok: bool) -> None:
        self.documents += 1
        self.valid += ok
        for rule in _rules_of(schema):
            self.in_schema[rule] += 1
        _count_effects(schema, document, purge, False, self.effects)
        for error in _flatten(validator._errors):
            self.failed[error.rule or "unknown field"] += 1
            self.error_depth[len(error.document_path)] += 1

    def table(self) -> str:
        rows = ["| rule | documents whose schema has it | errors it produced | took effect |",
                "| --- | ---: | ---: | ---: |"]
        for rule in sorted(SUPPORTED_RULES | {"unknown field"}):
            effect = f"{self.effects[rule]:,}" if rule in EFFECTS else ""
            rows.append(f"| {rule} | {self.in_schema[rule]:,} | {self.failed[rule]:,} | {effect} |")
        rows += ["", "| depth | schemas this deep | errors at this depth |",
                 "| ---: | ---: | ---: |"]
        for depth in range(1, MAX_DEPTH + 2):
            rows.append(f"| {depth} | {self.schema_depth[depth]:,} | {self.error_depth[depth]:,} |")
        return "\n".join(rows)


EFFECTS = ("allow_unknown", "default", "purge_unknown", "require_all")
"""Rules that never fail; counted when they changed the outcome (top level, nested dicts)."""


def _count_effects(schema: Schema, document: Any, purge: bool, require_all: bool,
                   effects: Counter[str]) -> None:
    if not isinstance(document, dict):
        return
    unknown = [key for key in document if key not in schema]
    if unknown and purge:
        effects["purge_unknown"] += 1
    for field, rules in schema.items():
        value = document.get(field)
        if "default" in rules and (field not in document or
                                   (value is None and not rules.get("nullable"))):
            effects["default"] += 1
        if field not in document and "required" not in rules and require_all:
            effects["require_all"] += 1
        inner = rules.get("schema")
        if isinstance(value, dict) and isinstance(inner, dict) and _is_fields(inner):
            if rules.get("allow_unknown") and any(key not in inner for key in value):
                effects["allow_unknown"] += 1
            _count_effects(inner, value, rules.get("purge_unknown", purge),
                           rules.get("require_all", require_all), effects)


def _rules_of(schema: Schema) -> set[str]:
    found: set[str] = set()
    for rules in schema.values():
        found.update(rules)
        if isinstance(rules.get("schema"), dict):
            inner = rules["schema"]
            found |= _rules_of(inner) if _is_fields(inner) else _rules_of({"_": inner})
        for item in rules.get("items", ()):
            found |= _rules_of({"_": item})
    return found


def _is_fields(schema: dict[str, Any]) -> bool:
    return all(isinstance(rules, dict) for rules in schema.values())


def _depth(schema: Schema) -> int:
    deepest = 1
    for rules in schema.values():
        inner = rules.get("schema")
        if isinstance(inner, dict):
            below = _depth(inner) if _is_fields(inner) else _depth({"_": inner})
            deepest = max(deepest, 1 + below)
        for item in rules.get("items", ()):
            deepest = max(deepest, 1 + _depth({"_": item}))
    return deepest


def _flatten(errors: list[Any]) -> list[Any]:
    out = []
    for error in errors:
        out.append(error)
        if error.is_group_error:
            out += _flatten(error.child_errors)
    return out


def assert_same(schema: Schema, purge: bool, compiled: Any, reference: Any,
                document: dict[Any, Any], exercised: Exercised) -> None:
    """The compiled validator gives Cerberus's verdict, document and errors for ``document``."""
    before = repr(document)
    context = f"\nschema={schema!r}\npurge_unknown={purge}\ndocument={document!r}"
    try:
        ok = reference.validate(document)
    except Exception as exc:  # Cerberus itself fails on some odd values; so must we
        exercised.raised += 1
        with pytest.raises(type(exc)):
            compiled.validate(document)
        with pytest.raises(type(exc)):
            compiled.check(document)
        return
    assert repr(document) == before, f"Cerberus modified the document{context}"
    value_failures, handed_over = compiled.by_reference["value"], compiled.reference_runs
    result = compiled.validate(document)
    assert compiled.by_reference["value"] == value_failures, (
        f"a compiled check failed where Cerberus did not{context}")
    if compiled.reference_runs != handed_over:
        exercised.handed_over += 1
    exercised.document(schema, document, purge, reference, ok)
    assert result.ok == ok, context
    assert repr(result.errors) == repr(reference.errors), context
    expected = reference.document if ok else None
    assert repr(result.document) == repr(expected), context
    assert repr(document) == before, f"the compiled validator modified the document{context}"
    checked = compiled.check(document)  # Silver's shortcut: None, or validate()'s answer
    if checked is None:
        exercised.kept += 1
        assert ok and repr(reference.document) == before, context
    else:
        assert (checked.ok, repr(checked.errors), repr(checked.document)) == (
            result.ok, repr(result.errors), repr(result.document)), context
    assert repr(document) == before, f"check modified the document{context}"


@pytest.fixture(scope="module")
def exercised() -> Exercised:
    """One differential run, shared by the tests below."""
    exercised = Exercised()
    started = time.perf_counter()

    @settings(max_examples=max(1, DOCUMENTS // DOCUMENTS_PER_SCHEMA), derandomize=True,
              deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much, HealthCheck.large_base_example])
    @given(schema=schemas(), purge=st.booleans(), data=st.data())
    def check(schema: Schema, purge: bool, data: st.DataObject) -> None:
        try:
            reference = AssayValidator(copy.deepcopy(schema), purge_unknown=purge)
        except cerberus.SchemaError:
            exercised.invalid_schemas += 1
            with pytest.raises(SchemaError):
                compile_schema(schema, table="t", purge_unknown=purge)
            return
        compiled = compile_schema(schema, table="t", purge_unknown=purge)
        assert compiled.fallback_rules == ()
        exercised.schema(schema)
        for _ in range(DOCUMENTS_PER_SCHEMA):
            document = document_for(data.draw, schema)
            assert_same(schema, purge, compiled, reference, document, exercised)

    check()
    exercised.seconds = time.perf_counter() - started
    return exercised


def test_compiled_validators_agree_with_cerberus(
    exercised: Exercised, capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        print(f"\n\ndifferential run: {exercised.documents:,} documents compared "
              f"({exercised.valid:,} valid) against {exercised.schemas:,} schemas "
              f"({exercised.invalid_schemas:,} more refused by both); "
              f"{exercised.raised:,} on which Cerberus raised (so did the compiled validator); "
              f"{exercised.handed_over:,} handed to Cerberus by the compiled validator "
              f"(shapes it leaves to Cerberus); {exercised.kept:,} valid ones that check() "
              f"kept as they were; "
              f"{exercised.seconds:.1f} s\n")
        print(exercised.table())
    assert exercised.documents >= DOCUMENTS * 0.8
    assert exercised.handed_over <= exercised.documents * 0.05
    assert exercised.kept >= exercised.valid * 0.05  # check's shortcut was taken, and agreed


def test_every_supported_rule_was_exercised(exercised: Exercised) -> None:
    never = {rule for rule in SUPPORTED_RULES if not exercised.in_schema[rule]}
    assert not never, f"rules never in a generated schema: {never}"
    failing = {"type", "required", "nullable", "empty", "min", "max", "minlength", "maxlength",
               "regex", "allowed", "forbidden", "coerce", "schema", "items", "unknown field"}
    silent = {rule for rule in failing if not exercised.failed[rule]}
    assert not silent, f"rules that never produced an error: {silent}"
    idle = {rule for rule in EFFECTS if not exercised.effects[rule]}
    assert not idle, f"rules that never took effect: {idle}"


def test_every_nesting_depth_was_exercised(exercised: Exercised) -> None:
    assert all(exercised.schema_depth[depth] for depth in range(1, MAX_DEPTH + 2))
    assert all(exercised.error_depth[depth] for depth in range(1, MAX_DEPTH + 2))
