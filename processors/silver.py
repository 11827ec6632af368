"""Silver: the trust layer. Clean, type, validate, deduplicate and upsert; quarantine the rest.

Each landed record is normalised and typed per column, validated with its table's
Cerberus rules (``processors.validation``), then merged so that the newer source
sequence wins in any arrival order. Deletes are soft (``_deleted``), kept for audit.
A row that fails is quarantined with the rule, field and message, never lost, and
every row's outcome is written to the accounting ledger in the same transaction.
"""

from __future__ import annotations

import collections
import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg
import msgspec

from assay.contracts.messages import Accounted, Landed, TableEnd
from assay.db import accounting, quarantine
from assay.db.pool import refusing_nul, transaction
from assay.db.silver import SilverWriter
from assay.processors.cleaning import picker
from assay.processors.normalise import NUL, CoercionError, holds_nul
from assay.processors.plan import Plan, TablePlan
from assay.streams import keys as channels
from assay.streams.codec import Item
from assay.streams.consumer import Output

Clock = Callable[[], float]

RULES = (
    ("required field", "required"),
    ("null value not allowed", "nullable"),
    ("empty values not allowed", "empty"),
    ("must be of", "type"),
    ("min value", "min"),
    ("max value", "max"),
    ("min length", "minlength"),
    ("max length", "maxlength"),
    ("does not match regex", "regex"),
    ("unallowed value", "allowed"),
    ("cannot be coerced", "coerce"),
    ("unknown field", "unknown"),
)


class Rejected(Exception):
    """A row that goes to quarantine: the rule, the field and Cerberus's message."""

    def __init__(self, rule: str, field: str, message: str) -> None:
        super().__init__(message)
        self.rule, self.field, self.message = rule, field, message


def first_error(errors: dict[str, Any]) -> tuple[str, str]:
    """The first (field, message) of a Cerberus error tree, with a dotted field path."""
    field = sorted(errors)[0]
    detail: Any = errors[field]
    path = str(field)
    while isinstance(detail, list | dict):
        if isinstance(detail, dict):
            inner = sorted(detail, key=str)[0]
            path, detail = f"{path}.{inner}", detail[inner]
        else:
            detail = detail[0]
    return path, str(detail)


def rule_of(message: str) -> str:
    for fragment, rule in RULES:
        if fragment in message:
            return rule
    return "validation"


@functools.lru_cache(maxsize=256)
def entry_order(entry: str) -> str | None:
    """A stream position ``ms-seq`` as text that sorts in arrival order (``None`` when it is
    not decimal: Silver refuses the item); a record's ``_entry`` adds its index in the
    entry (``bronze_id`` is ``<ms>-<seq>:<index>``), the same for every record of one entry."""
    ms, dash, seq = entry.partition("-")
    if not (dash and 0 < len(ms) <= 20 and 0 < len(seq) <= 20 and ms.isdecimal()
            and seq.isdecimal()):
        return None
    return f"{int(ms):015d}-{int(seq):06d}"


@functools.lru_cache(maxsize=4096)
def index_suffix(index: str) -> str:
    """A ``bronze_id``'s index as it ends ``_entry`` (``-000042``): indexes repeat in every
    entry."""
    return f"-{int(index):06d}"


class Lane:
    """What Silver looks up once per table instead of once per record."""

    __slots__ = ("clean", "columns", "document", "key", "sequence", "table", "values")

    def __init__(self, table: TablePlan, writer: SilverWriter) -> None:
        self.table = table
        self.clean = table.cleaner.clean
        """The table's compiled cleaner; its rows hold every column."""
        self.document = picker(tuple(table.config.validation))
        """The fields the table's rules name, out of a clean row: what Cerberus sees."""
        self.sequence = table.config.sequence
        """Rows rank by it (then by arrival); the newer version of a key wins."""
        self.columns = writer.columns
        self.values = operator.itemgetter(*writer.columns)
        """A row's values in the writer's column order (every column is in an upsert's row)."""
        self.key = operator.itemgetter(*writer.key)
        """A row's key: one version of each key is kept per batch."""


