"""Every window of every division as one row each: what ``assay windows`` prints and what
``GET /v1/windows`` and the status page show."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from assay.contracts.config import Config
from assay.db import report
from assay.streams.client import Client
from assay.streams.keys import Keys
from assay.streams.windows import WindowStore


async def read_windows(client: Client, conn: asyncpg.Connection | asyncpg.Pool,
                       keys: Keys, config: Config, divisions: Sequence[str], now: float
                       ) -> list[dict[str, Any]]:
    """The windows of ``divisions`` (oldest first per division), as rows."""
    store = WindowStore(client, keys)
    found = [{"division": d, **w} for d in divisions for w in await store.windows(d)]
    applied = await report.gold_windows(conn, config.pipeline.db_schema)
    return window_rows(found, applied, config, now)


async def window_summary(client: Client, keys: Keys, config: Config, division: str,
                         applied: dict[tuple[str, str], dict[str, Any]], now: float, *,
                         waiting: int = 50, done: int = 8
                         ) -> tuple[dict[str, int], list[dict[str, Any]], list[dict[str, Any]]]:
    """A division's windows in brief: counts per status, and as rows the newest ``waiting``
    windows not complete yet and the newest ``done`` complete ones (oldest first);
    ``applied`` is ``report.gold_windows``."""
    store = WindowStore(client, keys)
    brief = await store.summary(division, waiting, done)
    states = await store.states(division, brief.waiting + brief.done)
    rows = window_rows([{"division": division, **w} for w in states], applied, config, now)
    return brief.counts, rows[:len(brief.waiting)], rows[len(brief.waiting):]


def window_rows(found: list[dict[str, Any]], applied: dict[tuple[str, str], dict[str, Any]],
                config: Config, now: float) -> list[dict[str, Any]]:
    """Window states from Redis and Gold's record of them, as one row per window."""
    rows = []
    for w in found:
        tables = config.divisions[w["division"]].tables
        short = [t for t in tables if w.get(f"{t}:expected") is None
                 or w.get(f"{t}:seen", "0") != w.get(f"{t}:expected")]
        gold = applied.get((w["division"], w["window"]))
        rows.append({
            "division": w["division"], "window": w["window"], "status": w.get("status", ""),
            "age_s": round(now - float(w.get("opened_at", now)), 1),
            "complete_after_s": (round(float(w["completed_at"]) - float(w["opened_at"]), 1)
                                 if w.get("completed_at") else None),
            "retries": int(w.get("retries", 0)), "amendments": int(w.get("amendments", 0)),
            "failed": sum(int(w.get(f"{t}:failed", 0)) for t in tables),
            "waiting_for": short,
            "gold_applies": gold["applies"] if gold else 0,
            "gold_s": (round(gold["applied_at"] - float(w["completed_at"]), 1)
                       if gold and w.get("completed_at") else None),
        })
    return rows
