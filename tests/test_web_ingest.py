"""HTTP ingest: bodies in three formats, parts, idempotency, refusals, end to end to Silver."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from assay.contracts.messages import Record, WindowEvent
from assay.runner import Context, make_consumer
from assay.streams.codec import json_decoder
from assay.streams.keys import Keys
from assay.streams.parts import TableParts
from assay.streams.producer import Producer
from assay.web.state import Web
from tests.conftest import OpenContext, write_config
from tests.test_produce import sent
from tests.web_helpers import INGEST_EAST, bearer, served, write_tokens

URL = "/v1/divisions/east/windows/w1/tables/item"


@pytest.fixture
async def ctx(tmp_path: Path, schema: str, open_ctx: OpenContext) -> Context:
    folder = write_tokens(write_config(tmp_path / "config", schema),
                          max_body_bytes=200_000, max_json_array_bytes=50_000,
                          backlog_wait_s=0)
    return await open_ctx(folder)


@pytest.fixture
async def client(ctx: Context) -> AsyncIterator[httpx.AsyncClient]:
    async with served(ctx) as (base, _), httpx.AsyncClient(
            base_url=base, headers=bearer(INGEST_EAST)) as http:
        yield http


def item(i: int, **extra: object) -> dict[str, object]:
    return {"id": i, "name": f"n{i}", "qty": i, "weight": 1, "unit": "LB", **extra}


async def test_json_array_is_accepted_with_row_numbers(
        client: httpx.AsyncClient, redis: aioredis.Redis, keys: Keys) -> None:
    answer = await client.post(URL, json=[item(1), item(2), item(3)])
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"rows": 3, "first_row": 1, "last_row": 3, "entries": 1,
                             "final": False, "table_rows": None}
    records, ends = await sent(redis, keys)
    assert [(r.row, r.payload["name"]) for r in records] == [(1, "n1"), (2, "n2"), (3, "n3")]
    assert ends == []


async def test_parts_continue_the_numbering_and_final_sends_the_total(
        client: httpx.AsyncClient, redis: aioredis.Redis, keys: Keys) -> None:
    first = await client.post(URL, json=[item(1), item(2)])
    ndjson = "\n".join(json.dumps(item(i)) for i in (3, 4, 5)) + "\n"
    second = await client.post(URL, content=ndjson,
                               headers={"Content-Type": "application/x-ndjson"})
    csv_body = "id;name;qty;weight;unit\n6;\"six; with\nnewline\";1;2;G\n"
    third = await client.post(URL, params={"final": "true", "delimiter": ";"},
                              content=gzip.compress(csv_body.encode()),
                              headers={"Content-Type": "text/csv", "Content-Encoding": "gzip"})
    assert [a.status_code for a in (first, second, third)] == [202, 202, 202], third.text
    assert (second.json()["first_row"], second.json()["last_row"]) == (3, 5)
    assert third.json() == {"rows": 1, "first_row": 6, "last_row": 6, "entries": 1,
                            "final": True, "table_rows": 6}
    records, ends = await sent(redis, keys)
    assert [r.row for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[-1].payload == {"id": "6", "name": "six; with\nnewline", "qty": "1",
                                   "weight": "2", "unit": "G"}
    assert [(e.table, e.window, e.rows) for e in ends] == [("item", "w1", 6)]


async def test_a_retry_with_the_same_idempotency_key_adds_nothing(
        client: httpx.AsyncClient, redis: aioredis.Redis, keys: Keys) -> None:
    headers = {"Idempotency-Key": "batch-7"}
    first = await client.post(URL, json=[item(1), item(2)], headers=headers)
    again = await client.post(URL, json=[item(1), item(2)], headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replay"] == "true"
    records, _ = await sent(redis, keys)
    assert [r.row for r in records] == [1, 2]


@pytest.mark.parametrize(("content_type", "body", "path"), [
    ("application/json", json.dumps([item(1), item(2, qty={"nested": 1})]), "$[1].qty"),
    ("application/x-ndjson", json.dumps(item(1)) + "\n" + json.dumps(item(2, unit=[1])),
     "$[1].unit"),
    ("application/x-ndjson", json.dumps(item(1)) + "\n{not json\n", "$[1]"),
    ("text/csv", "id,name\n1,a\n2,b,c\n", "$[1]"),
])
async def test_a_bad_value_is_refused_with_its_path_and_nothing_is_sent(
        client: httpx.AsyncClient, redis: aioredis.Redis, keys: Keys, content_type: str,
        body: str, path: str) -> None:
    answer = await client.post(URL, content=body, params={"final": "true"},
                               headers={"Content-Type": content_type})
    assert answer.status_code in (400, 422)
    assert answer.json()["path"] == path
    assert await sent(redis, keys) == ([], [])
    assert (await client.post(URL, json=[item(1)])).json()["first_row"] == 1


async def test_unknown_division_table_and_media_type(client: httpx.AsyncClient,
                                                     redis: aioredis.Redis, keys: Keys) -> None:
    assert (await client.post("/v1/divisions/east/windows/w1/tables/nope",
                              json=[item(1)])).status_code == 404
    assert (await client.post(URL, content="x", headers={"Content-Type": "text/plain"})
            ).status_code == 415
    assert await sent(redis, keys) == ([], [])


async def test_too_large_bodies_get_413(client: httpx.AsyncClient, redis: aioredis.Redis,
                                        keys: Keys) -> None:
    big_json = json.dumps([item(i) for i in range(2000)])
    assert (await client.post(URL, content=big_json,
                              headers={"Content-Type": "application/json"})).status_code == 413
    line = json.dumps(item(1)) + "\n"

    async def stream() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for _ in range(300_000 // len(line)):
            yield line.encode()

    answer = await client.post(URL, content=stream(),
                               headers={"Content-Type": "application/x-ndjson"})
    assert answer.status_code == 413
    bomb = gzip.compress(b"\n" * 5_000_000)
    assert (await client.post(URL, content=bomb, headers={
        "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})).status_code == 413
    assert await sent(redis, keys) == ([], [])


async def test_429_with_retry_after_while_bronze_is_behind(
        client: httpx.AsyncClient, ctx: Context, redis: aioredis.Redis, keys: Keys) -> None:
    stream = keys.stream("east", "ingest")
    await redis.xgroup_create(stream, keys.group("bronze"), id="0", mkstream=True)
    for _ in range(ctx.plan.config.pipeline.max_backlog_entries + 1):
        await redis.xadd(stream, {"json": "{}"})
    answer = await client.post(URL, json=[item(1)])
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "1"
    assert await redis.xlen(stream) == ctx.plan.config.pipeline.max_backlog_entries + 1


async def test_rows_sent_over_http_reach_silver(client: httpx.AsyncClient, ctx: Context,
                                                pool: asyncpg.Pool, schema: str) -> None:
    csv_body = "id,name,qty,weight,unit\n" + "".join(
        f"{i},n{i},{i},2,LB\n" for i in range(1, 1201))
    answer = await client.post(URL, params={"final": "true"}, content=csv_body,
                               headers={"Content-Type": "text/csv"})
    assert answer.json()["entries"] == 12
    for layer in ("bronze", "silver"):
        await make_consumer(layer, ctx).run(burst=True)
    assert await pool.fetchval(f'SELECT count(*) FROM "{schema}".silver_item') == 1200


async def test_a_post_waits_for_bronze_to_catch_up_before_429(
        tmp_path: Path, schema: str, open_ctx: OpenContext, redis: aioredis.Redis,
        keys: Keys) -> None:
    folder = write_tokens(write_config(tmp_path / "waiting", schema), backlog_wait_s=60)
    ctx = await open_ctx(folder)
    stream = keys.stream("east", "ingest")
    await redis.xgroup_create(stream, keys.group("bronze"), id="0", mkstream=True)
    behind = ctx.plan.config.pipeline.max_backlog_entries + 50
    for _ in range(behind):
        await redis.xadd(stream, {"json": "{}"})
    async with served(ctx) as (base, _), httpx.AsyncClient(
            base_url=base, headers=bearer(INGEST_EAST), timeout=60) as http:
        posting = asyncio.ensure_future(http.post(URL, json=[item(1)]))
        await make_consumer("bronze", ctx).run(burst=True)
        answer = await posting
    assert answer.status_code == 202, answer.text
    assert await redis.xlen(keys.stream("east", "dead")) == behind


class CutOff(Producer):
    """The web's producer on a connection of its own, which another client kills (CLIENT
    KILL) right after the ``after``-th entry, with no reconnects: the request loses Redis
    halfway through its body, as when the server's connection breaks for good."""

    def __init__(self, like: Producer, client: aioredis.Redis, killer: aioredis.Redis,
                 after: int) -> None:
        super().__init__(client, like.keys, known=like.known, chunk_size=like.chunk_size,
                         max_backlog=like.max_backlog, retries=1)
        self.killer = killer
        self.after = after
        self.entries = 0

    async def send_records(self, records: list[Record]) -> None:
        await super().send_records(records)
        self.entries += 1
        if self.entries == self.after:
            await self.killer.client_kill_filter(_id=await self.redis.client_id())


