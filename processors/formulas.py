"""The formula engine: a table's formulas compiled once into closures, applied per raw record.

`compile_formulas` checks a table's formulas against its columns and builds, for each output, a
closure over its operands; `CompiledFormulas.apply` then runs them on a raw record (every value
text or null) and returns the typed outputs. Nothing of the config is looked up at run time.

Reading raw text. A field is read as its operand's ``type`` (text when absent). For every type but
text, the value is stripped and a blank value reads as null. number: a finite `Decimal`;
integer: `int`; boolean: true/false, t/f, yes/no, y/n, 1/0 (any case); date: `strptime` with
``format``; timestamp: `strptime` with ``format``, in ``timezone`` unless the format carries an
offset (``%z``), returned as an aware UTC datetime. A local time repeated when clocks go back is
the first (daylight) one; a local time skipped when clocks go forward is a row error. Each field
read (column and type) is parsed once per row, however many formulas use it.

Nulls. As in SQL, any null operand makes the result null, except: ``coalesce`` (first non-null),
``concat`` with ``skip_nulls`` (nulls and their separators left out; null only when all are),
``is_null``/``not_null``, and ``if`` (a comparison with a null side is false, so ``else`` applies;
a missing ``else`` is null). ``convert`` is null when the value or its unit code is null or blank.

Numbers. Arithmetic on integers stays integer, except ``div``; anything with a number is a
`Decimal` computed to 28 significant digits (``div`` results and inexact unit factors are rounded
half-even there, like Python and PostgreSQL). ``round`` rounds half-up (money-style: 2.5 -> 3,
-2.5 -> -3). ``duration`` is elapsed time (UTC for timestamps, so a day across a daylight-saving
change has 23 or 25 hours), a `Decimal` in its unit, or with ``whole`` the number of whole units
elapsed (truncated toward zero) as an integer. Unit factors come from pint, checked exact.
"""

from __future__ import annotations

import difflib
import functools
import operator
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import (
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from fractions import Fraction
from typing import Any, assert_never
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import pint

from assay.contracts.formulas import (
    Add,
    Coalesce,
    Concat,
    Condition,
    Convert,
    DatePart,
    Div,
    Duration,
    Eq,
    Formula,
    Ge,
    Gt,
    If,
    IsNull,
    Le,
    Lower,
    Lt,
    Mul,
    Ne,
    NotNull,
    Operand,
    Round,
    Sub,
    Trim,
    Upper,
)

Value = Any  # a row value; its type is checked by the formula type system, not by mypy
Slots = list[Value]  # one row's parsed inputs and outputs, at indexes fixed at compile time
Getter = Callable[[Slots], Value]
Parser = Callable[[str | None], Value]

VALUE_TYPES = ("text", "number", "integer", "date", "timestamp", "boolean")
MASS_UNITS = ("pound", "kilogram", "gram", "short_ton", "long_ton", "tonne")
NUMERIC = ("number", "integer")
TEMPORAL = ("date", "timestamp")

_DECIMAL = Context(
    prec=28, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow]
)
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_MICROSECONDS = {
    "weeks": 604_800_000_000,
    "days": 86_400_000_000,
    "hours": 3_600_000_000,
    "minutes": 60_000_000,
    "seconds": 1_000_000,
}
_DATE_PARTS: dict[str, Callable[[date], int]] = {
    "year": lambda d: d.year,
    "iso_year": lambda d: d.isocalendar()[0],
    "quarter": lambda d: (d.month + 2) // 3,
    "month": lambda d: d.month,
    "week": lambda d: d.isocalendar()[1],
    "day": lambda d: d.day,
    "weekday": lambda d: d.isoweekday(),
    "day_of_year": lambda d: d.timetuple().tm_yday,
}
_AS_TEXT: dict[str, Callable[[Value], str]] = {
    "text": str,
    "number": lambda n: format(n, "f"),
    "integer": str,
    "date": date.isoformat,
    "timestamp": datetime.isoformat,
    "boolean": lambda b: "true" if b else "false",
}
_COMPARE: dict[type, Callable[[Value, Value], bool]] = {
    Eq: operator.eq, Ne: operator.ne, Lt: operator.lt, Le: operator.le, Gt: operator.gt,
    Ge: operator.ge,
}
_INTEGER_STEP: dict[type, Callable[[Value, Value], Value]] = {
    Add: operator.add, Sub: operator.sub, Mul: operator.mul,
}
_NUMBER_STEP: dict[type, Callable[[Value, Value], Value]] = {
    Add: _DECIMAL.add, Sub: _DECIMAL.subtract, Mul: _DECIMAL.multiply,
}
_TEXT_METHODS: dict[type, tuple[Callable[[str], str], str]] = {
    Upper: (str.upper, "upper"), Lower: (str.lower, "lower"), Trim: (str.strip, "trim"),
}
# How a column declared with a value type may be read (raw values are text, so text always is;
# a column declared text, or with a type name of its own, may be read as anything):
_READ_AS = {
    "number": {"number", "text"},
    "integer": {"integer", "number", "text"},
    "date": {"date", "timestamp", "text"},
    "timestamp": {"timestamp", "date", "text"},
    "boolean": {"boolean", "text"},
}


