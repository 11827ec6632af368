"""Every message that travels on an assay stream.

Messages are tagged msgspec Structs. They tolerate fields they do not know (no
``forbid_unknown_fields``), so an older consumer can read what a newer producer
writes during a rolling upgrade. A stream entry carries one message in one field:
``msgpack`` (what assay itself writes) or ``json`` (for producers in any language).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

CONTRACT_VERSION = 1

MAX_ROW = 2**32 - 1
"""The highest row number: what a Redis bitmap (the barrier's per-table state) can address."""
BIGINT = (-(2**63), 2**63 - 1)
"""PostgreSQL ``bigint``: the range of an integer ``seq``."""
WIRE_INT = BIGINT
"""The integers a payload carries as numbers (msgpack, assay's wire format, carries no more)."""

RowNumber = Annotated[int, msgspec.Meta(ge=1, le=MAX_ROW)]
RowCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_ROW)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Name = Annotated[str, msgspec.Meta(max_length=200)]
"""A division, table or window name (also part of Redis keys and PostgreSQL keys)."""
SeqInt = Annotated[int, msgspec.Meta(ge=BIGINT[0], le=BIGINT[1])]
WireInt = Annotated[int, msgspec.Meta(ge=WIRE_INT[0], le=WIRE_INT[1])]

Scalar = str | WireInt | float | bool | None
"""A raw payload value as a producer sends it (CSV producers send text or null).

An integer outside ``WIRE_INT`` is kept as its decimal text (``streams.codec``)."""

Operation = Literal["upsert", "delete"]


class Message(msgspec.Struct, frozen=True, tag_field="type", kw_only=True):
    """Base of all stream messages; ``v`` is the contract version of the writer."""

    v: Count = CONTRACT_VERSION


class Record(Message, tag="record", frozen=True):
    """One source row of a table, for one division and sync window.

    ``row`` numbers the rows 1..N within (division, window, table); a producer that
    retries re-sends the same numbers, so a retry never duplicates a row.
    ``seq`` is the source's sequence or updated-at value; the newer one wins in Silver.
    """

    division: Name
    table: Name
    window: Name
    row: RowNumber
    payload: dict[str, Scalar]
    op: Operation = "upsert"
    seq: str | SeqInt | None = None
    replay: bool = False
    """Re-driven from quarantine by ``assay replay``."""


class TableEnd(Message, tag="table_end", frozen=True):
    """The producer finished sending a table of a window: ``rows`` is its row count."""

    division: Name
    table: Name
    window: Name
    rows: RowCount


class RecordBatch(Message, tag="record_batch", frozen=True):
    """Many records in one stream entry, so forwarding costs no round trip per record."""

    records: list[Record]


class Landed(Message, tag="landed", frozen=True):
    """A record landed in Bronze, with the values its formulas derived (as text)."""

    record: Record
    derived: dict[str, str | None]
    bronze_id: Annotated[str, msgspec.Meta(max_length=64)]
    """Where Bronze read it: ``<ingest entry id>:<index in the entry>``. Silver checks its
    form where it reads it, as it builds ``_entry`` (``processors.silver``; a regular
    expression here cost a microsecond per record)."""


class LandedBatch(Message, tag="landed_batch", frozen=True):
    """Bronze's output for one batch: what Silver reads."""

    items: list[Landed]


class Accounted(Message, tag="accounted", frozen=True):
    """Rows of one table and window that reached their final place downstream."""

    division: Name
    table: Name
    window: Name
    layer: str
    applied: list[WireInt] = []
    quarantined: list[WireInt] = []
    """Row numbers; the barrier accounts each in 1…``MAX_ROW`` and dead-letters the others
    alone, so one bad number never costs its entry-mates their accounting."""
    replay: bool = False
    """The rows were re-driven from quarantine: a row applied now restates its earlier
    failure; a row failing again is already counted and is no duplicate."""


class WindowEvent(Message, tag="window", frozen=True):
    """A window's outcome, emitted by the barrier for Gold and for operators."""

    division: Name
    window: Name
    status: Literal["completed", "partial", "amended", "timed_out"]
    tables: dict[str, RowCount]
    """Rows accounted for per expected table."""
    failed: dict[str, RowCount]
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
    deliveries: Count
    division: Name | None = None
    table: Name | None = None
    window: Name | None = None
    row: WireInt | None = None
    raw: bytes = b""
    """The message as received: the ``json`` or ``msgpack`` field's bytes (for one element of a
    batch entry, that element's bytes), or the decoded item re-encoded as msgpack."""
    fields: list[tuple[bytes, bytes]] = []
    """An entry that is not one ``json`` or ``msgpack`` field: its fields, byte for byte."""


class Envelope(msgspec.Struct, frozen=True):
    """What a malformed message still tells about itself: its type and where it belongs.

    Every field is kept raw and read on its own, so one bad field spoils no other; a
    malformed record that names its division, table, window and row is dead-lettered
    with them, and the barrier accounts the row as failed.
    """

    type: msgspec.Raw = msgspec.Raw()
    division: msgspec.Raw = msgspec.Raw()
    table: msgspec.Raw = msgspec.Raw()
    window: msgspec.Raw = msgspec.Raw()
    row: msgspec.Raw = msgspec.Raw()


class BatchElements(msgspec.Struct, frozen=True):
    """A batch message's elements, undecoded, so each can be decoded (and fail) alone."""

    records: list[msgspec.Raw] = []
    items: list[msgspec.Raw] = []


AnyMessage = (
    Record | TableEnd | RecordBatch | Landed | LandedBatch | Accounted | WindowEvent | DeadLetter
)

msgpack_encoder = msgspec.msgpack.Encoder()
msgpack_decoder = msgspec.msgpack.Decoder(AnyMessage)
json_decoder = msgspec.json.Decoder(AnyMessage)
