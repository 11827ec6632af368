"""The main job end to end: every layer as its own process, the KPI table checked against
an independent recomputation from the raw files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from assay.demo.reference import kpis

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["division", "category", "year", "shipped_qty", "shipped_tonnes", "annual_goal",
        "prior_year_shipped", "attainment_pct"]


def comparable(row: dict[str, Any]) -> tuple[Any, ...]:
    tonnes = Decimal(str(row["shipped_tonnes"])).quantize(Decimal("0.001"))
    pct = row["attainment_pct"]
    return (row["division"], row["category"], row["year"], row["shipped_qty"], tonnes,
            row["annual_goal"], row["prior_year_shipped"],
            None if pct is None else Decimal(str(pct)).quantize(Decimal("0.1")))


SCALED = """bronze: assay run bronze
bronze_2: assay run bronze
silver: assay run silver
silver_2: assay run silver
barrier: assay run barrier
gold: assay run gold
gold_2: assay run gold
monitor: assay run monitor
"""
"""Two consumers each for Bronze, Silver and Gold, sharing their groups."""


@pytest.mark.parametrize("scaled", [
    False,
    # Scaling is the same on every server version: once, not again on the standard ports.
    pytest.param(True, marks=pytest.mark.once),
], ids=["procfile", "two_consumers_per_layer"])
def test_demo_prints_the_reference_kpis(tmp_path: Path, redis_url: str, database_url: str,
                                        prefix: str, redis: object, pool: object,
                                        scaled: bool) -> None:
    """The fixtures ``redis`` and ``pool`` drop the demo's keys and schema afterwards."""
    config = tmp_path / "config"
    config.mkdir()
    for file in (ROOT / "config").glob("*.json"):
        text = file.read_text()
        if file.name == "pipeline.json":
            data = json.loads(text)
            data["pipeline"]["db_schema"] = prefix
            text = json.dumps(data)
        (config / file.name).write_text(text)
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": prefix, "ASSAY_DATA_DIR": str(tmp_path / "data")}
    command = [sys.executable, "-m", "assay", "demo", "--json", "--config", str(config)]
    if scaled:
        (tmp_path / "Procfile").write_text(SCALED)
        command += ["--procfile", str(tmp_path / "Procfile")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    *rows, last = lines
    assert all(list(row) == KEYS for row in rows)
    assert sorted(map(comparable, rows)) == sorted(map(comparable, kpis()))
    summary = last["summary"]
    assert summary["records_in"] == (summary["records_landed"] + summary["records_quarantined"]
                                     + summary["records_dead_lettered"])
    assert summary["records_in"] == 225_570
    assert summary["windows_completed"] == 3 * 38
    assert summary["accounts_unmatched"] == 0 and summary["accounts_linked"] == 19_820
