"""The read API: windows, lag, dead letters, quarantine, metrics, health, OpenAPI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from assay.runner import Context, make_consumer
from assay.streams.keys import Keys
from tests.conftest import ITEM_TABLE, OpenContext, write_config
from tests.web_helpers import OPERATOR, READER, bearer, served, write_tokens

ROOT = Path(__file__).resolve().parent.parent


def item(i: int, qty: int = 1) -> dict[str, object]:
    return {"id": i, "name": f"n{i}", "qty": qty, "weight": 1, "unit": "LB"}


def checked_config(folder: Path, schema: str, validation: bool = True) -> Path:
    """The test config with ``qty >= 0`` checked in Silver (or not: the fixed config)."""
    write_tokens(write_config(folder, schema))
    table = {**ITEM_TABLE, "validation": {"qty": {"min": 0}} if validation else {}}
    (folder / "tables.json").write_text(json.dumps({"tables": {"item": table}}))
    return folder


@pytest.fixture
async def ctx(tmp_path: Path, schema: str, open_ctx: OpenContext) -> Context:
    return await open_ctx(checked_config(tmp_path / "config", schema))


@pytest.fixture
async def http(ctx: Context) -> AsyncIterator[httpx.AsyncClient]:
    async with served(ctx) as (base, _), httpx.AsyncClient(
            base_url=base, headers=bearer(OPERATOR)) as client:
        yield client


async def drain(ctx: Context) -> None:
    for layer in ("bronze", "silver", "barrier"):
        await make_consumer(layer, ctx).run(burst=True)


async def test_windows_lag_dead_and_quarantine(http: httpx.AsyncClient, ctx: Context,
                                               redis: aioredis.Redis, keys: Keys) -> None:
    url = "/v1/divisions/east/windows/w1/tables/item"
    assert (await http.post(url, json=[item(1), item(2, qty=-5)],
                            params={"final": "true"})).status_code == 202
    await redis.xadd(keys.stream("east", "ingest"), {"json": "{not json"})
    await drain(ctx)
    windows = (await http.get("/v1/windows")).json()
    assert [(w["division"], w["window"], w["status"], w["failed"]) for w in windows] == [
        ("east", "w1", "partial", 1)]
    lag = (await http.get("/v1/lag", params={"division": "east"})).json()
    assert {s["division"] for s in lag["streams"]} == {"east"}
    assert {d["division"]: d["length"] for d in lag["dead_letters"]} == {"east": 1}
    dead = (await http.get("/v1/dead", params={"limit": "5"})).json()
    assert len(dead) == 1 and "invalid message" in dead[0]["error"]
    held = (await http.get("/v1/quarantine", params={"division": "east"})).json()
    assert [(c["table_name"], c["rule"], c["rows"]) for c in held["counts"]] == [
        ("item", "min", 1)]
    assert [(r["row"], r["field"]) for r in held["rows"]] == [(2, "qty")]
    assert json.loads(held["rows"][0]["payload"])["payload"]["qty"] == -5
    assert (await http.get("/v1/dead", params={"limit": "0"})).status_code == 422
    assert (await http.get("/v1/windows", params={"division": "nope"})).status_code == 404


async def test_replay_re_drives_the_selected_rows(tmp_path: Path, http: httpx.AsyncClient,
                                                  ctx: Context, schema: str,
                                                  open_ctx: OpenContext) -> None:
    url = "/v1/divisions/east/windows/w1/tables/item"
    await http.post(url, json=[item(1, qty=-1), item(2, qty=-2)], params={"final": "true"})
    await drain(ctx)
    fixed = await open_ctx(checked_config(tmp_path / "fixed", schema, validation=False))
    answer = await http.post("/v1/quarantine/replay", json={"rows": [
        {"division": "east", "window": "w1", "table": "item", "row": 2}]})
    assert answer.status_code == 202 and answer.json() == {"replayed": 1}
    await drain(fixed)
    held = (await http.get("/v1/quarantine")).json()
    assert [r["row"] for r in held["rows"]] == [1]
    assert await fixed.pool.fetchval(f'SELECT qty FROM "{schema}".silver_item') == -2
    bad = await http.post("/v1/quarantine/replay", json={"rows": [{"division": "east"}]})
    assert bad.status_code == 422 and bad.json()["path"] == "$.rows[0]"


async def test_a_reader_sees_metrics_and_health_is_public(ctx: Context) -> None:
    async with served(ctx) as (base, _), httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).status_code == 200
        await http.post("/v1/divisions/east/windows/w1/tables/item", json=[item(1)],
                        headers=bearer(OPERATOR))
        metrics = await http.get("/metrics", headers=bearer(READER))
        assert metrics.status_code == 200
        assert 'assay_stream_length{stream="' in metrics.text
        assert 'assay_http_rows_accepted_total{division="east",table="item"} 1.0' in metrics.text


async def test_the_served_openapi_is_the_checked_in_one(ctx: Context) -> None:
    async with served(ctx) as (base, _), httpx.AsyncClient(base_url=base) as http:
        served_doc = (await http.get("/openapi.json")).json()
    checked_in = msgspec.json.decode((ROOT / "schema" / "openapi.json").read_bytes())
    assert served_doc == checked_in, "run: assay serve --openapi > schema/openapi.json"
    assert "/v1/divisions/{division}/windows/{window}/tables/{table}" in served_doc["paths"]


async def test_window_summary_counts_all_and_names_the_newest(redis: aioredis.Redis,
                                                              keys: Keys) -> None:
    from assay.streams.windows import WindowStore

    for i in range(30):
        name = f"w{i:02d}"
        status = "open" if i % 3 == 0 else "timed_out" if i % 3 == 1 else "completed"
        await redis.hset(keys.state("east", f"w:{name}"), mapping={"status": status})
        await redis.zadd(keys.state("east", "windows"), {name: i})
    brief = await WindowStore(redis, keys).summary("east", waiting=3, done=2)
    assert brief.counts == {"open": 10, "timed_out": 10, "completed": 10}
    assert brief.waiting == ["w25", "w27", "w28"]
    assert brief.done == ["w26", "w29"]
