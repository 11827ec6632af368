"""Generates the Python source of one table's checks, following Cerberus step by step.

Every (sub-)document gets two functions, as in Cerberus: a *normaliser* (defaults, purge,
coercion, nested containers; errors go to the flat list ``nerr``) and a *validator* (the
rules, in Cerberus's order, returning the level's error entries; a nested level's entries
become the children of one ``schema`` or ``items`` group entry). A mapping's fields are
written out inline; a list's items are checked in a loop.

Safety: nothing from the schema is written into the source. Field names, limits, patterns,
messages and coercers are constants in the functions' namespace, referred to by generated
names (``key_3``, ``limit_7``); the source only holds generated names, integers and rule
names of this module.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from copy import deepcopy
from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple

from cerberus import errors

from assay.processors.validation import runtime
from assay.processors.validation.reference import AssayValidator
from assay.processors.validation.schema import (
    RULE_NAMES,
    Context,
    anchored_regex,
    coercer_chain,
    schema_readings,
    type_names,
)

Rules = Mapping[str, Any]

DROPPED_WHEN_EMPTY = frozenset({"allowed", "forbidden", "items", "minlength", "maxlength",
                                "regex"})
"""What Cerberus's ``empty`` rule skips for an empty value (``min``, ``max``, ``schema`` run)."""

_IMMUTABLE = (str, int, float, Decimal, date, type(None))

_RUNTIME: dict[str, Any] = {
    "MISSING": runtime.MISSING,
    "Bailout": runtime.Bailout,
    "SIZED": runtime.SIZED,
    "HASHABLE": runtime.HASHABLE,
    "ITERABLE": runtime.ITERABLE,
    "ITERABLE_NOT_STR": runtime.ITERABLE_NOT_STR,
    "SEQUENCE_NOT_STR": runtime.SEQUENCE_NOT_STR,
    "OTHER_CONTAINER": runtime.OTHER_CONTAINER,
    "message": runtime.message,
    "coerce_error": runtime.coerce_error,
    "unknown_fields": runtime.unknown_fields,
    "deepcopy": deepcopy,
    "UNALLOWED_VALUE": errors.UNALLOWED_VALUE,
    "UNALLOWED_VALUES": errors.UNALLOWED_VALUES,
    "FORBIDDEN_VALUE": errors.FORBIDDEN_VALUE,
    "FORBIDDEN_VALUES": errors.FORBIDDEN_VALUES,
    "ITEMS_LENGTH": errors.ITEMS_LENGTH,
    "NOT_NULLABLE": runtime.message(errors.NOT_NULLABLE),
    "EMPTY_NOT_ALLOWED": runtime.message(errors.EMPTY_NOT_ALLOWED),
    "REQUIRED_FIELD": runtime.message(errors.REQUIRED_FIELD),
}

Normalizer = Callable[[dict[str, Any], tuple[Any, ...], list[runtime.Entry]], dict[str, Any]]
Checker = Callable[[dict[str, Any], tuple[Any, ...]], list[runtime.Entry]]


class Level(NamedTuple):
    """The generated functions of one (sub-)document; no normaliser when it has nothing to do."""

    normalize: str | None
    validate: str


class Program(NamedTuple):
    """A table's compiled checks: the top level's two functions and their source."""

    normalize: Normalizer
    validate: Checker
    source: str
    copies: bool = False
    """The top level's normalisation only copies the document (no rule changes a value)."""


def generate(schema: Rules, context: Context, validator: AssayValidator, table: str) -> Program:
    """Compile a (Cerberus-accepted, fully supported) schema into a Program."""
    writer = _Writer(validator, table)
    top = writer.mapping(schema, context, always_copy=True)
    source = "\n\n".join(writer.functions) + "\n"
    namespace = dict(writer.namespace)
    exec(compile(source, f"<validation of table {table!r}>", "exec"), namespace)
    assert top.normalize is not None
    return Program(namespace[top.normalize], namespace[top.validate], source,
                   top.normalize in writer.copies)


def _indent(lines: Iterable[str]) -> list[str]:
    return ["    " + line for line in lines]