@contextlib.asynccontextmanager
async def cut_off(web: Web, redis_url: str, killer: aioredis.Redis,
                  after: int) -> AsyncIterator[None]:
    """While in the block, the web sends through a ``CutOff`` producer."""
    client = aioredis.from_url(redis_url, single_connection_client=True,
                               retry=Retry(NoBackoff(), 0))
    kept = web.producer
    web.producer = CutOff(kept, client, killer, after)
    try:
        yield
    finally:
        web.producer = kept
        await client.aclose()


async def run_layers(ctx: Context) -> None:
    for layer in ("bronze", "silver", "barrier"):
        await make_consumer(layer, ctx).run(burst=True)


async def window_events(ctx: Context) -> list[WindowEvent]:
    raw = await ctx.redis.xrange(ctx.keys.stream("east", "windows"))
    return [json_decoder.decode(f[b"json"]) for _, f in raw]  # type: ignore[misc]


async def rows_in_silver(pool: asyncpg.Pool, schema: str) -> tuple[list[int], list[int]]:
    """The ids in Silver, and the row numbers in the ledger (with repeats, if any)."""
    ids = await pool.fetch(f'SELECT id FROM "{schema}".silver_item ORDER BY id')
    rows = await pool.fetch(f'SELECT "row" FROM "{schema}"._rows WHERE outcome = $1'
                            ' ORDER BY "row"', "applied")
    return [r["id"] for r in ids], [r["row"] for r in rows]


