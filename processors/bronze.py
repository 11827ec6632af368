"""Bronze: the faithful copy. Every record lands raw, with its formulas' outputs.

A record whose formulas fail on its data is quarantined with the reason (and counted
as accounted for); a record that is not valid input at all (unknown table, wrong
division, oversized) is rejected to the dead letters. Everything else lands in one
COPY + upsert per table and is forwarded to Silver in one stream entry.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import asyncpg
import msgspec

from assay.contracts.messages import (
    Accounted,
    Landed,
    LandedBatch,
    Message,
    Record,
    Scalar,
    TableEnd,
)
from assay.db import accounting, quarantine
from assay.db.bronze import BronzeWriter
from assay.db.pool import refusing_nul, transaction
from assay.processors.formulas import FormulaError
from assay.processors.normalise import NUL, holds_nul
from assay.processors.plan import Plan
from assay.streams import keys as channels
from assay.streams.codec import Item
from assay.streams.consumer import Output

Clock = Callable[[], float]

TEXT_TYPES = frozenset({str, type(None)})


def tuple_getter(names: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """The values of ``names`` in a mapping that holds them all, as a tuple (C speed)."""
    if len(names) < 2:  # itemgetter gives a lone value bare (and needs one name at least)
        return lambda mapping: tuple(mapping[name] for name in names)
    return operator.itemgetter(*names)


def as_text(value: Scalar) -> str | None:
    """A raw value as text, the way it lands in Bronze's columns."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def derived_text(value: object) -> str | None:
    """A formula output as text for the stream (Silver parses it by its declared type)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    return str(value)


class BronzeProcessor:
    """Lands a batch of records of one division."""

    layer = "bronze"

    def __init__(self, pool: asyncpg.Pool, plan: Plan, clock: Clock) -> None:
        self.pool = pool
        self.plan = plan
        self.clock = clock
        self.writers = {n: BronzeWriter(plan.schema, t.bronze) for n, t in plan.tables.items()}
        self.layouts = {
            n: (list(t.config.columns), list(t.formulas.output_types), set(t.config.columns),
                tuple_getter([*t.config.columns, *t.formulas.output_types]))
            for n, t in plan.tables.items()
        }
        self.max_payload = plan.config.pipeline.max_payload_bytes
        self.max_row = plan.config.pipeline.max_row

    async def process(self, items: Sequence[Item]) -> Output:
        return await refusing_nul(functools.partial(self._process, items))

    async def _process(self, items: Sequence[Item], suspect: bool) -> Output:
        """``suspect``: look at each record for NUL (PostgreSQL refused the batch for one)."""
        now = self.clock()
        received = dt.datetime.fromtimestamp(now, dt.UTC)
        out = Output()
        rows: dict[str, dict[tuple[str, str, int], tuple[Any, ...]]] = {}
        landed: dict[tuple[str, str, int, str], Landed] = {}
        held: list[quarantine.Quarantined] = []
        for item in items:
            message = item.message
            if isinstance(message, TableEnd):
                if message.rows > self.max_row:
                    out.rejected.append((item, f"rows {message.rows} above max_row={self.max_row}"))
                    continue
                out.emits.append((channels.BRONZE, message))
                continue
            if not isinstance(message, Record):
                out.rejected.append((item, f"unexpected {type(message).__name__} on ingest"))
                continue
            problem = self._door_check(item, message, suspect)
            if problem:
                out.rejected.append((item, problem))
                continue
            payload = message.payload  # as text: CSV producers send nothing else
            raw = (cast(dict[str, str | None], payload)
                   if TEXT_TYPES.issuperset(map(type, payload.values()))
                   else {k: v if v.__class__ is str or v is None else as_text(v)
                         for k, v in payload.items()})
            table = self.plan.tables[message.table]
            try:
                derived = table.formulas.apply(raw) if table.formulas.output_types else {}
            except FormulaError as exc:
                held.append(self._quarantined(message, exc))
                continue
            row = self._row(message, raw, derived, item.entry_id, received)
            position = (message.division, message.window, message.row)
            rows.setdefault(message.table, {})[position] = row
            landed[(message.division, message.window, message.row, message.table)] = Landed(
                record=message,
                derived={k: derived_text(v) for k, v in derived.items()} if derived else {},
                bronze_id=f"{item.entry_id}:{item.index}",
            )
        async with transaction(self.pool) as conn:
            for table_name, by_key in rows.items():
                await self.writers[table_name].land(conn, list(by_key.values()))
            await quarantine.add(conn, self.plan.schema, held, now)
            await accounting.record(conn, self.plan.schema, self.layer, {
                accounting.QUARANTINED: [(q.division, q.window, q.table, q.row) for q in held]})
        out.processed, out.quarantined = len(landed), len(held)
        if landed:
            out.emits.append((channels.BRONZE, LandedBatch(items=list(landed.values()))))
        out.emits.extend((channels.ACCOUNTED, m) for m in _accounted(held))
        return out

    def _door_check(self, item: Item, record: Record, suspect: bool) -> str | None:
        """Why a record is refused at the door; ``suspect``: its batch held NUL."""
        if record.table not in self.plan.tables:
            return f"unknown table {record.table!r}"
        if f"{{{record.division}}}" not in item.stream:
            return f"record of division {record.division!r} on another division's stream"
        if record.row > self.max_row:
            return f"row {record.row} above max_row={self.max_row}"
        if suspect and holds_nul(record):
            return NUL
        if item.entry_size <= self.max_payload:
            return None  # the whole entry is smaller than the limit
        size = len(msgspec.json.encode(record.payload))
        if size > self.max_payload:
            return f"payload of {size} bytes exceeds max_payload_bytes={self.max_payload}"
        return None

    def _row(self, record: Record, raw: dict[str, str | None], derived: dict[str, Any],
             entry_id: str, received: dt.datetime) -> tuple[Any, ...]:
        """Values in the order of ``bronze_shape``: metadata, raw columns, formula outputs."""
        raw_columns, outputs, known, values = self.layouts[record.table]
        meta = (record.division, record.window, record.row, record.op,
                None if record.seq is None else str(record.seq), entry_id, received)
        if raw.keys() == known and not outputs:  # every column, nothing unknown: the usual row
            return (*meta, None, *values(raw))
        extra = None if raw.keys() <= known else {k: raw[k] for k in raw.keys() - known}
        return (*meta, msgspec.json.encode(extra).decode() if extra else None,
                *map(raw.get, raw_columns), *map(derived.get, outputs))

    def _quarantined(self, record: Record, exc: FormulaError) -> quarantine.Quarantined:
        table = self.plan.tables[record.table].config
        key = "|".join(str(record.payload.get(k)) for k in table.key)
        return quarantine.Quarantined(
            division=record.division, table=record.table, window=record.window, row=record.row,
            layer=self.layer, key=key, rule="formula", field=exc.field, message=exc.reason,
            payload=msgspec.json.encode({"payload": record.payload, "op": record.op,
                                         "seq": record.seq}).decode(),
            replay=record.replay,
        )


def _accounted(held: Sequence[quarantine.Quarantined]) -> list[Message]:
    by_table: dict[tuple[str, str, str, bool], list[int]] = {}
    for q in held:
        by_table.setdefault((q.division, q.table, q.window, q.replay), []).append(q.row)
    return [
        Accounted(division=d, table=t, window=w, layer="bronze", quarantined=sorted(rows),
                  replay=replay)
        for (d, t, w, replay), rows in by_table.items()
    ]