class _Writer:
    """Accumulates generated functions and the constants they refer to."""

    def __init__(self, validator: AssayValidator, table: str) -> None:
        self.validator = validator
        self.table = table
        self.functions: list[str] = []
        self.copies: set[str] = set()
        """Mapping normalisers that only copy their document."""
        self.namespace: dict[str, Any] = dict(_RUNTIME)
        self._numbers = itertools.count()
        self._levels: dict[tuple[str, int, Context], tuple[object, Level]] = {}

    # -- names and functions ---------------------------------------------------------

    def name(self, prefix: str) -> str:
        return f"{prefix}_{next(self._numbers)}"

    def constant(self, value: Any, prefix: str) -> str:
        name = self.name(prefix)
        self.namespace[name] = value
        return name

    def define(self, prefix: str, parameters: str, body: list[str]) -> str:
        name = self.name(prefix)
        self.functions.append("\n".join([f"def {name}({parameters}):", *_indent(body)]))
        return name

    def _memo(self, kind: str, node: object, context: Context,
              build: Callable[[], Level]) -> Level:
        key = (kind, id(node), context)
        if key not in self._levels:
            self._levels[key] = (node, build())
        return self._levels[key][1]

    # -- levels --------------------------------------------------------------------------

    def mapping(self, schema: Rules, context: Context, *, always_copy: bool = False) -> Level:
        """The functions of a mapping checked against a schema of fields."""
        return self._memo("mapping", schema, context, lambda: Level(
            self._mapping_normalizer(schema, context, always_copy),
            self._mapping_validator(schema, context),
        ))

    def sequence(self, rules: Rules, context: Context) -> Level:
        """The functions of a list whose every item is checked against one set of rules."""
        return self._memo("sequence", rules, context, lambda: self._sequence(rules, context))

    def items(self, items: list[Rules], context: Context) -> Level:
        """The functions of a list checked position by position (the ``items`` rule)."""
        return self._memo("items", items, context, lambda: self._items(items, context))

    def _mapping_normalizer(self, schema: Rules, context: Context, always_copy: bool) -> str | None:
        body: list[str] = []
        for field, rules in schema.items():
            body += self._normalize_field(rules, context, self.constant(field, "key"))
        purge = context.purge_unknown and not context.allow_unknown
        changes = bool(body) or purge
        if not (changes or always_copy):
            return None
        if purge:
            known = self.constant(frozenset(schema), "known")
            head = [
                f"if {known}.issuperset(doc):",
                "    out = dict(doc)",
                "else:",
                f"    out = {{k: x for k, x in doc.items() if k in {known}}}",
            ]
        else:
            head = ["out = dict(doc)"]
        name = self.define("normalize_mapping", "doc, path, nerr", [*head, *body, "return out"])
        if not changes:
            self.copies.add(name)
        return name

    def _normalize_field(self, rules: Rules, context: Context, key: str) -> list[str]:
        value_lines = self._normalize_value(rules, context, key)
        if not value_lines and "default" not in rules:
            return []
        lines = [f"v = out.get({key}, MISSING)"]
        if "default" in rules:
            absent = "v is MISSING" if rules.get("nullable", False) else "v is MISSING or v is None"
            lines += [f"if {absent}:", f"    v = out[{key}] = {self._default(rules)}"]
            return [*lines, *value_lines, f"out[{key}] = v"] if value_lines else lines
        return [*lines, "if v is not MISSING:", *_indent([*value_lines, f"out[{key}] = v"])]

    def _mapping_validator(self, schema: Rules, context: Context) -> str:
        check_unknown = not context.allow_unknown
        body = ["errs = []", "missing = 0"] if check_unknown else ["errs = []"]
        for field, rules in schema.items():
            key = self.constant(field, "key")
            absent = ["missing += 1"] if check_unknown else []
            if rules.get("required", context.require_all) is True:
                rule = "required" if "required" in rules else "__require_all__"
                absent.append(f"errs.append((path + ({key},), {rule!r}, REQUIRED_FIELD))")
            body += [f"v = doc.get({key}, MISSING)", "if v is not MISSING:"]
            body += _indent(self._validate_value(rules, context, key))
            if absent:
                body += ["else:", *_indent(absent)]
        if check_unknown:
            known = self.constant(frozenset(schema), "known")
            body += [
                f"if len(doc) + missing != {len(schema)}:",
                f"    unknown_fields(doc, {known}, path, errs)",
            ]
        return self.define("validate_mapping", "doc, path", [*body, "return errs"])

    def _sequence(self, rules: Rules, context: Context) -> Level:
        steps = self._default_item(rules) + self._normalize_value(rules, context, "i")
        normalize = None
        if steps:
            normalize = self.define("normalize_list", "lst, path, nerr", [
                "out = []",
                "for i, v in enumerate(lst):",
                *_indent([*steps, "out.append(v)"]),
                "return out",
            ])
        validate = self.define("validate_list", "lst, path", [
            "errs = []",
            "for i, v in enumerate(lst):",
            *_indent(self._validate_value(rules, context, "i")),
            "return errs",
        ])
        return Level(normalize, validate)

    def _items(self, items: list[Rules], context: Context) -> Level:
        normal: list[str] = []
        checks: list[str] = []
        for index, rules in enumerate(items):
            steps = self._default_item(rules) + self._normalize_value(rules, context, str(index))
            if steps:
                normal += [f"v = out[{index}]", *steps, f"out[{index}] = v"]
            checks += [f"v = lst[{index}]", *self._validate_value(rules, context, str(index))]
        normalize = None
        if normal:
            normalize = self.define("normalize_items", "lst, path, nerr", [
                f"if len(lst) != {len(items)}:",
                "    return lst",
                "out = list(lst)",
                *normal,
                "return out",
            ])
        validate = self.define("validate_items", "lst, path", ["errs = []", *checks, "return errs"])
        return Level(normalize, validate)

    # -- normalisation of one value ``v`` under ``key`` ----------------------------------

    def _default(self, rules: Rules) -> str:
        value = rules["default"]
        name = self.constant(value, "default")
        return name if isinstance(value, _IMMUTABLE) else f"deepcopy({name})"

    def _default_item(self, rules: Rules) -> list[str]:
        """A list item is never missing, so only a None item that is not nullable takes it."""
        if "default" not in rules or rules.get("nullable", False):
            return []
        return ["if v is None:", f"    v = {self._default(rules)}"]

    def _normalize_value(self, rules: Rules, context: Context, key: str) -> list[str]:
        lines = self._coerce(rules, key) if "coerce" in rules else []
        return lines + self._normalize_container(rules, context, key)

    def _coerce(self, rules: Rules, key: str) -> list[str]:
        """Each coercer in turn; a failure is an error unless the value is None and nullable,
        and the chain stops at the first error (the value stays as it was)."""
        chain = coercer_chain(rules["coerce"], self.validator)
        record = [f"nerr.append(coerce_error(path, {key}, exc))"]
        if len(chain) > 1:
            record.append("ok = False")
        if rules.get("nullable", False):
            record = ["if v is not None:", *_indent(record)]
        lines = ["ok = True"] if len(chain) > 1 else []
        for position, coercer in enumerate(chain):
            step = [
                "try:",
                f"    v = {self.constant(coercer, 'coerce')}(v)",
                "except Exception as exc:",
                *_indent(record),
            ]
            lines += step if position == 0 else ["if ok:", *_indent(step)]
        return lines

    def _normalize_container(self, rules: Rules, context: Context, key: str) -> list[str]:
        """As Cerberus's ``__normalize_containers``: descend into a mapping when the field has
        ``schema``, ``allow_unknown`` or ``purge_unknown``; into a list for ``schema`` or
        else ``items``."""
        where = f"path + ({key},)"
        as_fields, as_rules = schema_readings(rules) if "schema" in rules else ({}, None)
        on_dict: list[str] = []
        if {"schema", "allow_unknown", "purge_unknown"} & rules.keys():
            if as_fields is None:
                on_dict = ["raise Bailout"]
            else:
                level = self.mapping(as_fields, context.for_mapping(rules))
                on_dict = [f"v = {level.normalize}(v, {where}, nerr)"] if level.normalize else []
        on_list: list[str] = []
        if "schema" in rules:
            if as_rules is not None:
                level = self.sequence(as_rules, context)
                on_list = [f"v = {level.normalize}(v, {where}, nerr)"] if level.normalize else []
            elif as_fields is None or not RULE_NAMES.isdisjoint(as_fields):
                on_list = ["raise Bailout"]
            # else: Cerberus reads the fields as item rules; no field is named like a rule,
            # so there is nothing to normalise in the list (its type is checked later).
        elif "items" in rules:
            level = self.items(rules["items"], context)
            on_list = [f"v = {level.normalize}(v, {where}, nerr)"] if level.normalize else []
        return _branch_on_container(on_dict, on_list)

    # -- validation of one value ``v`` under ``key`` -------------------------------------

    def _validate_value(self, rules: Rules, context: Context, key: str) -> list[str]:
        """``nullable`` (always), then ``type``, ``empty`` and the other rules, as Cerberus's
        ``__validate_definitions``: None skips every other rule, a wrong type too."""
        where = f"path + ({key},)"
        lines = ["if v is None:"]
        if rules.get("nullable"):
            lines.append("    pass")
        else:
            lines.append(f"    errs.append(({where}, 'nullable', NOT_NULLABLE))")
        names = type_names(rules)
        if names:
            test = runtime.cerberus_type_test(self.validator.types_mapping, names)
            text = runtime.message(errors.BAD_TYPE, constraint=rules["type"])
            lines += [
                f"elif not {self.constant(test, 'type')}[type(v)]:",
                f"    errs.append(({where}, 'type', {self.constant(text, 'text')}))",
            ]
        body = self._rules(rules, context, key)
        return [*lines, "else:", *_indent(body)] if body else lines

    def _rules(self, rules: Rules, context: Context, key: str) -> list[str]:
        present = [rule for rule in rules if rule in _RULE_WRITERS]

        def write(names: Iterable[str]) -> list[str]:
            lines: list[str] = []
            for rule in names:
                lines += _RULE_WRITERS[rule](self, rules, context, key)
            return lines

        if "empty" not in rules:
            return write(present)
        on_empty = [] if rules["empty"] else [
            f"errs.append((path + ({key},), 'empty', EMPTY_NOT_ALLOWED))"
        ]
        on_empty += write(rule for rule in present if rule not in DROPPED_WHEN_EMPTY)
        lines = ["if SIZED[type(v)] and len(v) == 0:", *_indent(on_empty or ["pass"])]
        others = write(present)
        return [*lines, "else:", *_indent(others)] if others else lines

    def _error(self, key: str, rule: str, text: str) -> str:
        """The line adding a constant message for ``rule``."""
        return f"errs.append((path + ({key},), {rule!r}, {self.constant(text, 'text')}))"

    def _bound(self, rules: Rules, key: str, rule: str, operator: str,
               definition: Any) -> list[str]:
        limit = rules[rule]
        return [
            "try:",
            f"    if v {operator} {self.constant(limit, 'limit')}:",
            "        " + self._error(key, rule, runtime.message(definition, constraint=limit)),
            "except TypeError:",
            "    pass",
        ]

    def _min(self, rules: Rules, context: Context, key: str) -> list[str]:
        return self._bound(rules, key, "min", "<", errors.MIN_VALUE)

    def _max(self, rules: Rules, context: Context, key: str) -> list[str]:
        return self._bound(rules, key, "max", ">", errors.MAX_VALUE)

    def _length(self, rules: Rules, key: str, rule: str, operator: str,
                definition: Any) -> list[str]:
        limit = rules[rule]
        return [
            f"if ITERABLE[type(v)] and len(v) {operator} {self.constant(limit, 'limit')}:",
            "    " + self._error(key, rule, runtime.message(definition, constraint=limit)),
        ]

    def _minlength(self, rules: Rules, context: Context, key: str) -> list[str]:
        return self._length(rules, key, "minlength", "<", errors.MIN_LENGTH)

    def _maxlength(self, rules: Rules, context: Context, key: str) -> list[str]:
        return self._length(rules, key, "maxlength", ">", errors.MAX_LENGTH)

    def _regex(self, rules: Rules, context: Context, key: str) -> list[str]:
        pattern = rules["regex"]
        regex = self.constant(anchored_regex(pattern, self.table), "regex")
        return [
            f"if isinstance(v, str) and {regex}.match(v) is None:",
            "    " + self._error(key, "regex",
                                 runtime.message(errors.REGEX_MISMATCH, constraint=pattern)),
        ]

    def _allowed(self, rules: Rules, context: Context, key: str) -> list[str]:
        allowed = rules["allowed"]
        where = f"path + ({key},)"
        given = self.constant(allowed, "allowed")
        return [
            "if ITERABLE_NOT_STR[type(v)]:",
            f"    bad = tuple(x for x in v if x not in {given})",
            "    if bad:",
            f"        errs.append(({where}, 'allowed', message(UNALLOWED_VALUES, bad)))",
            f"elif {_member(self.constant(_lookup(allowed), 'allowed'), given, negate=True)}:",
            f"    errs.append(({where}, 'allowed', message(UNALLOWED_VALUE, value=v)))",
        ]

    def _forbidden(self, rules: Rules, context: Context, key: str) -> list[str]:
        forbidden = rules["forbidden"]
        where = f"path + ({key},)"
        given = self.constant(forbidden, "forbidden")
        return [
            "if SEQUENCE_NOT_STR[type(v)]:",
            f"    bad = set(v) & set({given})",
            "    if bad:",
            f"        errs.append(({where}, 'forbidden', message(FORBIDDEN_VALUES, list(bad))))",
            f"elif {_member(self.constant(_lookup(forbidden), 'forbidden'), given)}:",
            f"    errs.append(({where}, 'forbidden', message(FORBIDDEN_VALUE, value=v)))",
        ]

    def _items_rule(self, rules: Rules, context: Context, key: str) -> list[str]:
        items = rules["items"]
        where = f"path + ({key},)"
        level = self.items(items, context)
        return [
            "if type(v) is not list:",
            "    raise Bailout",
            f"if len(v) != {len(items)}:",
            f"    errs.append(({where}, 'items', message(ITEMS_LENGTH, {len(items)}, len(v))))",
            "else:",
            *_indent(_group(level.validate, where, "items")),
        ]

    def _schema(self, rules: Rules, context: Context, key: str) -> list[str]:
        as_fields, as_rules = schema_readings(rules)
        where = f"path + ({key},)"
        on_dict = on_list = ["raise Bailout"]
        if as_fields is not None:
            on_dict = _group(self.mapping(as_fields, context.for_mapping(rules)).validate,
                             where, "schema")
        if as_rules is not None:
            on_list = _group(self.sequence(as_rules, context).validate, where, "schema")
        return _branch_on_container(on_dict, on_list)


