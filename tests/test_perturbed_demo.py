"""The demo on a perturbed copy of AdventureWorks: duplicate order lines, stale older versions
placed after the true line, and lines with invalid quantities. The simulator passes every line
on; Silver keeps the newest version and quarantines the invalid ones; the KPI rows equal the
clean run's and the quarantine holds exactly the invalid lines the range sent."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from assay.demo.simulator import DEFAULT_DATA_DIR, read_table

pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parents[1]
FIRST, LAST = "2013-01", "2013-03"
INVALID_QTY = ("abc", "0", "-2", "1.5", "", "1e6")


def perturb(target: Path) -> set[str]:
    """A copy of the data with SalesOrderDetail perturbed; returns the SalesOrderDetailIDs of
    the invalid lines the demo's range sends."""
    target.mkdir()
    for file in DEFAULT_DATA_DIR.iterdir():
        if file.name != "SalesOrderDetail.csv.gz":
            (target / file.name).symlink_to(file)
    with read_table(DEFAULT_DATA_DIR, "SalesOrderHeader") as source:
        month = {h["SalesOrderID"]: h["OrderDate"][:7] for h in source}
    with gzip.open(DEFAULT_DATA_DIR / "SalesOrderDetail.csv.gz", "rt", newline="") as f:
        lines = f.read().split("\r\n")[:-1]
    next_id = max(int(line.split(",")[1]) for line in lines) + 1
    out: list[str] = []
    invalid: set[str] = set()
    for n, line in enumerate(lines):
        out.append(line)
        fields = line.split(",")
        # Lines of 2012 orders feed the 2013 goals; the range's own lines land and count.
        if month[fields[0]] < "2012-01" or month[fields[0]] > LAST:
            continue
        if n % 40 == 0:
            out.append(line)  # a duplicate
        elif n % 40 == 20:
            stale = fields.copy()
            stale[3] = str(int(fields[3]) + 7)
            stale[10] = "2010-01-01T00:00:00.0000000Z"
            out.append(",".join(stale))  # an older version after the true one
        elif n % 40 == 10:
            bad = fields.copy()
            bad[1], bad[3] = str(next_id), INVALID_QTY[next_id % len(INVALID_QTY)]
            out.append(",".join(bad))
            if FIRST <= month[fields[0]] <= LAST:
                invalid.add(str(next_id))
            next_id += 1
    (target / "SalesOrderDetail.csv").write_text("".join(f"{line}\r\n" for line in out))
    return invalid


def demo(config: Path, prefix: str, tmp_path: Path, redis_url: str, database_url: str,
         *data: str) -> list[dict[str, Any]]:
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": prefix, "ASSAY_DATA_DIR": str(tmp_path / "state")}
    result = subprocess.run(
        [sys.executable, "-m", "assay", "demo", "--json", "--config", str(config),
         "--first", FIRST, "--last", LAST, *data],
        capture_output=True, text=True, env=env, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


async def test_perturbed_lines_change_no_kpi_and_only_invalid_ones_are_quarantined(
        tmp_path: Path, redis_url: str, database_url: str, prefix: str, redis: object,
        pool: asyncpg.Pool) -> None:
    """The fixtures ``redis`` and ``pool`` drop the demo's keys and schema afterwards."""
    config = tmp_path / "config"
    config.mkdir()
    for file in (ROOT / "config").glob("*.json"):
        data = json.loads(file.read_text())
        if "pipeline" in data:
            data["pipeline"]["db_schema"] = prefix
        (config / file.name).write_text(json.dumps(data))
    invalid = perturb(tmp_path / "perturbed")
    assert len(invalid) > 100

    *clean, _ = await asyncio.to_thread(demo, config, prefix, tmp_path, redis_url, database_url)
    *rows, last = await asyncio.to_thread(demo, config, prefix, tmp_path, redis_url,
                                          database_url, "--data", str(tmp_path / "perturbed"))
    assert rows == clean
    quarantined = await pool.fetch(
        f'SELECT table_name, key, payload FROM "{prefix}".quarantine')
    assert {r["table_name"] for r in quarantined} == {"erp_order_line"}
    assert sorted(r["key"] for r in quarantined) == sorted(invalid)
    assert {json.loads(r["payload"])["payload"]["OrderQty"] for r in quarantined} == {
        qty or None for qty in INVALID_QTY}
    assert last["summary"]["records_quarantined"] == len(invalid)
    assert last["summary"]["records_dead_lettered"] == 0
