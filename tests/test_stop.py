"""SIGTERM ends every process within its grace, its servers up or down (issue #12).

Each process runs as the Procfile runs it, reaching Redis and PostgreSQL through proxies
(``tests/proxy.py``); one of them is cut while the real servers keep running for the
other tests. Once the process has noticed (it logged a retry, or says it is unhealthy),
it gets SIGTERM and must exit 0 within its grace, with its last word logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from assay.contracts.messages import WindowEvent
from assay.runner import GRACE_S, Context, make_consumer
from assay.streams import keys as channels
from assay.streams.codec import encode
from assay.streams.producer import Producer, TableTarget
from tests.conftest import eventually, item_rows
from tests.ops_helpers import free_port
from tests.proxy import Proxy, through

pytestmark = pytest.mark.once  # the stop is ours, whatever the server versions

NOTICED = ("transient_error", "lag_snapshot_failed", "gold_check_failed")
"""What a process logs when a server it talks to stops answering."""


class Logged:
    """A process writing JSON logs to stderr, and the events it has logged so far."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[str] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            try:
                self.events.append(str(json.loads(line)["event"]))
            except (ValueError, KeyError, TypeError):
                self.events.append(line.decode(errors="replace").strip())

    async def logged(self, *events: str) -> None:
        async def seen() -> bool:
            return any(event in self.events for event in events)

        await eventually(seen)


@pytest.fixture
async def proxies(redis_url: str, database_url: str) -> AsyncIterator[dict[str, Proxy]]:
    running = {}
    for server, url in (("redis", redis_url), ("postgresql", database_url)):
        parsed = urlparse(url)
        running[server] = await Proxy(parsed.hostname or "127.0.0.1", parsed.port or 0).start()
    yield running
    for proxy in running.values():
        await proxy.cut()


async def start(args: list[str], ctx: Context, config: Path, redis_url: str,
                database_url: str, proxies: dict[str, Proxy]) -> Logged:
    env = {**os.environ, "REDIS_URL": through(redis_url, proxies["redis"]),
           "DATABASE_URL": through(database_url, proxies["postgresql"]),
           "ASSAY_KEY_PREFIX": ctx.keys.prefix, "ASSAY_LOG_FORMAT": "json",
           "ASSAY_LOG_LEVEL": "INFO"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "assay", *args, "--config", str(config), env=env,
        stderr=asyncio.subprocess.PIPE)
    return Logged(process)


@contextlib.asynccontextmanager
async def running(args: list[str], ctx: Context, config: Path, redis_url: str,
                  database_url: str, proxies: dict[str, Proxy]) -> AsyncIterator[Logged]:
    """``start``, and the process killed at the end if the test left it running."""
    logged = await start(args, ctx, config, redis_url, database_url, proxies)
    try:
        yield logged
    finally:
        if logged.process.returncode is None:
            logged.process.kill()
            await logged.process.wait()


async def send_items(ctx: Context) -> None:
    await Producer(ctx.redis, ctx.keys).send_table(TableTarget("east", "item", "w1"),
                                                   item_rows(10))


async def send_bronze(ctx: Context) -> None:
    await send_items(ctx)
    await make_consumer("bronze", ctx).run(burst=True)


async def send_window(ctx: Context) -> None:
    event = WindowEvent(division="east", window="w1", status="completed",
                        tables={"item": 10}, failed={}, at=time.time())
    await ctx.redis.xadd(ctx.keys.stream("east", channels.WINDOWS), encode(event))


Work = Callable[[Context], Awaitable[None]] | None

LAYERS: dict[str, tuple[Work, str]] = {
    "bronze": (send_items, "layer_stopped"),
    "silver": (send_bronze, "layer_stopped"),
    "barrier": (None, "layer_stopped"),
    "gold": (send_window, "layer_stopped"),
    "monitor": (None, "monitor_stopped"),
}
"""Each layer, the work that makes it talk to PostgreSQL (None: it never does while it
runs; Redis it reads all the time), and its last log line on a clean stop."""