def _group(function: str, where: str, rule: str) -> list[str]:
    """Check the child document; its entries, if any, become one group entry."""
    return [
        f"child = {function}(v, {where})",
        "if child:",
        f"    errs.append(({where}, {rule!r}, child))",
    ]


def _branch_on_container(on_dict: list[str], on_list: list[str]) -> list[str]:
    """Dispatch on a plain dict or list; other mappings and sequences go to Cerberus."""
    lines: list[str] = []
    if on_dict:
        lines += ["if type(v) is dict:", *_indent(on_dict)]
    if on_list:
        lines += [("elif" if lines else "if") + " type(v) is list:", *_indent(on_list)]
    if lines:
        lines += ["elif OTHER_CONTAINER[type(v)]:", "    raise Bailout"]
    return lines


def _lookup(values: Any) -> Any:
    """A frozenset for fast membership tests when every value is hashable, else the values."""
    try:
        return frozenset(values)
    except TypeError:
        return values


def _member(lookup: str, given: str, *, negate: bool = False) -> str:
    """``v in`` the constraint as Cerberus tests it (by equality), through the frozenset
    when ``v`` can be hashed (a dict, say, cannot: it is looked for in the list given)."""
    test = "not in" if negate else "in"
    return f"(v {test} {lookup} if HASHABLE[type(v)] else v {test} {given})"


_RULE_WRITERS: dict[str, Callable[[_Writer, Rules, Context, str], list[str]]] = {
    "min": _Writer._min,
    "max": _Writer._max,
    "minlength": _Writer._minlength,
    "maxlength": _Writer._maxlength,
    "regex": _Writer._regex,
    "allowed": _Writer._allowed,
    "forbidden": _Writer._forbidden,
    "items": _Writer._items_rule,
    "schema": _Writer._schema,
}
"""The rules Cerberus runs after ``nullable``, ``type`` and ``empty``, in schema order."""