class FormulaConfigError(Exception):
    """A table's formulas cannot be compiled; the message names table, output and JSON path."""


class FormulaError(Exception):
    """One row's data failed the formula of output `field`; Bronze quarantines it with `reason`."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"formula {field!r}: {reason}")
        self.field = field
        self.reason = reason


class _RowError(Exception):
    """Raised by a closure on bad row data; `apply` names the output."""


class _ConfigError(Exception):
    """Raised while compiling one formula, at `path` inside it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True, slots=True)
class _Expr:
    """A compiled operand or formula: how to get its value, its type, and how to name it."""

    get: Getter
    type: str
    label: str


@dataclass(frozen=True, slots=True)
class _Step:
    """One output: the fields it is first to read, then its closure."""

    output: str
    reads: tuple[tuple[str, Parser], ...]
    compute: Getter


class CompiledFormulas:
    """A table's formulas, compiled; `apply` computes one raw record's outputs."""

    def __init__(self, table: str, output_types: dict[str, str], steps: Sequence[_Step]) -> None:
        self.table = table
        self.output_types = output_types
        self._steps = tuple(steps)

    def apply(self, raw: Mapping[str, str | None]) -> dict[str, object]:
        """Outputs of one raw record; raises `FormulaError` when its data fails a formula."""
        slots: Slots = []
        outputs: dict[str, object] = {}
        for step in self._steps:
            try:
                for column, parse in step.reads:
                    slots.append(parse(raw.get(column)))
                value = step.compute(slots)
            except _RowError as exc:
                raise FormulaError(step.output, str(exc)) from None
            except DecimalException as exc:
                problem = type(exc).__name__.lower()
                raise FormulaError(step.output, f"a number is out of range ({problem})") from None
            slots.append(value)
            outputs[step.output] = value
        return outputs


def compile_formulas(
    table: str, columns: Mapping[str, str], formulas: Mapping[str, Formula]
) -> CompiledFormulas:
    """Check `formulas` against the table's `columns` (name -> declared type) and compile them."""
    compiler = _Compiler(columns, formulas)
    steps = []
    for output, formula in formulas.items():
        try:
            steps.append(compiler.compile(output, formula))
        except _ConfigError as exc:
            raise FormulaConfigError(
                f"table {table!r}, formula {output!r} at {exc.path}: {exc}"
            ) from None
    return CompiledFormulas(table, compiler.output_types, steps)


