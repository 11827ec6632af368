"""AssayValidator: Cerberus with assay's money type and named coercers.

It is the reference: the compiled validators must give exactly its verdicts, and they
hand it any schema or document they do not cover.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

import cerberus
from cerberus import TypeDefinition

from assay.processors.validation import coercers


class AssayValidator(cerberus.Validator):
    """A Cerberus validator with a ``decimal`` type and the named coercers of ``coercers.py``."""

    types_mapping: ClassVar[dict[str, Any]] = {
        **cerberus.Validator.types_mapping,
        "decimal": TypeDefinition("decimal", (Decimal,), ()),
    }

    _normalize_coerce_integer = staticmethod(coercers.to_integer)
    _normalize_coerce_float = staticmethod(coercers.to_float)
    _normalize_coerce_decimal = staticmethod(coercers.to_decimal)
    _normalize_coerce_string = staticmethod(coercers.to_string)
    _normalize_coerce_boolean = staticmethod(coercers.to_boolean)
    _normalize_coerce_date = staticmethod(coercers.to_date)
    _normalize_coerce_datetime = staticmethod(coercers.to_datetime)
    _normalize_coerce_upper = staticmethod(coercers.to_upper)
    _normalize_coerce_lower = staticmethod(coercers.to_lower)
    _normalize_coerce_strip = staticmethod(coercers.to_stripped)
    _normalize_coerce_nullify_empty = staticmethod(coercers.nullify_empty)
