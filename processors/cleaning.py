"""Silver's row cleaner, compiled once per table into one specialised function.

``RowCleaner`` writes out, for one table, a function that cleans and types every column
inline: only the steps its rules ask for (trim, collapse, case, empty to null, default)
and its column's coercer, with no per-column call or rule test left for each row. It
gives exactly the rows and the ``CoercionError`` of ``normalise.ReferenceCleaner``, the
per-column closures it replaces (``tests/test_cleaning.py`` compares the two).

Safety, as in ``validation.codegen``: nothing from the config is written into the
source. Column names, defaults, type names and coercers are constants of the function's
namespace under generated names (``key_3``, ``default_3``); the source holds only those.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from assay.contracts.config import Normalise, TableConfig
from assay.processors.normalise import NUMERIC_DIGITS, SPACES, CoercionError, as_text, coercer

COERCION_ERRORS = (ValueError, InvalidOperation, ArithmeticError)


class RowCleaner:
    """Normalises and types the raw and derived values of one table's rows."""

    def __init__(self, table: TableConfig, derived_types: Mapping[str, str]) -> None:
        types = {**table.columns, **derived_types}
        namespace: dict[str, Any] = {"as_text": as_text, "SPACES": SPACES,
                                     "CoercionError": CoercionError, "ERRORS": COERCION_ERRORS,
                                     "Decimal": Decimal, "NUMERIC_SCALE": NUMERIC_DIGITS[1]}
        lines = ["def clean(values):", "    get = values.get"]
        for i, (column, column_type) in enumerate(types.items()):
            rule = table.normalise.get(column) or Normalise()
            namespace[f"key_{i}"] = column
            namespace[f"type_{i}"] = column_type
            namespace[f"default_{i}"] = rule.default
            coerce = coercer(column_type, table)
            if coerce is not None:
                namespace[f"coerce_{i}"] = coerce
            lines += _column(i, rule, coerce is not None, column_type)
        lines.append("    return {" + ", ".join(f"key_{i}: value_{i}"
                                                 for i in range(len(types))) + "}")
        self.source = "\n".join(lines) + "\n"
        exec(compile(self.source, "<row cleaner>", "exec"), namespace)
        self.clean: Callable[[Mapping[str, Any]], dict[str, Any]] = namespace["clean"]

    def __call__(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return self.clean(values)


def _column(i: int, rule: Normalise, coerced: bool, column_type: str = "text") -> list[str]:
    """The statements that leave column ``i``'s clean, typed value in ``value_i``."""
    lines = [f"    value = get(key_{i})",
             "    if value is None:",
             f"        value = default_{i}" if rule.default is not None else "        pass",
             "    else:",
             "        if value.__class__ is not str:",
             "            value = as_text(value)"]
    if rule.trim:
        lines.append("        value = value.strip()")
    if rule.collapse_whitespace:
        lines.append('        value = SPACES.sub(" ", value)')
    if rule.case == "upper":
        lines.append("        value = value.upper()")
    elif rule.case == "lower":
        lines.append("        value = value.lower()")
    if rule.empty_to_null:
        lines += ["        if not value:", f"            value = default_{i}"]
    if column_type == "integer":  # normalise._integer's first step inline (a call less per value)
        lines += ["    if value is not None:",
                  "        try:",
                  "            if len(value) <= 18:",
                  "                try:",
                  "                    value = int(value)",
                  "                except ValueError:",
                  f"                    value = coerce_{i}(value)",
                  "            else:",
                  f"                value = coerce_{i}(value)",
                  "        except ERRORS as exc:",
                  f"            raise CoercionError(key_{i}, value, type_{i}) from exc"]
    elif column_type == "number":  # normalise._number's usual case inline: no exponent, finite
        lines += ["    if value is not None:",
                  "        try:",
                  "            number = Decimal(value)",
                  "            if (len(value) <= NUMERIC_SCALE and 'e' not in value",
                  "                    and 'E' not in value and number.is_finite()):",
                  "                value = number",
                  "            else:",
                  f"                value = coerce_{i}(value)",
                  "        except ERRORS as exc:",
                  f"            raise CoercionError(key_{i}, value, type_{i}) from exc"]
    elif coerced:
        lines += ["    if value is not None:",
                  "        try:",
                  f"            value = coerce_{i}(value)",
                  "        except ERRORS as exc:",
                  f"            raise CoercionError(key_{i}, value, type_{i}) from exc"]
    lines.append(f"    value_{i} = value")
    return lines


def picker(fields: Sequence[str]) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """A function that copies ``fields`` out of a row the cleaner made (which holds every
    column) into a new dict: one dict display, no loop and no call per field. Names are
    constants of its namespace, as in ``RowCleaner``."""
    namespace: dict[str, Any] = {f"key_{i}": field for i, field in enumerate(fields)}
    source = ("def pick(row):\n    return {"
              + ", ".join(f"key_{i}: row[key_{i}]" for i in range(len(fields))) + "}\n")
    exec(compile(source, "<field picker>", "exec"), namespace)
    pick: Callable[[Mapping[str, Any]], dict[str, Any]] = namespace["pick"]
    return pick
