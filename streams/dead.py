"""Reading a division's dead letters back: for operators (``assay dead``, the HTTP API) and
the demo's count (the Redis half of its report; the SQL half is in db/)."""

from __future__ import annotations

from typing import Any

import msgspec

from assay.contracts.messages import DeadLetter
from assay.streams import keys as channels
from assay.streams.client import Client
from assay.streams.codec import decode_entry
from assay.streams.keys import Keys


async def dead_letters(client: Client, keys: Keys, division: str,
                       count: int | None = None) -> list[dict[str, Any]]:
    """The newest ``count`` entries (all without) of a division's dead stream, oldest first,
    as JSON-ready dicts: each dead letter's fields (bytes as base64) and ``id``, the dead
    stream's entry id. An entry there that is no dead letter is shown with its reason."""
    stream = keys.stream(division, channels.DEAD)
    raw: Any = await client.xrevrange(stream, count=count)
    shown = []
    for entry_id, fields in reversed(raw):
        decoded = decode_entry(fields)
        message = decoded.message
        if isinstance(message, DeadLetter):
            shown.append({"id": entry_id.decode(), **msgspec.to_builtins(message)})
        else:
            reason = decoded.failures[0].reason if decoded.failures else "not a dead letter"
            shown.append({"id": entry_id.decode(), "not_a_dead_letter": reason,
                          "fields": msgspec.to_builtins(list(fields.items()))})
    return shown


async def dead_letter_count(client: Client, keys: Keys, divisions: list[str]) -> int:
    """How many entries the dead-letter streams of these divisions hold."""
    total = 0
    for division in divisions:
        total += int(await client.xlen(keys.stream(division, channels.DEAD)))
    return total
