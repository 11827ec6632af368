"""What the HTTP API answers: typed bodies, so the OpenAPI schema comes from the same types."""

from __future__ import annotations

import msgspec


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    """202: the rows of one POST, numbered ``first_row``..``last_row`` in the table, went
    into the ingest stream as ``entries`` stream entries; ``final`` sent the table-end
    with ``table_rows``, the rows of every part of the table."""

    rows: int
    first_row: int
    last_row: int
    entries: int
    final: bool = False
    table_rows: int | None = None


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An error answer: what was wrong and, for a bad value, the JSON path of the first one
    (``$[3].qty``: the fourth row's field ``qty``). An ingest that broke off while sending
    (503) names the rows it had reserved and the ``idempotency_key`` to retry them with."""

    error: str
    detail: str
    path: str | None = None
    first_row: int | None = None
    last_row: int | None = None
    idempotency_key: str | None = None


class Replayed(msgspec.Struct, frozen=True):
    """Quarantined rows sent to ingest again."""

    replayed: int


class QuarantineSelection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Rows of the quarantine to re-drive, each as its division, window, table and row."""

    rows: list[QuarantineRowId]


class QuarantineRowId(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    division: str
    window: str
    table: str
    row: int
