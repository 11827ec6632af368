"""Silver validation: Cerberus schemas compiled into checks that give Cerberus's verdicts.

Each table's schema (JSON config, Cerberus rules) is compiled once at start-up by
``compile_schema``; ``CompiledValidator.validate`` then gives, for every document, the
same ``ok``, normalised document and ``errors`` tree as ``AssayValidator`` (a Cerberus
``Validator``), some hundred times faster. Whatever is not compiled is run by Cerberus.
"""

from assay.processors.validation.compiled import CompiledValidator, ValidationResult, compile_schema
from assay.processors.validation.reference import AssayValidator
from assay.processors.validation.schema import SUPPORTED_RULES, SchemaError

__all__ = [
    "SUPPORTED_RULES",
    "AssayValidator",
    "CompiledValidator",
    "SchemaError",
    "ValidationResult",
    "compile_schema",
]
