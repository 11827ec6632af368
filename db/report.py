"""Read-side queries for the demo's printed result and for operators."""

from __future__ import annotations

from typing import Any

import asyncpg

from assay.contracts.gold import Linkage
from assay.db import accounting
from assay.db.ident import qualified, quote


async def kpi_rows(pool: asyncpg.Pool, schema: str, kpi: str, names: dict[str, str]
                   ) -> list[dict[str, Any]]:
    """Annual KPI rows with shipments: division, category, year and the measures."""
    rows = await pool.fetch(
        "SELECT division, category, year, shipped_qty, round(shipped_weight, 3) AS tonnes,"
        " annual_goal, prior_year_shipped, attainment_pct"
        f" FROM {qualified(schema, f'gold_kpi_{kpi}')}"
        " WHERE period = 'year' AND shipped_qty > 0 ORDER BY division, category, year")
    result = [
        {
            "division": names.get(r["division"], r["division"]),
            "category": r["category"],
            "year": int(r["year"]),
            "shipped_qty": int(r["shipped_qty"]),
            "shipped_tonnes": r["tonnes"],
            "annual_goal": None if r["annual_goal"] is None else int(r["annual_goal"]),
            "prior_year_shipped": int(r["prior_year_shipped"]),
            "attainment_pct": r["attainment_pct"],
        }
        for r in rows
    ]
    result.sort(key=lambda r: (r["division"], r["category"], r["year"]))
    return result


async def summary(pool: asyncpg.Pool, schema: str, records_in: int, dead_lettered: int,
                  linkage: Linkage | None, windows_completed: int) -> dict[str, Any]:
    """Where every record went, linkage counts and completed windows; the dead letters
    (counted in Redis: ``assay.streams.dead.dead_letters``) are passed in."""
    outcomes = await accounting.outcomes(pool, schema)
    linked = unmatched = 0
    if linkage is not None:
        link = quote(linkage.link_column)
        union = " UNION ".join(f"SELECT {link} FROM {qualified(schema, f'gold_{t}')}"
                               for t in linkage.targets)
        linked = await pool.fetchval(
            f"SELECT count(*) FROM ({union}) AS links({link}) WHERE {link} IS NOT NULL")
        unmatched = await pool.fetchval(
            "SELECT coalesce(sum(\"rows\"), 0) FROM"
            f" {qualified(schema, 'gold_link_unmatched')}")
    return {
        "records_in": records_in,
        "records_landed": int(outcomes.get("applied", 0)),
        "records_quarantined": int(outcomes.get("quarantined", 0)),
        "records_dead_lettered": dead_lettered,
        "accounts_linked": int(linked),
        "accounts_unmatched": int(unmatched),
        "windows_completed": windows_completed,
    }


async def gold_windows(conn: asyncpg.Connection | asyncpg.Pool, schema: str
                       ) -> dict[tuple[str, str], dict[str, Any]]:
    """Gold's record of each applied window: (division, window) → status, applied_at
    (epoch seconds), seconds, unmatched, applies. Empty before Gold's first start."""
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL",
                               qualified(schema, "gold_windows")):
        return {}
    rows = await conn.fetch(
        "SELECT division, \"window\", status, extract(epoch FROM applied_at)::float8 AS"
        " applied_at, seconds::float8 AS seconds, unmatched, applies FROM"
        f" {qualified(schema, 'gold_windows')}")
    return {(r["division"], r["window"]): dict(r) for r in rows}
