"""Derived-field formulas as written in a table's JSON config.

A table's config holds ``"formulas": {"<output>": <Formula>, ...}``, evaluated in order on each
raw record in Bronze; a formula may use the outputs defined before it (``{"ref": ...}``).
Formulas are tagged by ``"op"``, conditions by ``"cmp"``; an operand is one of::

    {"field": "ShipDate", "type": "timestamp", "format": "%Y-%m-%d %H:%M:%S",
     "timezone": "America/Los_Angeles"}          a raw column, read with a type (default text)
    {"ref": "weight_kg"}                         an earlier output
    {"value": 2}                                 a literal (string, integer, number, boolean)
    {"value": "2020-02-29", "type": "date", "format": "%Y-%m-%d"}   a literal read like raw text
    {"value": null, "type": "number"}            a typed null

These types only describe the config; `processors.formulas` checks and compiles them.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

ValueType = Literal["text", "number", "integer", "date", "timestamp", "boolean"]
DatePartName = Literal[
    "year", "iso_year", "quarter", "month", "week", "day", "weekday", "day_of_year"
]
DurationUnit = Literal["weeks", "days", "hours", "minutes", "seconds"]


class Operand(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One input of a formula: a raw column, an earlier output, or a literal value."""

    field: str | None = None
    ref: str | None = None
    value: str | int | float | bool | msgspec.UnsetType | None = msgspec.UNSET
    type: ValueType | None = None
    format: str | None = None
    timezone: str | None = None

    def __post_init__(self) -> None:
        given = [self.field is not None, self.ref is not None, self.value is not msgspec.UNSET]
        if sum(given) != 1:
            raise ValueError("an operand takes exactly one of `field`, `ref` or `value`")


Operands = Annotated[list[Operand], msgspec.Meta(min_length=1)]
TwoOrMore = Annotated[list[Operand], msgspec.Meta(min_length=2)]


class _Formula(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="op"):
    """Base of every formula; the subclass's tag is its ``"op"``."""


class Concat(_Formula, tag="concat", frozen=True):
    """Text of every operand joined by `separator`; with `skip_nulls`, nulls are left out."""

    args: Operands
    separator: str = ""
    skip_nulls: bool = False


class Convert(_Formula, tag="convert", frozen=True):
    """A mass converted to unit `to`, from a fixed unit or from a per-row unit code."""

    arg: Operand
    to: str
    from_: str | None = msgspec.field(default=None, name="from")
    from_code: Operand | None = None
    units: dict[str, str] | None = None


class DatePart(_Formula, tag="date_part", frozen=True):
    """An integer part of a date, or of a timestamp seen in `timezone`."""

    arg: Operand
    part: DatePartName
    timezone: str | None = None


class Duration(_Formula, tag="duration", frozen=True):
    """Time from `start` to `end` in `unit`; whole units (truncated) when `whole`."""

    start: Operand
    end: Operand
    unit: DurationUnit
    whole: bool = False


class Add(_Formula, tag="add", frozen=True):
    """Sum of the operands."""

    args: TwoOrMore


class Sub(_Formula, tag="sub", frozen=True):
    """First operand minus the others."""

    args: TwoOrMore


class Mul(_Formula, tag="mul", frozen=True):
    """Product of the operands."""

    args: TwoOrMore


class Div(_Formula, tag="div", frozen=True):
    """First operand divided by the others."""

    args: TwoOrMore


class Round(_Formula, tag="round", frozen=True):
    """A number rounded half-up (away from zero on a tie) to `digits` decimal places."""

    arg: Operand
    digits: Annotated[int, msgspec.Meta(ge=0)] = 0


class Coalesce(_Formula, tag="coalesce", frozen=True):
    """The first operand that is not null."""

    args: Operands


class Upper(_Formula, tag="upper", frozen=True):
    """Text in upper case."""

    arg: Operand


class Lower(_Formula, tag="lower", frozen=True):
    """Text in lower case."""

    arg: Operand


class Trim(_Formula, tag="trim", frozen=True):
    """Text without leading and trailing whitespace."""

    arg: Operand


class _Condition(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="cmp"):
    """Base of the conditions of `If`; the subclass's tag is its ``"cmp"``."""


class _Compare(_Condition, frozen=True):
    left: Operand
    right: Operand


class Eq(_Compare, tag="eq", frozen=True):
    """left = right."""


class Ne(_Compare, tag="ne", frozen=True):
    """left <> right."""


class Lt(_Compare, tag="lt", frozen=True):
    """left < right."""


class Le(_Compare, tag="le", frozen=True):
    """left <= right."""


class Gt(_Compare, tag="gt", frozen=True):
    """left > right."""


class Ge(_Compare, tag="ge", frozen=True):
    """left >= right."""


class IsNull(_Condition, tag="is_null", frozen=True):
    """The operand is null."""

    arg: Operand


class NotNull(_Condition, tag="not_null", frozen=True):
    """The operand is not null."""

    arg: Operand


Condition = Eq | Ne | Lt | Le | Gt | Ge | IsNull | NotNull


class If(_Formula, tag="if", frozen=True):
    """`then` when the condition holds, else `else` (null when absent)."""

    when: Condition
    then: Operand
    else_: Operand | None = msgspec.field(default=None, name="else")


Formula = (
    Concat | Convert | DatePart | Duration | Add | Sub | Mul | Div | Round
    | Coalesce | Upper | Lower | Trim | If
)
Formulas = dict[str, Formula]
