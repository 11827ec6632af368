"""Reading a Cerberus schema for compilation: which rules are covered, and how they nest."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cerberus import SchemaError as CerberusSchemaError

from assay.processors.validation.reference import AssayValidator

SUPPORTED_RULES = frozenset({
    "allow_unknown", "allowed", "coerce", "default", "empty", "forbidden", "items", "max",
    "maxlength", "meta", "min", "minlength", "nullable", "purge_unknown", "regex",
    "require_all", "required", "schema", "type",
})
"""Rules the compiled validators implement; a schema using any other is run by Cerberus."""

RULE_NAMES = frozenset(AssayValidator.rules)
"""Every rule Cerberus knows, compiled or not."""


class SchemaError(ValueError):
    """A table's validation schema is invalid; the message names the table and says why."""

    def __init__(self, table: str, problem: Any) -> None:
        self.table = table
        self.problem = problem
        super().__init__(f"invalid validation schema for table {table!r}: {problem}")


@dataclass(frozen=True, slots=True)
class Context:
    """The validator settings a (sub-)document is checked under; children may override them."""

    allow_unknown: bool
    purge_unknown: bool
    require_all: bool

    def for_mapping(self, rules: Mapping[str, Any]) -> Context:
        """The settings of the mapping a field's ``schema`` rule describes."""
        return Context(
            allow_unknown=rules.get("allow_unknown", self.allow_unknown),
            purge_unknown=rules.get("purge_unknown", self.purge_unknown),
            require_all=rules.get("require_all", self.require_all),
        )


def type_names(rules: Mapping[str, Any]) -> tuple[str, ...]:
    """The names in a field's ``type`` rule (none when it has no such rule)."""
    types = rules.get("type") or ()
    return (types,) if isinstance(types, str) else tuple(types)


def schema_readings(rules: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None,
                                                       Mapping[str, Any] | None]:
    """How a field's ``schema`` rule is compiled: (for a mapping value, for a list value).

    Cerberus decides at run time: a mapping value is checked against the constraint as a
    schema of fields, a list value against it as the rules of every item. The constraint
    is compiled in each reading Cerberus accepts it in; when it accepts both, only in the
    one the field's type asks for (fields, unless the type is ``list``). A value of a kind
    with no compiled reading is left to Cerberus (None here). ``{}`` reads both ways.
    """
    constraint = rules["schema"]
    if not isinstance(constraint, Mapping):
        return None, None
    if not constraint:
        return constraint, constraint
    as_fields = _accepted(dict(constraint))
    as_rules = _accepted({"_": constraint})
    if as_fields and as_rules:
        names = type_names(rules)
        as_rules = "list" in names and "dict" not in names
        as_fields = not as_rules
    return (constraint if as_fields else None), (constraint if as_rules else None)


def _accepted(schema: dict[str, Any]) -> bool:
    """Whether Cerberus accepts a schema (checked on a copy: Cerberus rewrites schemas).

    Besides SchemaError, Cerberus's schema rewriting raises TypeError or AttributeError on
    a definition that is not a mapping, and RuntimeError on clashing rule names.
    """
    try:
        AssayValidator(copy.deepcopy(schema))
    except (CerberusSchemaError, TypeError, AttributeError, RuntimeError):
        return False
    return True


def unsupported_rules(schema: Mapping[str, Any]) -> set[str]:
    """The rules of a schema, at any depth, that the compiled validators do not implement.

    Field names that are not strings (possible in a schema built in Python, never in JSON)
    count as unsupported: Cerberus orders the errors of mixed keys inconsistently.
    """
    found: set[str] = set()
    _scan_fields(schema, found)
    return found


def _scan_fields(schema: Mapping[str, Any], found: set[str]) -> None:
    if not all(isinstance(field, str) for field in schema):
        found.add("non-string field names")
    for rules in schema.values():
        _scan(rules, found)


def _scan(rules: Any, found: set[str]) -> None:
    if not isinstance(rules, Mapping):
        found.add("rules_set_registry")
        return
    found.update(rule for rule in rules if rule not in SUPPORTED_RULES)
    if not isinstance(rules.get("allow_unknown", False), bool):
        found.add("allow_unknown")
    if "schema" in rules:
        as_fields, as_rules = schema_readings(rules)
        if as_fields is None and as_rules is None:
            found.add("schema")
        _scan_fields(as_fields or {}, found)
        if as_rules is not None:
            _scan(as_rules, found)
    for item_rules in rules.get("items", ()):
        _scan(item_rules, found)


def coercer_chain(constraint: Any, validator: AssayValidator) -> tuple[Callable[[Any], Any], ...]:
    """The callables of a ``coerce`` rule, resolved as Cerberus resolves them."""
    steps = [constraint] if isinstance(constraint, str) or callable(constraint) else constraint
    return tuple(
        getattr(validator, "_normalize_coerce_" + step.replace(" ", "_"))
        if isinstance(step, str) else step
        for step in steps
    )


def anchored_regex(pattern: str, table: str) -> re.Pattern[str]:
    """The ``regex`` rule's pattern as Cerberus applies it: ``$`` appended, matched at the start."""
    try:
        return re.compile(pattern if pattern.endswith("$") else pattern + "$")
    except re.error as exc:
        raise SchemaError(table, f"regex {pattern!r} does not compile: {exc}") from exc
