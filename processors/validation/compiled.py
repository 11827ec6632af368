"""compile_schema: a table's Cerberus schema turned into checks with Cerberus's exact verdicts."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from typing import Any

import cerberus
import msgspec
import structlog

from assay.processors.validation import runtime
from assay.processors.validation.codegen import Program, generate
from assay.processors.validation.reference import AssayValidator
from assay.processors.validation.schema import Context, SchemaError, unsupported_rules

log = structlog.get_logger(__name__)


class ValidationResult(msgspec.Struct, frozen=True):
    """One document's verdict, as Cerberus gives it.

    ``document`` is the normalised document (Cerberus's ``validator.document``) when ``ok``,
    else None; ``errors`` is Cerberus's ``validator.errors`` tree, empty when ``ok``.
    """

    ok: bool
    document: dict[str, Any] | None
    errors: dict[str, Any]


class CompiledValidator:
    """Validates one table's documents exactly as ``AssayValidator`` would, far faster.

    A document that is not a plain dict, or has a shape the compiled checks leave to
    Cerberus, is validated by the wrapped ``AssayValidator``; so is every document of a
    schema that uses rules outside ``SUPPORTED_RULES`` (listed in ``fallback_rules``).
    ``by_reference`` counts the documents Cerberus validated, by reason: "schema" (rules
    not compiled), "document" (not a dict), "shape" (e.g. a tuple, or a mapping where the
    schema describes a list), "value" (an operator failed on an odd value).
    """

    __slots__ = ("_program", "_reference", "by_reference", "fallback_rules", "table")

    def __init__(self, table: str, reference: AssayValidator, program: Program | None,
                 fallback_rules: tuple[str, ...] = ()) -> None:
        self.table = table
        self.fallback_rules = fallback_rules
        self.by_reference: Counter[str] = Counter()
        self._reference = reference
        self._program = program

    def validate(self, document: Mapping[str, Any]) -> ValidationResult:
        """Normalise and validate one document (raises as Cerberus does for a non-mapping)."""
        program = self._program
        if program is None:
            return self._by_reference(document, "schema")
        if type(document) is not dict:
            return self._by_reference(document, "document")
        nerr: list[runtime.Entry] = []
        try:
            out = program.normalize(document, (), nerr)
            verr = program.validate(out, ())
        except runtime.Bailout:
            return self._by_reference(document, "shape")
        except (TypeError, ArithmeticError):
            # An operator failed on an odd value (unhashable items in a set, a NaN Decimal
            # compared): Cerberus then raises, or answers, as it would have.
            return self._by_reference(document, "value")
        if nerr or verr:
            return ValidationResult(False, None, runtime.error_tree(nerr + verr))
        return ValidationResult(True, out, {})

    def check(self, document: dict[str, Any]) -> ValidationResult | None:
        """``None`` when the document is valid and normalising it would change nothing (the
        caller keeps its values, no copy is made); else what ``validate`` answers."""
        program = self._program
        if program is None or not program.copies or type(document) is not dict:
            return self.validate(document)
        try:
            verr = program.validate(document, ())
        except (runtime.Bailout, TypeError, ArithmeticError):
            return self.validate(document)  # the same exception again, and its fallback
        if verr:
            return ValidationResult(False, None, runtime.error_tree(verr))
        return None

    @property
    def source(self) -> str:
        """The generated Python source of the checks (empty when Cerberus does all the work)."""
        return self._program.source if self._program else ""

    @property
    def reference_runs(self) -> int:
        """How many documents Cerberus validated."""
        return self.by_reference.total()

    def _by_reference(self, document: Mapping[str, Any], reason: str) -> ValidationResult:
        self.by_reference[reason] += 1
        validator = self._reference
        ok = validator.validate(document)
        return ValidationResult(ok, validator.document if ok else None, validator.errors)


def compile_schema(schema: Mapping[str, Any], *, table: str,
                   purge_unknown: bool = False) -> CompiledValidator:
    """Check a table's schema as Cerberus does and compile it (raises SchemaError).

    The schema is copied first: Cerberus rewrites the schemas it is given.
    """
    try:
        reference = AssayValidator(copy.deepcopy(schema), purge_unknown=purge_unknown)
    except cerberus.SchemaError as exc:
        raise SchemaError(table, exc) from exc
    definition = reference.schema.schema
    fallback = tuple(sorted(unsupported_rules(definition)))
    if fallback:
        log.warning("validation_fallback", table=table, rules=list(fallback))
        return CompiledValidator(table, reference, None, fallback)
    context = Context(allow_unknown=False, purge_unknown=purge_unknown, require_all=False)
    return CompiledValidator(table, reference, generate(definition, context, reference, table))