class _Compiler:
    """Compiles a table's formulas in order, assigning each field read and output a slot."""

    def __init__(self, columns: Mapping[str, str], formulas: Mapping[str, Formula]) -> None:
        self.columns = columns
        self.names = list(formulas)
        self.output_types: dict[str, str] = {}
        self._outputs: dict[str, int] = {}
        self._fields: dict[tuple[str, str, str | None, str | None], int] = {}
        self._reads: list[tuple[str, Parser]] = []
        self._current = ""

    def compile(self, output: str, formula: Formula) -> _Step:
        if output in self.columns:
            raise _ConfigError("$", f"output {output!r} has the same name as a column")
        self._current, self._reads = output, []
        expr = self._formula(formula)
        step = _Step(output, tuple(self._reads), expr.get)
        self._outputs[output] = self._next_slot()
        self.output_types[output] = expr.type
        return step

    def _next_slot(self) -> int:
        return len(self._fields) + len(self._outputs)

    def _formula(self, f: Formula) -> _Expr:
        match f:
            case Concat():
                return self._concat(f)
            case Convert():
                return self._convert(f)
            case DatePart():
                return self._date_part(f)
            case Duration():
                return self._duration(f)
            case Add() | Sub() | Mul():
                return self._fold(f.args, _INTEGER_STEP[type(f)], _NUMBER_STEP[type(f)])
            case Div():
                return self._div(f)
            case Round():
                return self._round(f)
            case Coalesce():
                return self._coalesce(f)
            case Upper() | Lower() | Trim():
                return self._text_method(f)
            case If():
                return self._if(f)
            case _:
                assert_never(f)

    # -- operands -------------------------------------------------------------------------------

    def _operand(self, op: Operand, path: str) -> _Expr:
        if op.field is not None:
            return self._field(op.field, op, path)
        if op.ref is not None:
            return self._ref(op.ref, op, path)
        return self._literal(op, path)

    def _field(self, column: str, op: Operand, path: str) -> _Expr:
        if column not in self.columns:
            hint = _did_you_mean(column, self.columns)
            raise _ConfigError(path, f"field {column!r} is not a column of the table{hint}")
        type_ = op.type or "text"
        declared = self.columns[column]
        if declared in _READ_AS and type_ not in _READ_AS[declared]:
            raise _ConfigError(
                f"{path}.type", f"field {column!r} is declared {declared} and cannot be read as "
                f"{type_}"
            )
        label = f"field {column!r}"
        key = (column, type_, op.format, op.timezone)
        slot = self._fields.get(key)
        if slot is None:
            parse = _parser(type_, op, label, path)
            slot = self._fields[key] = self._next_slot()
            self._reads.append((column, parse))
        return _Expr(operator.itemgetter(slot), type_, label)

    def _ref(self, name: str, op: Operand, path: str) -> _Expr:
        if op.type is not None or op.format is not None or op.timezone is not None:
            raise _ConfigError(path, "a ref has its output's type: drop type, format and timezone")
        if name == self._current:
            raise _ConfigError(path, f"ref {name!r} is this formula itself")
        if name in self.names and name not in self._outputs:
            raise _ConfigError(
                path, f"ref {name!r} is defined later; a formula may only use earlier outputs"
            )
        if name not in self._outputs:
            hint = _did_you_mean(name, self._outputs)
            raise _ConfigError(path, f"ref {name!r} is not an output of the table{hint}")
        return _Expr(operator.itemgetter(self._outputs[name]), self.output_types[name],
                     f"ref {name!r}")

    def _literal(self, op: Operand, path: str) -> _Expr:
        value = op.value
        if isinstance(value, msgspec.UnsetType):
            raise _ConfigError(path, "an operand takes one of `field`, `ref` or `value`")
        label = f"value {msgspec.json.encode(value).decode()}"
        if op.type is not None:
            try:
                parsed = _parser(op.type, op, label, path)(_as_raw_text(value))
            except _RowError as exc:
                raise _ConfigError(path, str(exc)) from None
            return _constant(parsed, op.type, label)
        if op.format is not None or op.timezone is not None:
            raise _ConfigError(path, "format and timezone need a type: date or timestamp")
        match value:
            case bool():
                return _constant(value, "boolean", label)
            case int():
                return _constant(value, "integer", label)
            case float():
                return _constant(_finite(Decimal(repr(value)), path), "number", label)
            case str():
                return _constant(value, "text", label)
        raise _ConfigError(
            path, 'a null value needs a type, e.g. {"value": null, "type": "number"}'
        )

    def _operands(self, ops: Sequence[Operand], path: str, allowed: Collection[str],
                  what: str) -> list[_Expr]:
        return [self._typed(op, f"{path}[{i}]", allowed, what) for i, op in enumerate(ops)]

    def _typed(self, op: Operand, path: str, allowed: Collection[str], what: str) -> _Expr:
        expr = self._operand(op, path)
        if expr.type not in allowed:
            raise _ConfigError(
                path, f"{what} needs {' or '.join(allowed)}, but {expr.label} is {expr.type}"
            )
        return expr

    # -- formulas ---------------------------------------------------------------------------------

    def _concat(self, f: Concat) -> _Expr:
        parts = [(e.get, _AS_TEXT[e.type]) for e in
                 self._operands(f.args, "$.args", VALUE_TYPES, "concat")]
        separator = f.separator

        if f.skip_nulls:
            def get(slots: Slots) -> Value:
                texts = [text(v) for value, text in parts if (v := value(slots)) is not None]
                return separator.join(texts) if texts else None
        else:
            def get(slots: Slots) -> Value:
                texts = []
                for value, text in parts:
                    v = value(slots)
                    if v is None:
                        return None
                    texts.append(text(v))
                return separator.join(texts)
        return _Expr(get, "text", "concat")

    def _convert(self, f: Convert) -> _Expr:
        value = self._typed(f.arg, "$.arg", NUMERIC, "convert").get
        to = _kilograms(f.to, "$.to")
        if f.from_ is not None:
            if f.from_code is not None or f.units is not None:
                raise _ConfigError("$", "give either `from` or `from_code` with `units`, not both")
            return _Expr(_scaled(value, _factor(_kilograms(f.from_, "$.from"), to)), "number",
                         "convert")
        if f.from_code is None or not f.units:
            raise _ConfigError("$", "convert needs `from` (a unit) or `from_code` with `units`")
        code = self._typed(f.from_code, "$.from_code", ("text",), "from_code")
        factors: dict[str, tuple[Decimal, Decimal | None]] = {}
        for raw_code, unit in f.units.items():
            path = f"$.units[{raw_code!r}]"
            if raw_code.strip() in factors:
                raise _ConfigError(path, f"unit code {raw_code.strip()!r} is given twice")
            factors[raw_code.strip()] = _factor(_kilograms(unit, path), to)
        return _Expr(_scaled_by_code(value, code, factors), "number", "convert")

    def _date_part(self, f: DatePart) -> _Expr:
        arg = self._typed(f.arg, "$.arg", TEMPORAL, "date_part")
        value, part = arg.get, _DATE_PARTS[f.part]
        if arg.type == "date":
            if f.timezone is not None:
                raise _ConfigError("$.timezone", f"{arg.label} is a date: it has no timezone")
            return _Expr(_null_or(value, part), "integer", "date_part")
        if f.timezone is None:
            raise _ConfigError("$", f"{arg.label} is a timestamp: give the `timezone` whose "
                               "calendar to read it in (e.g. \"UTC\")")
        zone = _zone(f.timezone, "$.timezone")
        return _Expr(_null_or(value, lambda t: part(t.astimezone(zone))), "integer", "date_part")

    def _duration(self, f: Duration) -> _Expr:
        start = self._typed(f.start, "$.start", TEMPORAL, "duration")
        end = self._typed(f.end, "$.end", (start.type,), f"duration from {start.label}")
        first, last, unit = start.get, end.get, _MICROSECONDS[f.unit]
        whole = f.whole

        def get(slots: Slots) -> Value:
            a, b = first(slots), last(slots)
            if a is None or b is None:
                return None
            delta = b - a
            elapsed = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
            if whole:
                return abs(elapsed) // unit * (1 if elapsed >= 0 else -1)
            return _DECIMAL.divide(elapsed, unit)
        return _Expr(get, "integer" if whole else "number", "duration")

    def _fold(self, ops: Sequence[Operand], integer_step: Callable[[Value, Value], Value],
              number_step: Callable[[Value, Value], Value]) -> _Expr:
        args = self._operands(ops, "$.args", NUMERIC, "arithmetic")
        type_ = "integer" if all(a.type == "integer" for a in args) else "number"
        step = integer_step if type_ == "integer" else number_step
        first, rest = args[0].get, [a.get for a in args[1:]]

        def get(slots: Slots) -> Value:
            total = first(slots)
            for value in rest:
                v = value(slots)
                if total is None or v is None:
                    return None
                total = step(total, v)
            return total
        return _Expr(get, type_, "arithmetic")

    def _div(self, f: Div) -> _Expr:
        args = self._operands(f.args, "$.args", NUMERIC, "div")
        first, rest = args[0].get, [(a.get, a.label) for a in args[1:]]

        def get(slots: Slots) -> Value:
            quotient = first(slots)
            for value, label in rest:
                v = value(slots)
                if quotient is None or v is None:
                    return None
                if not v:
                    raise _RowError(f"division by zero: {label} is {v}")
                quotient = _DECIMAL.divide(quotient, v)
            return quotient
        return _Expr(get, "number", "div")

    def _round(self, f: Round) -> _Expr:
        arg = self._typed(f.arg, "$.arg", NUMERIC, "round")
        if arg.type == "integer":
            return arg
        value, label, digits = arg.get, arg.label, f.digits
        places = Decimal((0, (1,), -digits))

        def get(slots: Slots) -> Value:
            v = value(slots)
            if v is None:
                return None
            try:
                return v.quantize(places, ROUND_HALF_UP, _DECIMAL)
            except InvalidOperation:
                raise _RowError(f"{label} value {v} has too many digits to round to "
                                f"{digits} places") from None
        return _Expr(get, "number", "round")

    def _coalesce(self, f: Coalesce) -> _Expr:
        args = [self._operand(op, f"$.args[{i}]") for i, op in enumerate(f.args)]
        type_ = args[0].type
        for i, a in enumerate(args[1:], start=1):
            type_ = _unify(type_, a, f"$.args[{i}]", "coalesce")
        getters = [_widened(a, type_) for a in args]

        def get(slots: Slots) -> Value:
            for value in getters:
                v = value(slots)
                if v is not None:
                    return v
            return None
        return _Expr(get, type_, "coalesce")

    def _text_method(self, f: Upper | Lower | Trim) -> _Expr:
        method, name = _TEXT_METHODS[type(f)]
        arg = self._typed(f.arg, "$.arg", ("text",), name)
        return _Expr(_null_or(arg.get, method), "text", name)

    def _if(self, f: If) -> _Expr:
        test = self._condition(f.when, "$.when")
        then = self._operand(f.then, "$.then")
        type_ = then.type
        otherwise: Getter = _constant(None, type_, "null").get
        if f.else_ is not None:
            other = self._operand(f.else_, "$.else")
            type_ = _unify(type_, other, "$.else", "if")
            otherwise = _widened(other, type_)
        yes = _widened(then, type_)

        def get(slots: Slots) -> Value:
            return yes(slots) if test(slots) else otherwise(slots)
        return _Expr(get, type_, "if")

    def _condition(self, c: Condition, path: str) -> Callable[[Slots], bool]:
        match c:
            case IsNull():
                value = self._operand(c.arg, f"{path}.arg").get
                return lambda slots: value(slots) is None
            case NotNull():
                value = self._operand(c.arg, f"{path}.arg").get
                return lambda slots: value(slots) is not None
        left = self._operand(c.left, f"{path}.left")
        right = self._operand(c.right, f"{path}.right")
        _unify(left.type, right, f"{path}.right", f"comparing with {left.label}")
        first, second, compare = left.get, right.get, _COMPARE[type(c)]

        def test(slots: Slots) -> bool:
            a, b = first(slots), second(slots)
            return a is not None and b is not None and compare(a, b)
        return test


