"""What compiled checks use at run time: markers, type tests, error entries, the error tree.

An error *entry* is ``(document_path, rule, payload)``. The payload is Cerberus's message
for one failed rule, or, for the group errors of the ``schema`` and ``items`` rules, the
list of entries of the child document. Cerberus sorts each level's errors by document
path, then schema path; within one level and one document path the schema paths differ
only in the rule name, so ``(document_path, rule)`` is the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence, Sized
from operator import itemgetter
from typing import Any

from cerberus import errors

Entry = tuple[tuple[Any, ...], str, Any]

MISSING: Any = object()
"""Stands for a key that is absent from a document."""

_MESSAGES = errors.BasicErrorHandler.messages


class Bailout(Exception):
    """The document has a shape the compiled checks leave to Cerberus (for instance a list
    where the schema describes a mapping); the validator re-runs it through Cerberus."""


class TypeTest(dict[type, bool]):
    """``test[type(value)]``: whether values of that class pass; each class is tested once."""

    __slots__ = ("_accepts",)

    def __init__(self, accepts: Callable[[type], bool]) -> None:
        super().__init__()
        self._accepts = accepts

    def __missing__(self, cls: type) -> bool:
        result = self[cls] = self._accepts(cls)
        return result


def cerberus_type_test(types_mapping: Mapping[str, Any], names: Iterable[str]) -> TypeTest:
    """The test of the ``type`` rule: any named type includes the class and does not exclude it."""
    definitions = [types_mapping[name] for name in names]
    return TypeTest(
        lambda cls: any(
            issubclass(cls, d.included_types) and not issubclass(cls, d.excluded_types)
            for d in definitions
        )
    )


SIZED = TypeTest(lambda cls: issubclass(cls, Sized))
HASHABLE = TypeTest(lambda cls: issubclass(cls, Hashable))
ITERABLE = TypeTest(lambda cls: issubclass(cls, Iterable))
ITERABLE_NOT_STR = TypeTest(lambda cls: issubclass(cls, Iterable) and not issubclass(cls, str))
SEQUENCE_NOT_STR = TypeTest(lambda cls: issubclass(cls, Sequence) and not issubclass(cls, str))
OTHER_CONTAINER = TypeTest(
    lambda cls: cls is not dict and cls is not list
    and issubclass(cls, Mapping | Sequence) and not issubclass(cls, str)
)
"""A mapping or non-string sequence other than a plain dict or list (compiled checks
descend only into those two)."""


def message(definition: Any, *info: Any, constraint: Any = None, field: Any = None,
            value: Any = None) -> str:
    """Cerberus's ``BasicErrorHandler`` wording for one error."""
    return _MESSAGES[definition.code].format(
        *info, constraint=constraint, field=field, value=value
    )


def coerce_error(path: tuple[Any, ...], key: Any, exc: BaseException) -> Entry:
    """The entry of a failed coercion of ``key``."""
    return ((*path, key), "coerce", message(errors.COERCION_FAILED, str(exc), field=key))


UNKNOWN_FIELD = message(errors.UNKNOWN_FIELD)


def unknown_fields(document: Mapping[Any, Any], known: frozenset[str],
                   path: tuple[Any, ...], entries: list[Entry]) -> None:
    """Add an "unknown field" entry for every key the schema does not define.

    Cerberus orders errors with a comparison that is not a total order for keys of mixed
    types, so documents with such keys are left to it.
    """
    for key in document:
        if key not in known:
            if type(key) is not str:
                raise Bailout
            entries.append(((*path, key), "", UNKNOWN_FIELD))


_ENTRY_ORDER = itemgetter(0, 1)


def error_tree(entries: list[Entry]) -> dict[Any, Any]:
    """Cerberus's ``validator.errors`` for a top level's entries."""
    tree: dict[Any, Any] = {}
    _insert_entries(tree, entries)
    for node in tree.values():
        _drop_empty_subtrees(node)
    return tree


def _insert_entries(tree: dict[Any, Any], entries: list[Entry]) -> None:
    for path, _rule, payload in sorted(entries, key=_ENTRY_ORDER):
        if type(payload) is list:
            _insert_entries(tree, payload)
        else:
            _insert_message(tree, path, payload)


def _insert_message(tree: dict[Any, Any], path: tuple[Any, ...], text: str) -> None:
    """As ``BasicErrorHandler._insert_error``: messages first, then one dict of children."""
    for key in path[:-1]:
        node = tree.get(key)
        if node is None:
            node = tree[key] = [{}]
        tree = node[-1]
    node = tree.get(path[-1])
    if node is None:
        tree[path[-1]] = [text, {}]
    else:
        node.insert(len(node) - 1, text)


def _drop_empty_subtrees(node: list[Any]) -> None:
    subtree = node[-1]
    if not subtree:
        node.pop()
    else:
        for child in subtree.values():
            _drop_empty_subtrees(child)
