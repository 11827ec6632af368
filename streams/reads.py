"""How a consumer's reads fan out: one blocking read per hash slot, never one across slots.

Every stream of a division carries the division's hash tag, so its streams share one
Redis Cluster slot and one ``XREADGROUP`` may wait on all of them at once. Streams of
different divisions may live on different nodes: a read across them would be refused
(``CROSSSLOT``), so the consumer runs one loop per slot, each with its own blocking read.
On a single server the same grouping holds; it only costs one connection per slot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis.crc import key_slot

from assay.streams.client import Client, routed

Entry = tuple[str, dict[bytes, bytes] | None]


def by_slot(streams: Sequence[str]) -> list[list[str]]:
    """The streams grouped by their cluster slot, in the order first seen."""
    groups: dict[int, list[str]] = {}
    for stream in streams:
        groups.setdefault(key_slot(stream.encode()), []).append(stream)
    return list(groups.values())


async def read_group(client: Client, group: str, consumer: str, starts: Mapping[str, str],
                     count: int, block_ms: int | None = None) -> dict[str, list[Entry]]:
    """One ``XREADGROUP`` over streams of one slot; entries per stream (deleted ones, read
    from a pending list, come with ``None`` fields and are left to the caller)."""
    args: list[Any] = ["GROUP", group, consumer, "COUNT", str(count)]
    if block_ms is not None:
        args += ["BLOCK", str(block_ms)]
    args += ["STREAMS", *starts, *starts.values()]
    # As redis-py's xreadgroup sends it, routed by the first key (see ``routed``).
    reply: Any = await client.execute_command("XREADGROUP", *args,
                                              **routed(client, next(iter(starts))))
    found: dict[str, list[Entry]] = {}
    for stream, entries in reply or []:
        found[_text(stream)] = [(_text(i), f) for i, f in entries]
    return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
