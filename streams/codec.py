"""Turning stream entries into typed items and messages into entry fields.

Decoding is total: whatever bytes an entry holds, ``decode_entry`` returns what could be
decoded and a reason for each part that could not, and raises nothing. An entry is one
field, ``msgpack`` or ``json``, holding one message. JSON must be valid UTF-8; integers
in a record's payload outside -2^63 … 2^63-1 (beyond what msgpack carries, whatever
the size) are kept as their decimal text; every other integer must lie within its field's bounds
(``contracts.messages``). A batch message whose elements do not all decode keeps the
ones that do; each bad element fails alone, with the place it names for itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from assay.contracts.messages import (
    MAX_ROW,
    WIRE_INT,
    AnyMessage,
    BatchElements,
    Envelope,
    Landed,
    LandedBatch,
    Message,
    Record,
    RecordBatch,
    json_decoder,
    msgpack_decoder,
    msgpack_encoder,
)

MSGPACK_FIELD = b"msgpack"
JSON_FIELD = b"json"

MALFORMED = (msgspec.MsgspecError, ValueError, TypeError, OverflowError, RecursionError)
"""What decoding hostile bytes can raise (``UnicodeDecodeError`` is a ``ValueError``)."""


class Item(msgspec.Struct, frozen=True, gc=False):
    """One message handed to a processor, with where it came from.

    A batch message (records or landed items) is flattened: ``index`` is the
    position of this item inside its stream entry. A Struct, made once per record: a
    fifth of a frozen dataclass's cost; untracked by the garbage collector, as it can
    take no part in a cycle (its message never refers back to it).
    """

    stream: str
    entry_id: str
    index: int
    message: Message
    deliveries: int
    entry_size: int = 0
    """Bytes of the whole stream entry this item came in (a bound on the item's size)."""


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A malformed entry, or one malformed element of a batch entry: why, and its bytes."""

    reason: str
    raw: bytes = b""
    fields: tuple[tuple[bytes, bytes], ...] = ()
    division: str | None = None
    table: str | None = None
    window: str | None = None
    row: int | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    """An entry's message (``None`` when nothing of it decoded) and its malformed parts."""

    message: Message | None
    failures: tuple[Undecodable, ...] = ()


Fields = dict[Any, Any]
"""Stream entry fields as redis-py takes them."""


def encode(message: Message) -> Fields:
    return {MSGPACK_FIELD: msgpack_encoder.encode(message)}


class _Format:
    """One wire format's decoders: strict typed ones, and an untyped one for the slow path."""

    def __init__(self, json: bool) -> None:
        module: Any = msgspec.json if json else msgspec.msgpack
        self.json = json
        self.message = json_decoder if json else msgpack_decoder
        self.untyped = module.Decoder()
        self.envelope = module.Decoder(Envelope)
        self.elements = module.Decoder(BatchElements)
        self.element = {"records": module.Decoder(Record), "items": module.Decoder(Landed)}
        self.text = module.Decoder(str)
        self.int = module.Decoder(int)


_JSON = _Format(json=True)
_MSGPACK = _Format(json=False)
_BATCHES = {"record_batch": "records", "landed_batch": "items"}
"""Batch message types and the field holding their elements."""


def decode_entry(fields: dict[bytes, bytes]) -> Decoded:
    """Decode one entry's fields; never raises: malformed parts come back as failures."""
    if len(fields) == 1:
        [(name, data)] = fields.items()
        if name == MSGPACK_FIELD:
            return _decode(_MSGPACK, data)
        if name == JSON_FIELD:
            return _decode(_JSON, data)
    names = ", ".join(repr(k) for k in fields)
    return Decoded(None, (Undecodable(
        f"entry has neither a 'msgpack' nor a 'json' field as its only field "
        f"(it has {names or 'no fields'})",
        fields=tuple(fields.items())),))


def _decode(fmt: _Format, data: bytes) -> Decoded:
    try:
        return Decoded(_message(fmt, data, fmt.message, AnyMessage))
    except MALFORMED as exc:
        reason = _reason(exc)
    kind = _peek(fmt, data).get("type")
    if kind in _BATCHES:
        return _decode_batch(fmt, data, kind, reason)
    return Decoded(None, (_undecodable(fmt, data, reason),))


def _message(fmt: _Format, data: bytes, strict: Any, target: Any) -> Any:
    """Decode strictly; a second, untyped try keeps huge payload integers as text."""
    if fmt.json:
        str(data, "utf-8")  # JSON is UTF-8 throughout, also in fields nobody reads
    try:
        return strict.decode(data)
    except msgspec.ValidationError:
        pass
    tree = fmt.untyped.decode(data)
    _big_ints_as_text(tree)
    return msgspec.convert(tree, target)


def _decode_batch(fmt: _Format, data: bytes, kind: str, reason: str) -> Decoded:
    """Keep the elements of a batch that decode; each of the others fails with its reason."""
    field = _BATCHES[kind]
    try:
        elements = getattr(fmt.elements.decode(data), field)
    except MALFORMED:
        return Decoded(None, (_undecodable(fmt, data, reason),))
    good: list[Any] = []
    bad: list[Undecodable] = []
    decoder = fmt.element[field]
    for raw in elements:
        element = bytes(raw)
        try:
            good.append(_message(fmt, element, decoder, decoder.type))
        except MALFORMED as exc:
            bad.append(_undecodable(fmt, element, f"{kind} element: {_reason(exc)}"))
    if not bad:  # the batch itself is malformed, not its elements
        return Decoded(None, (_undecodable(fmt, data, reason),))
    message = RecordBatch(records=good) if field == "records" else LandedBatch(items=good)
    return Decoded(message if good else None, tuple(bad))


def _undecodable(fmt: _Format, data: bytes, reason: str) -> Undecodable:
    """A failure, attributed to the row it names when it is a record that names one."""
    envelope = _peek(fmt, data)
    row = envelope.get("row")
    if (envelope.get("type") != "record" or not isinstance(row, int) or not 1 <= row <= MAX_ROW
            or not all(isinstance(envelope.get(k), str) for k in ("division", "table", "window"))):
        return Undecodable(reason, data)
    return Undecodable(reason, data, division=envelope["division"], table=envelope["table"],
                       window=envelope["window"], row=row)


def _peek(fmt: _Format, data: bytes) -> dict[str, Any]:
    """The envelope fields that read as text (``row`` as an integer), each on its own."""
    try:
        envelope = fmt.envelope.decode(data)
    except MALFORMED:
        if not fmt.json:
            return {}
        try:  # invalid UTF-8 somewhere: the envelope may still be readable around it
            envelope = fmt.envelope.decode(data.decode("utf-8", "replace").encode())
        except MALFORMED:
            return {}
    found: dict[str, Any] = {}
    for name in Envelope.__struct_fields__:
        raw = getattr(envelope, name)
        if not raw:
            continue
        try:
            found[name] = (fmt.int if name == "row" else fmt.text).decode(raw)
        except MALFORMED:
            continue
        if isinstance(found[name], str) and not 0 < len(found[name]) <= 200:
            del found[name]
    return found


def _big_ints_as_text(tree: Any) -> None:
    """In place: payload integers outside ``WIRE_INT`` become their decimal text."""
    if not isinstance(tree, dict):
        return
    kind = tree.get("type")
    if kind == "record" and isinstance(tree.get("payload"), dict):
        payload = tree["payload"]
        for key, value in payload.items():
            if isinstance(value, int) and not WIRE_INT[0] <= value <= WIRE_INT[1]:
                payload[key] = str(value)
    elif kind == "landed":
        _big_ints_as_text(tree.get("record"))
    elif kind in _BATCHES:
        elements = tree.get(_BATCHES[kind])
        for element in elements if isinstance(elements, list) else ():
            _big_ints_as_text(element)


def with_big_ints_as_text(record: Record) -> Record:
    """A record whose payload integers outside ``WIRE_INT`` are their decimal text (what a
    producer sends when msgpack cannot carry a value)."""
    payload = {k: str(v) if isinstance(v, int) and not WIRE_INT[0] <= v <= WIRE_INT[1] else v
               for k, v in record.payload.items()}
    return msgspec.structs.replace(record, payload=payload)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid UTF-8 at byte {exc.start}: {exc.reason}"
    if isinstance(exc, RecursionError):
        return "invalid message: nested too deeply"
    if isinstance(exc, msgspec.ValidationError):
        return f"invalid message: {exc}"
    return f"invalid message: {type(exc).__name__}: {exc}"


def flatten(stream: str, entry_id: str, message: Message, deliveries: int,
            size: int = 0) -> list[Item]:
    """Items of one entry: a batch message yields one item per element."""
    if isinstance(message, RecordBatch):
        return [Item(stream, entry_id, i, r, deliveries, size)
                for i, r in enumerate(message.records)]
    if isinstance(message, LandedBatch):
        return [Item(stream, entry_id, i, x, deliveries, size)
                for i, x in enumerate(message.items)]
    return [Item(stream, entry_id, 0, message, deliveries, size)]


def entry_size(fields: dict[bytes, bytes]) -> int:
    return sum(len(v) for v in fields.values())