async def stopped(logged: Logged, last_event: str) -> None:
    started = time.monotonic()
    logged.process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(logged.process.wait(), GRACE_S)
    await logged.reader
    assert code == 0, logged.events[-5:]
    assert time.monotonic() - started < GRACE_S
    assert last_event in logged.events, logged.events[-5:]


@pytest.mark.parametrize("server", ["redis", "postgresql"])
@pytest.mark.parametrize("layer", list(LAYERS))
async def test_sigterm_ends_a_layer_while_a_server_is_down(
        layer: str, server: str, ctx: Context, config_dir: Path, redis_url: str,
        database_url: str, proxies: dict[str, Proxy]) -> None:
    work, last_event = LAYERS[layer]
    async with running(["run", layer], ctx, config_dir, redis_url, database_url, proxies) as logged:
        await logged.logged("layer_started", "monitor_started")
        await proxies[server].cut()
        if server == "postgresql" and work is not None:
            await work(ctx)
        if server == "redis" or work is not None:
            await logged.logged(*NOTICED)
        await stopped(logged, last_event)


@pytest.mark.parametrize("server", ["redis", "postgresql"])
async def test_sigterm_ends_the_http_server_while_a_server_is_down(
        server: str, ctx: Context, config_dir: Path, redis_url: str, database_url: str,
        proxies: dict[str, Proxy]) -> None:
    port = free_port()
    async with running(["serve", "--port", str(port)], ctx, config_dir, redis_url,
                       database_url, proxies) as logged:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            async def answers(status: int) -> bool:
                try:
                    return (await http.get("/readyz")).status_code == status
                except httpx.TransportError:
                    return False

            await eventually(lambda: answers(200))
            await proxies[server].cut()
            await eventually(lambda: answers(503))  # it noticed: not reachable
        await stopped(logged, "http_stopped")


async def test_sigterm_ends_a_layer_of_many_streams_while_redis_hangs(
        ctx: Context, config_dir: Path, redis_url: str, database_url: str,
        proxies: dict[str, Proxy]) -> None:
    """A hung Redis answers nothing: every command waits out the socket timeout. The stop
    used to wait it out once more per stream while leaving the groups (the barrier of
    three divisions reads six: 40 s, past the grace); it gives up at the first."""
    pipeline = json.loads((config_dir / "pipeline.json").read_text())
    pipeline["divisions"]["north"] = {"name": "North", "tables": ["item"]}
    (config_dir / "pipeline.json").write_text(json.dumps(pipeline))
    async with running(["run", "barrier"], ctx, config_dir, redis_url, database_url,
                       proxies) as logged:
        await logged.logged("layer_started")
        proxies["redis"].stall()

        async def waiting() -> bool:  # a command of the barrier's is held: it waits
            return proxies["redis"].held > 0

        await eventually(waiting)
        await stopped(logged, "layer_stopped")
        assert logged.events.count("consumer_leave_failed") == 1


async def test_past_its_grace_a_layer_exits_at_once_while_postgresql_hangs(
        ctx: Context, config_dir: Path, redis_url: str, database_url: str,
        proxies: dict[str, Proxy]) -> None:
    """A hung PostgreSQL holds Silver's batch past the grace: the batch is cancelled (left
    pending) and the process exits 1 right then — its pool is terminated, not waited for
    again (that used to add the 5 s close timeout to the grace)."""
    grace = 2.0
    async with running(["run", "silver", "--grace", str(grace)], ctx, config_dir, redis_url,
                       database_url, proxies) as logged:
        await logged.logged("layer_started")
        proxies["postgresql"].stall()
        await send_bronze(ctx)

        async def waiting() -> bool:  # Silver's batch is held by the hung server
            return proxies["postgresql"].held > 0

        await eventually(waiting)
        started = time.monotonic()
        logged.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(logged.process.wait(), GRACE_S)
        took = time.monotonic() - started
        await logged.reader
        assert code == 1 and "shutdown_grace_exceeded" in logged.events, logged.events[-5:]
        assert grace <= took < grace + 4.0  # not grace + the 5 s close timeout