# -- compile-time helpers --------------------------------------------------------------------------


def _did_you_mean(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unify(type_: str, other: _Expr, path: str, what: str) -> str:
    if other.type == type_:
        return type_
    if {type_, other.type} == {"integer", "number"}:
        return "number"
    raise _ConfigError(path, f"{what}: {other.label} is {other.type}, expected {type_}")


def _widened(expr: _Expr, type_: str) -> Getter:
    if type_ == "number" and expr.type == "integer":
        return _null_or(expr.get, Decimal)
    return expr.get


def _as_raw_text(value: str | int | float | bool | None) -> str | None:
    """A typed literal as the raw text a CSV would hold, to be read like a field."""
    match value:
        case None | str():
            return value
        case bool():
            return "true" if value else "false"
    return repr(value)


def _constant(value: Value, type_: str, label: str) -> _Expr:
    return _Expr(lambda _slots: value, type_, label)


def _null_or(value: Getter, fn: Callable[[Value], Value]) -> Getter:
    def get(slots: Slots) -> Value:
        v = value(slots)
        return None if v is None else fn(v)
    return get


def _finite(number: Decimal, path: str) -> Decimal:
    if not number.is_finite():
        raise _ConfigError(path, f"value {number} is not a finite number")
    return number


def _zone(name: str, path: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _ConfigError(
            path, f"timezone {name!r} is not an IANA zone name (e.g. 'America/Los_Angeles')"
        ) from None


def _checked_format(fmt: str | None, path: str) -> str:
    if fmt is None:
        raise _ConfigError(path, "date and timestamp need a strptime `format`, e.g. '%Y-%m-%d'")
    sample = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    try:
        datetime.strptime(sample.strftime(fmt), fmt)
    except ValueError as exc:
        raise _ConfigError(f"{path}.format", f"format {fmt!r} is not usable: {exc}") from None
    return fmt


def _parser(type_: str, op: Operand, label: str, path: str) -> Parser:
    """How to read raw text as `type_`, with the operand's format and timezone checked."""
    if type_ != "timestamp" and op.timezone is not None:
        raise _ConfigError(f"{path}.timezone", "timezone applies only to type timestamp")
    if type_ not in TEMPORAL and op.format is not None:
        raise _ConfigError(f"{path}.format", "format applies only to types date and timestamp")
    match type_:
        case "text":
            return lambda text: text
        case "number":
            return _number_parser(label)
        case "integer":
            return _integer_parser(label)
        case "boolean":
            return _boolean_parser(label)
        case "date":
            return _date_parser(_checked_format(op.format, path), label)
    if op.timezone is None:
        raise _ConfigError(path, "a timestamp needs the IANA `timezone` its local times are in")
    return _timestamp_parser(_checked_format(op.format, path), _zone(op.timezone, path), label)


# -- run-time parsers ------------------------------------------------------------------------------


def _number_parser(label: str) -> Parser:
    def parse(text: str | None) -> Value:
        if text is None or not (stripped := text.strip()):
            return None
        try:
            number = Decimal(stripped)
        except InvalidOperation:
            number = Decimal("NaN")
        if not number.is_finite():
            raise _RowError(f"{label} value {text!r} is not a number")
        return number
    return parse


def _integer_parser(label: str) -> Parser:
    def parse(text: str | None) -> Value:
        if text is None or not (stripped := text.strip()):
            return None
        try:
            return int(stripped)
        except ValueError:
            raise _RowError(f"{label} value {text!r} is not an integer") from None
    return parse


def _boolean_parser(label: str) -> Parser:
    def parse(text: str | None) -> Value:
        if text is None or not (word := text.strip().lower()):
            return None
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise _RowError(f"{label} value {text!r} is not a boolean")
    return parse


def _date_parser(fmt: str, label: str) -> Parser:
    def parse(text: str | None) -> Value:
        if text is None or not (stripped := text.strip()):
            return None
        try:
            return datetime.strptime(stripped, fmt).date()
        except ValueError:
            raise _RowError(f"{label} value {text!r} is not a date in format {fmt!r}") from None
    return parse


def _timestamp_parser(fmt: str, zone: ZoneInfo, label: str) -> Parser:
    def parse(text: str | None) -> Value:
        if text is None or not (stripped := text.strip()):
            return None
        try:
            local = datetime.strptime(stripped, fmt)
        except ValueError:
            raise _RowError(
                f"{label} value {text!r} is not a timestamp in format {fmt!r}"
            ) from None
        if local.tzinfo is not None:
            return local.astimezone(UTC)
        utc = local.replace(tzinfo=zone).astimezone(UTC)
        if utc.astimezone(zone).replace(tzinfo=None) != local:
            raise _RowError(f"{label} value {text!r} does not exist in {zone.key} "
                            "(skipped by a daylight-saving change)")
        return utc
    return parse


# -- units -----------------------------------------------------------------------------------------


@functools.cache
def _units() -> pint.UnitRegistry:
    return pint.UnitRegistry(non_int_type=Decimal)


@functools.cache
def _pint_kilograms(unit: str) -> Fraction:
    """One `unit` in kilograms, exactly: pint's definitions computed in Decimal, Inexact trapped."""
    quantity = _units().Quantity(Decimal(1), unit)
    with localcontext(Context(prec=100, traps=[Inexact, InvalidOperation])):
        magnitude = quantity.to("kilogram").magnitude
    if not isinstance(magnitude, Decimal):
        raise TypeError(f"pint gave {magnitude!r} for {unit}, not an exact Decimal")
    return Fraction(magnitude)


def _kilograms(unit: str, path: str) -> Fraction:
    if unit == "ton":
        raise _ConfigError(path, "unit 'ton' is ambiguous: choose short_ton (2000 lb), "
                           "long_ton (2240 lb) or tonne (1000 kg)")
    if unit not in MASS_UNITS:
        raise _ConfigError(path, f"unit {unit!r} is not one of {', '.join(MASS_UNITS)}"
                           f"{_did_you_mean(unit, MASS_UNITS)}")
    return _pint_kilograms(unit)


def _factor(source: Fraction, target: Fraction) -> tuple[Decimal, Decimal | None]:
    """Multiplier, and divisor when the ratio has no finite decimal (pound -> long_ton: 1/2240)."""
    ratio = source / target
    rest = ratio.denominator
    for prime in (2, 5):
        while rest % prime == 0:
            rest //= prime
    if rest != 1:
        return Decimal(ratio.numerator), Decimal(ratio.denominator)
    exact = Context(prec=100, traps=[Inexact, InvalidOperation])
    return exact.divide(Decimal(ratio.numerator), Decimal(ratio.denominator)), None


def _scaled(value: Getter, factor: tuple[Decimal, Decimal | None]) -> Getter:
    multiplier, divisor = factor
    if divisor is None:
        return _null_or(value, lambda v: _DECIMAL.multiply(v, multiplier))
    return _null_or(value, lambda v: _DECIMAL.divide(_DECIMAL.multiply(v, multiplier), divisor))


def _scaled_by_code(value: Getter, code: _Expr,
                    factors: Mapping[str, tuple[Decimal, Decimal | None]]) -> Getter:
    unit_code, label, known = code.get, code.label, ", ".join(sorted(factors))

    def get(slots: Slots) -> Value:
        v, c = value(slots), unit_code(slots)
        if v is None or c is None or not (key := c.strip()):
            return None
        factor = factors.get(key)
        if factor is None:
            raise _RowError(f"{label} value {c!r} is not a known unit code ({known})")
        multiplier, divisor = factor
        scaled = _DECIMAL.multiply(v, multiplier)
        return scaled if divisor is None else _DECIMAL.divide(scaled, divisor)
    return get
