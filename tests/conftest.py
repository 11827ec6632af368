"""Fixtures: real Redis and PostgreSQL, each test isolated by key prefix and schema.

With ``REDIS_URL``/``DATABASE_URL`` set, the tests use those servers; otherwise one
embedded pair is started for the session (the same helper the CLI uses).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from assay import logs
from assay.contracts.config import Config, load_config
from assay.runner import Context, open_context
from assay.streams.keys import Keys

logs.configure(level=os.environ.get("ASSAY_TEST_LOG_LEVEL", "WARNING"), json=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "service_urls" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def service_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    redis_url = os.environ.get("REDIS_URL")
    database_url = os.environ.get("DATABASE_URL")
    if redis_url and database_url:
        yield redis_url, database_url
        return
    from assay.services import Services

    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    if redis_url:
        env["REDIS_URL"] = redis_url
    if database_url:
        env["DATABASE_URL"] = database_url
    with Services(tmp_path_factory.mktemp("services"), env=env) as urls:
        yield urls.redis_url, urls.database_url


@pytest.fixture
def redis_url(service_urls: tuple[str, str]) -> str:
    return service_urls[0]


@pytest.fixture
def database_url(service_urls: tuple[str, str]) -> str:
    return service_urls[1]


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@pytest.fixture
async def redis(redis_url: str, prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
def schema(prefix: str) -> str:
    return prefix


@pytest.fixture
async def pool(database_url: str, schema: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await pool.close()


ITEM_TABLE: dict[str, Any] = {
    "columns": {"id": "integer", "name": "text", "qty": "number", "weight": "number",
                "unit": "text"},
    "key": ["id"],
    "formulas": {
        "weight_kg": {
            "op": "convert",
            "arg": {"field": "weight", "type": "number"},
            "from_code": {"field": "unit", "type": "text"},
            "units": {"LB": "pound", "G": "gram"},
            "to": "kilogram",
        }
    },
}


def write_config(folder: Path, schema: str, **pipeline: Any) -> Path:
    """A small two-division config with one table, in its own DB schema."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.json").write_text(json.dumps({
        "pipeline": {"db_schema": schema, "batch_size": 100, "block_ms": 50,
                     "claim_idle_ms": 60000, **pipeline},
        "divisions": {"east": {"name": "East", "tables": ["item"]},
                      "west": {"name": "West", "tables": ["item"]}},
    }))
    (folder / "tables.json").write_text(json.dumps({"tables": {"item": ITEM_TABLE}}))
    return folder


@pytest.fixture
def config_dir(tmp_path: Path, schema: str) -> Path:
    return write_config(tmp_path / "config", schema)


@pytest.fixture
def config(config_dir: Path) -> Config:
    return load_config(config_dir)


OpenContext = Callable[[Path], Awaitable[Context]]


@pytest.fixture
async def open_ctx(redis_url: str, database_url: str, prefix: str, redis: aioredis.Redis,
                   pool: asyncpg.Pool) -> AsyncIterator[OpenContext]:
    """Open a pipeline context on this test's servers, key prefix and schema (closed after)."""
    opened: list[Context] = []

    async def open_(folder: Path) -> Context:
        opened.append(await open_context(folder, redis_url, database_url, prefix))
        return opened[-1]

    yield open_
    for context in opened:
        await context.close()


@pytest.fixture
async def ctx(open_ctx: OpenContext, config_dir: Path) -> Context:
    """The default context: the small two-division config of ``write_config``."""
    return await open_ctx(config_dir)


def item_rows(n: int, start: int = 1) -> list[dict[str, Any]]:
    return [{"id": str(i), "name": f"item {i}", "qty": str(i % 7), "weight": "2.5",
             "unit": "LB" if i % 2 else "G "} for i in range(start, start + n)]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real 3-master Redis Cluster of valkey-server nodes for the session (never skipped:
    a missing binary fails)."""
    from assay.services.cluster import LocalCluster

    with LocalCluster(tmp_path_factory.mktemp("cluster"), masters=3) as running:
        yield running


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0,
                     interval: float = 0.02) -> None:
    """Poll a condition until it holds (a bounded wait, not a sleep that hopes)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)
