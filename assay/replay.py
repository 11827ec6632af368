"""Re-driving quarantined rows once their config or data is fixed (``assay replay``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from assay.contracts.messages import Record
from assay.db import quarantine
from assay.runner import Context
from assay.streams.producer import Producer


class Held(msgspec.Struct, frozen=True):
    """What the quarantine keeps of a row: its raw payload, operation and sequence."""

    payload: dict[str, Any]
    op: str = "upsert"
    seq: str | int | None = None


_held = msgspec.json.Decoder(Held)


async def replay(ctx: Context, *, table: str | None = None, division: str | None = None,
                 window: str | None = None, dry_run: bool = False,
                 rows_of: Sequence[tuple[str, str, str, int]] | None = None) -> int:
    """Send the matching quarantined rows to ingest again, with their row numbers.

    ``rows_of`` selects rows by (division, window, table, row) instead (the status page)."""
    async with ctx.pool.acquire() as conn:
        if rows_of is not None:
            rows = await quarantine.selected(conn, ctx.plan.schema, rows_of)
        else:
            rows = await quarantine.pending(conn, ctx.plan.schema, table=table,
                                            division=division, window=window)
    by_division: dict[str, list[Record]] = {}
    for row in rows:
        held = _held.decode(row["payload"])
        by_division.setdefault(row["division"], []).append(Record(
            division=row["division"], table=row["table_name"], window=row["window"],
            row=row["row"], payload=held.payload, op="delete" if held.op == "delete" else "upsert",
            seq=held.seq, replay=True))
    if dry_run:
        return len(rows)
    producer = Producer(ctx.redis, ctx.keys)
    for records in by_division.values():
        for start in range(0, len(records), producer.chunk_size):
            await producer.send_records(records[start:start + producer.chunk_size])
    return len(rows)
