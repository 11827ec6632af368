"""Who may do what over HTTP: tokens by hash, scopes and divisions, hostile requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from assay.contracts.config import ConfigError, load_config
from assay.runner import Context
from assay.streams.keys import Keys
from tests.conftest import OpenContext, write_config
from tests.ops_helpers import captured_logs
from tests.test_produce import sent
from tests.web_helpers import INGEST_EAST, OPERATOR, READER, bearer, served, write_tokens

URL = "/v1/divisions/east/windows/w1/tables/item"
ROWS = [{"id": 1, "name": "a", "qty": 1, "weight": 1, "unit": "LB"}]


@pytest.fixture
async def ctx(tmp_path: Path, schema: str, open_ctx: OpenContext) -> Context:
    return await open_ctx(write_tokens(write_config(tmp_path / "config", schema),
                                       max_header_bytes=8192))


@pytest.fixture
async def base(ctx: Context) -> AsyncIterator[str]:
    async with served(ctx) as (url, _):
        yield url


async def post(base: str, url: str = URL, headers: dict[str, str] | None = None,
               params: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base) as http:
        return await http.post(url, json=ROWS, headers=headers, params=params)


async def test_no_token_and_a_wrong_token_get_401(base: str, redis: aioredis.Redis,
                                                  keys: Keys) -> None:
    for headers in (None, bearer("not-a-token"), {"Authorization": f"Basic {INGEST_EAST}"},
                    {"Authorization": "Bearer"}):
        answer = await post(base, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"].startswith("Bearer")
    async with httpx.AsyncClient(base_url=base) as http:
        for path in ("/v1/windows", "/v1/lag", "/v1/dead", "/v1/quarantine", "/metrics",
                     "/v1/status.html"):
            assert (await http.get(path)).status_code == 401, path
    assert await sent(redis, keys) == ([], [])


async def test_a_token_for_another_division_or_scope_gets_403(
        base: str, redis: aioredis.Redis, keys: Keys) -> None:
    west = await post(base, "/v1/divisions/west/windows/w1/tables/item",
                      headers=bearer(INGEST_EAST))
    assert west.status_code == 403
    assert "west" in west.json()["detail"]
    assert (await post(base, headers=bearer(READER))).status_code == 403
    async with httpx.AsyncClient(base_url=base, headers=bearer(INGEST_EAST)) as http:
        assert (await http.get("/v1/windows")).status_code == 403
        replay = await http.post("/v1/quarantine/replay", json={"rows": []})
        assert replay.status_code == 403
    assert await sent(redis, keys, "west") == ([], [])
    assert await sent(redis, keys) == ([], [])
    assert (await post(base, headers=bearer(INGEST_EAST))).status_code == 202


async def test_a_token_in_the_query_string_is_refused(base: str, redis: aioredis.Redis,
                                                      keys: Keys) -> None:
    for name in ("token", "access_token", "Authorization"):
        answer = await post(base, params={name: INGEST_EAST}, headers=bearer(INGEST_EAST))
        assert answer.status_code == 400
        assert answer.json()["error"] == "token_in_query"
    assert await sent(redis, keys) == ([], [])


async def test_header_injection_and_path_traversal_in_names(
        base: str, redis: aioredis.Redis, keys: Keys) -> None:
    hostile = [
        "/v1/divisions/east/windows/w1/tables/item%0d%0aX-Injected:%201",
        "/v1/divisions/east/windows/w1/tables/..%2F..%2Fitem",
        "/v1/divisions/..%2Feast/windows/w1/tables/item",
        "/v1/divisions/east/windows/..%2F..%2Fw1/tables/item",
        "/v1/divisions/east/windows/w1%0d%0aSet-Cookie:%20a=b/tables/item",
        "/v1/divisions/east/windows/w1/tables/../../../../etc/passwd",
    ]
    for url in hostile:
        answer = await post(base, url, headers=bearer(OPERATOR))
        assert answer.status_code in (404, 422), url
        assert "x-injected" not in answer.headers
        assert "set-cookie" not in answer.headers
    assert await sent(redis, keys) == ([], [])
    assert [k async for k in redis.scan_iter(match=f"{keys.prefix}:*")] == []


async def test_oversize_headers_are_refused(base: str, redis: aioredis.Redis,
                                            keys: Keys) -> None:
    answer = await post(base, headers={**bearer(INGEST_EAST), "X-Big": "a" * 9000})
    assert answer.status_code == 431
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))  # past the parser's limit
    writer.write(f"POST {URL} HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 70_000}\r\n\r\n".encode())
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(100), 10)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 4")
    assert await sent(redis, keys) == ([], [])


async def test_tokens_never_reach_the_logs(base: str) -> None:
    with captured_logs() as entries:
        await post(base, headers=bearer(INGEST_EAST))
        await post(base, headers=bearer("wrong-secret-value"))
        await post(base, "/v1/divisions/west/windows/w1/tables/item",
                   headers=bearer(INGEST_EAST))
    text = json.dumps(entries, default=str)
    assert entries
    assert INGEST_EAST not in text
    assert "wrong-secret-value" not in text


@pytest.mark.parametrize(("token", "problem"), [
    ({"sha256": "my-secret-token"}, "$.http.tokens[0].sha256: not a SHA-256 hex digest"),
    ({"divisions": ["north"]}, "$.http.tokens[0].divisions[0]: division 'north' is not defined"),
    ({"scopes": ["admin"]}, "Invalid enum value 'admin' - at `$.http.tokens[0].scopes[0]`"),
    ({"scopes": []}, "$.http.tokens[0].scopes: a token needs at least one scope"),
])
def test_config_holds_hashes_of_tokens_for_known_divisions(
        tmp_path: Path, token: dict[str, object], problem: str) -> None:
    folder = write_config(tmp_path / "config", "s")
    (folder / "http.json").write_text(json.dumps({"http": {"tokens": [
        {"name": "t", "sha256": "a" * 64, "divisions": ["east"], "scopes": ["read"], **token},
    ]}}))
    with pytest.raises(ConfigError) as caught:
        load_config(folder)
    assert problem in "\n".join(caught.value.problems)


def test_assay_token_prints_a_token_once_and_only_its_hash_for_the_config() -> None:
    from click.testing import CliRunner

    from assay.cli import main
    from assay.web.auth import token_hash

    result = CliRunner().invoke(main, ["token", "--name", "erp", "--division", "east",
                                       "--scope", "ingest", "--scope", "read"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    secret = lines[0].rsplit(" ", 1)[1]
    entry = json.loads(lines[-1])
    assert entry == {"name": "erp", "sha256": token_hash(secret), "divisions": ["east"],
                     "scopes": ["ingest", "read"]}
    assert secret not in lines[-1] and len(secret) >= 40
