"""Every message that travels on an assay stream.

Messages are tagged msgspec Structs. They tolerate fields they do not know (no
``forbid_unknown_fields``), so an older consumer can read what a newer producer
writes during a rolling upgrade. A stream entry carries one message in one field:
``msgpack`` (what assay itself writes) or ``json`` (for producers in any language).
"""

from __future__ import annotations

from typing import Literal

import msgspec

CONTRACT_VERSION = 1

Scalar = str | int | float | bool | None
"""A raw payload value as a producer sends it (CSV producers send text or null)."""

Operation = Literal["upsert", "delete"]


class Message(msgspec.Struct, frozen=True, tag_field="type", kw_only=True):
    """Base of all stream messages; ``v`` is the contract version of the writer."""

    v: int = CONTRACT_VERSION


class Record(Message, tag="record", frozen=True):
    """One source row of a table, for one division and sync window.

    ``row`` numbers the rows 1..N within (division, window, table); a producer that
    retries re-sends the same numbers, so a retry never duplicates a row.
    ``seq`` is the source's sequence or updated-at value; the newer one wins in Silver.
    """

    division: str
    table: str
    window: str
    row: int
    payload: dict[str, Scalar]
    op: Operation = "upsert"
    seq: str | int | None = None
    replay: bool = False
    """Re-driven from quarantine by ``assay replay``."""


class TableEnd(Message, tag="table_end", frozen=True):
    """The producer finished sending a table of a window: ``rows`` is its row count."""

    division: str
    table: str
    window: str
    rows: int


class RecordBatch(Message, tag="record_batch", frozen=True):
    """Many records in one stream entry, so forwarding costs no round trip per record."""

    records: list[Record]


class Landed(Message, tag="landed", frozen=True):
    """A record landed in Bronze, with the values its formulas derived (as text)."""

    record: Record
    derived: dict[str, str | None]
    bronze_id: str


class LandedBatch(Message, tag="landed_batch", frozen=True):
    """Bronze's output for one batch: what Silver reads."""

    items: list[Landed]


class Accounted(Message, tag="accounted", frozen=True):
    """Rows of one table and window that reached their final place downstream."""

    division: str
    table: str
    window: str
    layer: str
    applied: list[int] = []
    quarantined: list[int] = []
    replay: bool = False
    """The rows were re-driven from quarantine: a row applied now restates its earlier
    failure; a row failing again is already counted and is no duplicate."""


class WindowEvent(Message, tag="window", frozen=True):
    """A window's outcome, emitted by the barrier for Gold and for operators."""

    division: str
    window: str
    status: Literal["completed", "partial", "amended", "timed_out"]
    tables: dict[str, int]
    """Rows accounted for per expected table."""
    failed: dict[str, int]
    """Rows quarantined or dead-lettered per table."""
    at: float
    missing: dict[str, str] = {}
    """For an incomplete window: each missing or short table and what it lacks."""
    opened_at: float = 0.0
    """When the barrier first saw the window (``at - opened_at`` is its completion time)."""
    expected: dict[str, int] = {}
    """Rows each expected table announced in its table-end (-1: no table-end yet)."""


class DeadLetter(Message, tag="dead_letter", frozen=True):
    """A message that could not be processed after its allowed deliveries."""

    layer: str
    stream: str
    entry_id: str
    error: str
    deliveries: int
    division: str | None = None
    table: str | None = None
    window: str | None = None
    row: int | None = None
    raw: bytes = b""
    """The undecodable entry as received, when it could not be decoded at all."""


AnyMessage = (
    Record | TableEnd | RecordBatch | Landed | LandedBatch | Accounted | WindowEvent | DeadLetter
)

msgpack_encoder = msgspec.msgpack.Encoder()
msgpack_decoder = msgspec.msgpack.Decoder(AnyMessage)
json_decoder = msgspec.json.Decoder(AnyMessage)