class SilverProcessor:
    """Merges a batch of landed records of one division into Silver."""

    layer = "silver"

    def __init__(self, pool: asyncpg.Pool, plan: Plan, clock: Clock,
                 observe_latency: Callable[[float, int], object] | None = None) -> None:
        self.pool = pool
        self.plan = plan
        self.clock = clock
        self.observe_latency = observe_latency
        """Called with seconds from ingest XADD to Silver commit and the count of the batch's
        records that share them (those of one ingest entry)."""
        self.writers = {
            name: SilverWriter(plan.schema, t.silver, t.config.sequence)
            for name, t in plan.tables.items()
        }
        self.lanes = {name: Lane(t, self.writers[name]) for name, t in plan.tables.items()}

    async def process(self, items: Sequence[Item]) -> Output:
        return await refusing_nul(functools.partial(self._process, items))

    async def _process(self, items: Sequence[Item], suspect: bool) -> Output:
        """``suspect``: look at each record for NUL (PostgreSQL refused the batch for one)."""
        out = Output()
        winners: dict[str, dict[Any, tuple[tuple[Any, ...], tuple[Any, ...]]]] = {}
        applied: dict[accounting.Group, list[int]] = {}  # row numbers per group
        released: list[tuple[str, str, str, int]] = []  # replayed rows, also in ``applied``
        held: list[quarantine.Quarantined] = []
        ingests: list[str] = []  # each record's ingest entry (counted once, at the end)
        checked = ("", "")  # the last (stream, division) found to match
        ordered = ("", "")  # the last ingest entry id and its sortable form
        for item in items:
            message = item.message
            if isinstance(message, TableEnd):
                out.emits.append((channels.ACCOUNTED, message))
                continue
            if not isinstance(message, Landed):
                out.rejected.append((item, f"unexpected {type(message).__name__} for Silver"))
                continue
            record = message.record
            lane = self.lanes.get(record.table)
            if lane is None:
                out.rejected.append((item, f"unknown table {record.table!r}"))
                continue
            if (item.stream, record.division) != checked:
                if f"{{{record.division}}}" not in item.stream:
                    out.rejected.append((item, f"record of division {record.division!r} on "
                                               "another division's stream"))
                    continue
                checked = (item.stream, record.division)
            if suspect and holds_nul(record, message.derived):
                out.rejected.append((item, NUL))
                continue
            ingest, _, index = message.bronze_id.partition(":")
            if ingest != ordered[0]:
                ordered = (ingest, entry_order(ingest) or "")
            if not (ordered[1] and 0 < len(index) <= 9 and index.isdecimal()):
                out.rejected.append((item, f"bronze_id {message.bronze_id[:64]!r} is not "
                                           "<ms>-<seq>:<index>"))
                continue
            entry = ordered[1] + index_suffix(index)
            ingests.append(ingest)
            try:
                row = self._row(lane, message, entry)
            except Rejected as exc:
                held.append(self._quarantined(lane.table, message, exc))
                continue
            if lane.sequence is None:
                rank: tuple[Any, ...] = (entry,)
            else:
                value = row.get(lane.sequence)
                rank = (value is not None, value if value is not None else 0, entry)
            try:
                values = lane.values(row)
            except KeyError:  # a delete keeps its key and sequence only
                values = tuple(map(row.get, lane.columns))
            versions = winners.setdefault(record.table, {})
            key = lane.key(row)
            best = versions.get(key)
            if best is None or rank > best[0]:
                versions[key] = (rank, values)
            group = (record.division, record.window, record.table)
            numbers = applied.get(group)
            if numbers is None:
                numbers = applied[group] = []
            numbers.append(record.row)
            if record.replay:
                released.append((*group, record.row))
        async with transaction(self.pool) as conn:
            for name, rows in winners.items():
                await self.writers[name].merge(conn, [v for _, v in rows.values()])
            await quarantine.add(conn, self.plan.schema, held, self.clock())
            await quarantine.release(conn, self.plan.schema, released, self.clock())
            await accounting.record_groups(conn, self.plan.schema, self.layer, {
                accounting.APPLIED: applied,
                accounting.QUARANTINED: accounting.grouped(
                    (q.division, q.window, q.table, q.row) for q in held)})
        out.processed, out.quarantined = sum(map(len, applied.values())), len(held)
        if self.observe_latency is not None:
            now = self.clock()
            for ingest, records in collections.Counter(ingests).items():
                self.observe_latency(now - int(ingest.partition("-")[0]) / 1000, records)
        out.emits.extend((channels.ACCOUNTED, m) for m in _accounted(applied, released, held))
        return out

    def _row(self, lane: Lane, landed: Landed, entry: str) -> dict[str, Any]:
        table = lane.table
        record = landed.record
        raw = {**record.payload, **landed.derived} if landed.derived else record.payload
        try:
            row = lane.clean(raw)
        except CoercionError as exc:
            raise Rejected("type", exc.field, str(exc)) from exc
        if record.op == "delete":
            missing = [c for c in table.config.key if row.get(c) is None]
            if missing:
                raise Rejected("required", missing[0], "a delete needs its key")
            row = {c: row[c] for c in (*table.config.key, *_seq(table)) if c in row}
        elif table.validator is not None:
            # Cerberus sees the fields its rules name; the other columns pass through.
            result = table.validator.check(lane.document(row))
            if result is not None:
                if not result.ok:
                    field, message = first_error(result.errors)
                    raise Rejected(rule_of(message), field, message)
                row.update(result.document or {})
        for column in table.config.key:
            if row.get(column) is None:
                raise Rejected("required", column, f"key field {column!r} is empty")
        row["_division"] = record.division
        row["_window"] = record.window
        row["_row"] = record.row
        row["_entry"] = entry
        row["_deleted"] = record.op == "delete"
        return row

    def _quarantined(self, table: TablePlan, landed: Landed, exc: Rejected
                     ) -> quarantine.Quarantined:
        record = landed.record
        key = "|".join(str(record.payload.get(k)) for k in table.config.key)
        return quarantine.Quarantined(
            division=record.division, table=record.table, window=record.window, row=record.row,
            layer=self.layer, key=key, rule=exc.rule, field=exc.field, message=exc.message,
            payload=msgspec.json.encode({"payload": record.payload, "derived": landed.derived,
                                         "op": record.op, "seq": record.seq}).decode(),
            replay=record.replay,
        )


def _seq(table: TablePlan) -> tuple[str, ...]:
    return (table.config.sequence,) if table.config.sequence else ()


def _accounted(applied: Mapping[accounting.Group, list[int]],
               released: Sequence[tuple[str, str, str, int]],
               held: Sequence[quarantine.Quarantined]) -> list[Accounted]:
    """Outcomes per table and window; rows re-driven by ``assay replay`` go separately."""
    replayed: dict[accounting.Group, set[int]] = {}
    for division, window, table, row in released:
        replayed.setdefault((division, window, table), set()).add(row)
    groups: dict[tuple[str, str, str, bool], tuple[list[int], list[int]]] = {}
    for (division, window, table), rows in applied.items():
        again = replayed.get((division, window, table))
        if again:
            for row in rows:
                groups.setdefault((division, table, window, row in again), ([], []))[0].append(
                    row)
        else:
            groups.setdefault((division, table, window, False), ([], []))[0].extend(rows)
    for q in held:
        groups.setdefault((q.division, q.table, q.window, q.replay), ([], []))[1].append(q.row)
    return [Accounted(division=d, table=t, window=w, layer="silver", applied=sorted(a),
                      quarantined=sorted(q), replay=r)
            for (d, t, w, r), (a, q) in groups.items()]
