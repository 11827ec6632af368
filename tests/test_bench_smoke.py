"""The end-to-end benchmark harness runs: tiny sizes, no timing asserted, sandbox dropped."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from bench import e2e, report


async def test_a_short_run_commits_every_row_reports_and_drops_its_sandbox(
        service_urls: tuple[str, str], tmp_path: Path) -> None:
    redis_url, database_url = service_urls
    result = await e2e.throughput(redis_url, database_url, seconds=1.0, warmup=1.0,
                                  rate=2_000, drain_s=30.0, log_dir=tmp_path / "logs",
                                  consumers={"bronze": 1, "silver": 2, "barrier": 1})

    assert result["consumers"] == {"bronze": 1, "silver": 2, "barrier": 1}
    assert {p.name for p in (tmp_path / "logs").iterdir()} == {
        "bronze.log", "silver.1.log", "silver.2.log", "barrier.log"}
    assert result["drained_s"] is not None
    assert result["sent_total"] > 0
    assert set(result["layers"]) == {"bronze", "silver", "barrier"}
    assert all(result["rss_kb"].values())
    conn = await asyncpg.connect(database_url)
    client = aioredis.from_url(redis_url)
    try:
        assert not await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1",
                                       result["sandbox"])
        assert not [k async for k in client.scan_iter(match=f"{result['sandbox']}:*")]
    finally:
        await conn.close()
        await client.aclose()

    result["machine"] = {"cores": 2, "date": "-", "load_start": [0, 0, 0],
                         "load_end": [0, 0, 0]}
    (tmp_path / "e2e.json").write_text(json.dumps(result))
    (tmp_path / "e2e-2000-silver2.json").write_text(json.dumps(result))
    report.render(tmp_path)
    text = (tmp_path / "e2e.md").read_text()
    assert "records/s committed in Silver" in text
    [point] = [line for line in text.splitlines() if line.startswith("| 2 | producer at")]
    assert f"{result['records_per_s']:,} ({result['records_per_s']:,}–" in point
    assert (tmp_path / "e2e.png").stat().st_size > 0


def test_order_lines_are_the_same_rows_for_the_same_keys() -> None:
    rows = e2e.order_lines(1, 300)
    assert rows == e2e.order_lines(1, 300)
    assert [r["SalesOrderDetailID"] for r in rows] == [str(n) for n in range(1, 301)]
    assert sum(r["OrderQty"] == "0" for r in rows) == 3
    assert e2e.order_lines(151, 150) == rows[150:]  # a row is the same in any chunk
    assert len({(r["ProductID"], r["CustomerAccount"]) for r in rows}) > 250
