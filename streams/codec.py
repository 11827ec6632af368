"""Turning stream entries into typed items and messages into entry fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from assay.contracts.messages import (
    LandedBatch,
    Message,
    RecordBatch,
    json_decoder,
    msgpack_decoder,
    msgpack_encoder,
)

MSGPACK_FIELD = b"msgpack"
JSON_FIELD = b"json"


@dataclass(frozen=True, slots=True)
class Item:
    """One message handed to a processor, with where it came from.

    A batch message (records or landed items) is flattened: ``index`` is the
    position of this item inside its stream entry.
    """

    stream: str
    entry_id: str
    index: int
    message: Message
    deliveries: int
    entry_size: int = 0
    """Bytes of the whole stream entry this item came in (a bound on the item's size)."""


class UndecodableEntry(Exception):
    """A stream entry that is not an assay message; it goes to the dead letters as is."""

    def __init__(self, reason: str, raw: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


Fields = dict[Any, Any]
"""Stream entry fields as redis-py takes them."""


def encode(message: Message) -> Fields:
    return {MSGPACK_FIELD: msgpack_encoder.encode(message)}


def decode_entry(fields: dict[bytes, bytes]) -> Message:
    """Decode one entry's fields; raise UndecodableEntry with a clear reason."""
    packed = fields.get(MSGPACK_FIELD)
    try:
        if packed is not None:
            message: Message = msgpack_decoder.decode(packed)
            return message
        text = fields.get(JSON_FIELD)
        if text is not None:
            message = json_decoder.decode(text)
            return message
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UndecodableEntry(f"invalid message: {exc}", packed or text or b"") from exc
    raw = msgspec.json.encode({k.decode(errors="replace"): v.decode(errors="replace")
                               for k, v in fields.items()})
    raise UndecodableEntry("entry has neither a 'msgpack' nor a 'json' field", raw)


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