@pytest.mark.parametrize("after", [2, 5])  # 5: every row was sent, the table-end was not
async def test_a_final_part_cut_off_midway_is_retried_under_its_key_with_the_same_rows(
        ctx: Context, redis_url: str, redis: aioredis.Redis, keys: Keys, pool: asyncpg.Pool,
        schema: str, after: int) -> None:
    csv_body = "id,name,qty,weight,unit\n" + "".join(
        f"{i},n{i},{i},2,LB\n" for i in range(1, 451))
    post = {"params": {"final": "true"}, "content": csv_body,
            "headers": {"Content-Type": "text/csv", "Idempotency-Key": "part-1"}}
    async with served(ctx) as (base, web), httpx.AsyncClient(
            base_url=base, headers=bearer(INGEST_EAST)) as http:
        async with cut_off(web, redis_url, redis, after=after):
            broken = await http.post(URL, **post)  # type: ignore[arg-type]
        assert broken.status_code == 503, broken.text
        assert broken.json() == broken.json() | {
            "error": "send_interrupted", "first_row": 1, "last_row": 450,
            "idempotency_key": "part-1"}
        records, ends = await sent(redis, keys)
        assert ([r.row for r in records], ends) == (list(range(1, min(100 * after, 450) + 1)), [])
        retried = await http.post(URL, **post)  # type: ignore[arg-type]
        assert retried.status_code == 202, retried.text
        assert retried.json() == {"rows": 450, "first_row": 1, "last_row": 450,
                                  "entries": 5, "final": True, "table_rows": 450}
        again = await http.post(URL, **post)  # type: ignore[arg-type]
        assert again.json() == retried.json()
        assert again.headers["idempotent-replay"] == "true"
    await run_layers(ctx)
    assert await rows_in_silver(pool, schema) == (list(range(1, 451)), list(range(1, 451)))
    [event] = await window_events(ctx)
    assert (event.status, event.window, event.tables, event.failed) == (
        "completed", "w1", {"item": 450}, {"item": 0})


async def test_a_part_without_a_key_that_is_cut_off_names_its_rows_and_a_key_to_retry(
        ctx: Context, redis_url: str, redis: aioredis.Redis, keys: Keys, pool: asyncpg.Pool,
        schema: str) -> None:
    async with served(ctx) as (base, web), httpx.AsyncClient(
            base_url=base, headers=bearer(INGEST_EAST)) as http:
        before = await http.post(URL, json=[item(i) for i in range(1, 51)])
        async with cut_off(web, redis_url, redis, after=1):
            broken = await http.post(URL, json=[item(i) for i in range(51, 301)])
        assert broken.status_code == 503, broken.text
        key = broken.headers["idempotency-key"]
        assert broken.json() == broken.json() | {
            "first_row": 51, "last_row": 300, "idempotency_key": key}
        other = await http.post(URL, json=[item(i) for i in range(51, 300)],
                                headers={"Idempotency-Key": key})
        assert (other.status_code, other.json()["error"]) == (422, "idempotency_key_reused")
        retried = await http.post(URL, json=[item(i) for i in range(51, 301)],
                                  headers={"Idempotency-Key": key})
        assert retried.json()["first_row"] == 51 and retried.json()["last_row"] == 300
        last = await http.post(URL, params={"final": "true"}, json=[item(301)])
    assert before.json()["last_row"] == 50
    assert last.json()["table_rows"] == 301
    await run_layers(ctx)
    assert await rows_in_silver(pool, schema) == (list(range(1, 302)), list(range(1, 302)))
    [event] = await window_events(ctx)
    assert (event.status, event.tables) == ("completed", {"item": 301})


async def test_a_key_is_held_while_its_request_sends_and_given_back_when_it_fails(
        redis: aioredis.Redis, keys: Keys) -> None:
    parts = TableParts(redis, keys)
    where = ("east", "w1", "item", "k")
    first = await parts.claim(*where, "digest-a", 3)
    with pytest.raises(ConnectionError):
        async with parts.leased(*where, first):
            assert (await parts.claim(*where, "digest-a", 3)).state == "running"
            raise ConnectionError("lost")
    assert (await parts.claim(*where, "digest-b", 3)).state == "mismatch"
    resumed = await parts.claim(*where, "digest-a", 3)
    assert (resumed.state, resumed.first, resumed.count) == ("resumed", 1, 3)
    assert (await parts.claim("east", "w1", "item", "other", "digest-a", 2)).first == 4
