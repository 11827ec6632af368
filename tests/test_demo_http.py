"""``assay demo --via http``: the same records through ``assay serve`` give the same KPIs and
counts as XADD, and the summary says how many rows the HTTP API accepted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_demo import ROOT, comparable

# The HTTP face over the same layers: once, not again on the standard ports.
pytestmark = pytest.mark.once


def demo(tmp_path: Path, redis_url: str, database_url: str, prefix: str,
         *extra: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    config = tmp_path / "config"
    if not config.exists():
        config.mkdir()
        for file in (ROOT / "config").glob("*.json"):
            data = json.loads(file.read_text())
            if file.name == "pipeline.json":
                data["pipeline"]["db_schema"] = prefix
            (config / file.name).write_text(json.dumps(data))
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": prefix, "ASSAY_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "assay", "demo", "--json", "--config", str(config), "--first",
         "2012-01", "--last", "2012-01", *extra],
        capture_output=True, text=True, env=env, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    *rows, last = [json.loads(line) for line in result.stdout.splitlines()]
    return rows, last["summary"]


def test_demo_via_http_matches_the_xadd_path(tmp_path: Path, redis_url: str, database_url: str,
                                             prefix: str, redis: object, pool: object) -> None:
    via_redis, plain = demo(tmp_path, redis_url, database_url, prefix)
    via_http, summary = demo(tmp_path, redis_url, database_url, prefix, "--via", "http")
    assert sorted(map(comparable, via_http)) == sorted(map(comparable, via_redis))
    assert via_http
    assert summary["http_rows"] == summary["records_in"] == plain["records_in"] > 0
    for key in ("records_landed", "records_quarantined", "records_dead_lettered",
                "accounts_linked", "accounts_unmatched", "windows_completed"):
        assert summary[key] == plain[key], key
    assert summary["windows_completed"] == 3
    assert "http_rows" not in plain
    web_log = (tmp_path / "data" / "logs" / "web.log").read_text()
    assert "http_stopped" in web_log
