"""Quoting of identifiers that come from config: the one place SQL names are built."""

from __future__ import annotations

import re

_SAFE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def quote(name: str) -> str:
    """Quote one identifier; refuse anything that is not a plain config name."""
    if not _SAFE.match(name):
        raise ValueError(f"not a valid SQL identifier: {name!r}")
    return '"' + name + '"'


def literal(name: str) -> str:
    """A config name as an SQL string literal, where no value can be bound (view bodies)."""
    quote(name)  # the same check: letters, digits and underscores only
    return "'" + name + "'"


def qualified(schema: str, name: str) -> str:
    return f"{quote(schema)}.{quote(name)}"


SQL_TYPES = {
    "text": "text",
    "integer": "bigint",
    "numeric": "numeric",
    "number": "numeric",
    "date": "date",
    "timestamp": "timestamptz",
    "boolean": "boolean",
}
"""Config type names to PostgreSQL types (money and weights are NUMERIC, never float)."""
