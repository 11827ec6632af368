"""``assay lag``: a LagReport as a text table or as JSON, once or refreshed in place."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TextIO

import msgspec

from assay.streams.lag import GroupLag, LagReport

CLEAR = "\x1b[H\x1b[2J"
"""ANSI: cursor home, clear screen."""

HEADER = ("STREAM", "GROUP", "LENGTH", "LAG", "PENDING", "OLDEST", "CONSUMERS", "IDLE", "RATE/S")


def render_table(report: LagReport) -> str:
    """One row per group per stream; ``>=N`` marks a lag counted only up to its bound."""
    rows: list[tuple[str, ...]] = [HEADER]
    for s in report.streams:
        where = f"{s.division}/{s.channel}"
        rows.extend(_group_row(where, s.length, g) for g in s.groups)
        rows.extend((where, f"{layer} (no group)", str(s.length), *[""] * 6)
                    for layer in s.missing)
        if not s.groups and not s.missing:
            rows.append((where, "-", str(s.length), *[""] * 6))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    at = datetime.fromtimestamp(report.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    dead = ", ".join(f"{d.division} {d.length}" for d in report.dead_letters) or "-"
    return "\n".join([f"assay lag at {at}", "", *lines, "", f"dead letters: {dead}"])


def render_json(report: LagReport) -> str:
    return msgspec.json.encode(report).decode()


async def watch(take: Callable[[], Awaitable[LagReport]],
                render: Callable[[LagReport], str] = render_table, out: TextIO = sys.stdout, *,
                interval_s: float = 2.0,
                sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                clear: bool = True, times: int | None = None) -> None:
    """Show a fresh report every ``interval_s`` until cancelled (Ctrl-C) or shown ``times``."""
    shown = 0
    while True:
        report = await take()
        out.write((CLEAR if clear else "") + render(report) + "\n")
        out.flush()
        shown += 1
        if shown == times:
            return
        await sleep(interval_s)


def _group_row(where: str, length: int, g: GroupLag) -> tuple[str, ...]:
    lag = f">={g.lag}" if g.lag_source == "range_bounded" else str(g.lag)
    idle = min((c.idle_ms for c in g.consumers), default=None)
    rate = "" if g.rate is None else f"{g.rate:.1f}"
    return (where, g.layer, str(length), lag, str(g.pending), _seconds(g.oldest_pending_ms),
            str(len(g.consumers)), _seconds(idle), rate)


def _seconds(ms: int | None) -> str:
    return "" if ms is None else f"{ms / 1000:.1f}s"
