"""Re-driving quarantined rows once their config or data is fixed (``assay replay``).

The rows go to ingest again with their row numbers and ``replay`` set, through every
layer: Silver releases a row it applies now, the ledger moves it from quarantined to
applied, and the barrier restates its window (failed → applied, once per row however
often it is replayed) and emits ``amended`` so Gold applies the window again. A row
that fails again stays quarantined with ``seen`` counted up. ``replay`` then waits
(up to ``wait_s``) until every re-driven row is released or seen again, and reports
per window and table what moved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from assay.contracts.messages import Record
from assay.db import quarantine
from assay.runner import Context
from assay.streams.producer import Producer

Row = tuple[str, str, str, int]
"""(division, window, table, row)"""


class Held(msgspec.Struct, frozen=True):
    """What the quarantine keeps of a row: its raw payload, operation and sequence."""

    payload: dict[str, Any]
    op: str = "upsert"
    seq: str | int | None = None


_held = msgspec.json.Decoder(Held)


@dataclass(frozen=True)
class Filters:
    """Which quarantined rows to re-drive; None matches everything."""

    division: str | None = None
    window: str | None = None
    table: str | None = None
    rule: str | None = None
    key: str | None = None


@dataclass
class Moved:
    """What became of the re-driven rows of one division, window and table."""

    division: str
    window: str
    table: str
    rows: int = 0
    rules: dict[str, int] = field(default_factory=dict)
    applied: int = 0
    failed_again: int = 0

    @property
    def in_flight(self) -> int:
        return self.rows - self.applied - self.failed_again

    def line(self, dry_run: bool) -> str:
        rules = ", ".join(f"{rule} {n}" for rule, n in sorted(self.rules.items()))
        head = f"{self.division} {self.window} {self.table}:"
        if dry_run:
            return f"{head} would re-drive {self.rows} ({rules})"
        tail = f", {self.in_flight} not processed yet" if self.in_flight else ""
        return (f"{head} re-driven {self.rows}, moved to Silver {self.applied},"
                f" failed again {self.failed_again}{tail}")


@dataclass
class Report:
    """Per (division, window, table) what ``replay`` re-drove and where it ended."""

    dry_run: bool
    windows: list[Moved] = field(default_factory=list)
    seen: dict[Row, int] = field(default_factory=dict)
    """How often each re-driven row had been seen in quarantine before."""

    @property
    def rows(self) -> int:
        return sum(m.rows for m in self.windows)

    def lines(self) -> list[str]:
        return [m.line(self.dry_run) for m in self.windows]


async def replay(ctx: Context, filters: Filters = Filters(), *, dry_run: bool = False,
                 rows_of: Sequence[tuple[str, str, str, int]] | None = None) -> Report:
    """Send the matching quarantined rows to ingest again, with their row numbers.

    ``rows_of`` selects rows by (division, window, table, row) instead (the status page)."""
    async with ctx.pool.acquire() as conn:
        if rows_of is not None:
            rows = await quarantine.selected(conn, ctx.plan.schema, rows_of)
        else:
            rows = await quarantine.pending(
                conn, ctx.plan.schema, table=filters.table, division=filters.division,
                window=filters.window, rule=filters.rule, key=filters.key)
    report = Report(dry_run)
    groups: dict[tuple[str, str, str], Moved] = {}
    by_division: dict[str, list[Record]] = {}
    for row in rows:
        place = (row["division"], row["window"], row["table_name"])
        moved = groups.get(place)
        if moved is None:
            moved = groups[place] = Moved(*place)
            report.windows.append(moved)
        moved.rows += 1
        moved.rules[row["rule"]] = moved.rules.get(row["rule"], 0) + 1
        report.seen[(*place, row["row"])] = row["seen"]
        held = _held.decode(row["payload"])
        by_division.setdefault(row["division"], []).append(Record(
            division=row["division"], table=row["table_name"], window=row["window"],
            row=row["row"], payload=held.payload, op="delete" if held.op == "delete" else "upsert",
            seq=held.seq, replay=True))
    if dry_run or not rows:
        return report
    producer = Producer(ctx.redis, ctx.keys)
    for records in by_division.values():
        for start in range(0, len(records), producer.chunk_size):
            await producer.send_records(records[start:start + producer.chunk_size])
    return report


async def follow(ctx: Context, report: Report, wait_s: float, poll_s: float = 0.2,
                 clock: Callable[[], float] | None = None) -> Report:
    """Count what became of the re-driven rows: poll the quarantine until every one is
    released (applied) or seen again (failed again), or ``wait_s`` has passed."""
    clock = clock or ctx.clock
    deadline = clock() + wait_s
    groups = {(m.division, m.window, m.table): m for m in report.windows}
    waiting = dict(report.seen)
    while True:
        async with ctx.pool.acquire() as conn:
            states = await quarantine.states(conn, ctx.plan.schema, list(waiting))
        for row, (released, count) in states.items():
            if released or count > waiting[row]:
                moved = groups[row[:3]]
                if released:
                    moved.applied += 1
                else:
                    moved.failed_again += 1
                del waiting[row]
        if not waiting or clock() >= deadline:
            return report
        await asyncio.sleep(poll_s)  # polling the database for a condition, with a deadline
