"""The one place that makes Redis clients, and the only one that knows about Redis Cluster.

``connect(url)`` asks the server ``INFO cluster``: a plain server gets a plain
``redis.asyncio.Redis``, a node of a cluster gets a ``RedisCluster`` that finds every other
node by itself and routes each command to the node serving its key's slot. Both have the
same command methods, so everything else takes the ``Client`` it is given and never asks
which one it is. ``ASSAY_REDIS_CLUSTER=yes|no`` (``cluster_override``) skips the question.
A cluster has only database 0: a URL that selects another is refused with a clear message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url

log = structlog.get_logger("assay.streams")

Client: TypeAlias = aioredis.Redis | RedisCluster
"""What every Redis user in assay takes: a plain client or a cluster client."""

CLUSTER_ENV = "ASSAY_REDIS_CLUSTER"

UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

CLUSTER_CHANGING = (redis.exceptions.ClusterError, redis.exceptions.TryAgainError,
                    redis.exceptions.SlotNotCoveredError)
"""A cluster in the middle of a failover or resharding: the same command succeeds later."""

Sleep = Callable[[float], Awaitable[None]]


class RedisSettingsError(ValueError):
    """REDIS_URL (or ASSAY_REDIS_CLUSTER) asks for something the server cannot give."""


def cluster_override(value: str | None) -> bool | None:
    """``ASSAY_REDIS_CLUSTER``: yes → cluster client, no → plain client, unset → detect."""
    if value is None or value.strip().lower() in ("", "auto"):
        return None
    answer = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}
    try:
        return answer[value.strip().lower()]
    except KeyError:
        raise RedisSettingsError(
            f"{CLUSTER_ENV}={value!r}: expected yes, no or auto") from None


async def connect(url: str, *, cluster: bool | None = None, attempts: int | None = 30,
                  sleep: Sleep = asyncio.sleep, **options: Any) -> Client:
    """A connected client for ``url``; a cluster client when the server is a cluster node.

    ``cluster`` forces the choice (``None``: ask the server). While the server does not
    answer, asks again with capped backoff (``attempts`` times; None: however long) rather
    than crash-looping.
    ``options`` are connection options both clients take (``client_name``, timeouts …).
    """
    db = int(parse_url(url).get("db") or 0)
    probe = aioredis.from_url(_database_0(url), **options)  # a cluster node refuses SELECT n
    try:
        if cluster is None:
            cluster = await _is_cluster(probe, attempts, sleep)
    except BaseException:
        await probe.aclose()
        raise
    if not cluster and db == 0:
        return probe
    await probe.aclose()
    if not cluster:
        return aioredis.from_url(url, **options)
    if db != 0:
        raise RedisSettingsError(
            f"REDIS_URL selects database {db}, but the server is a Redis Cluster node and a"
            f" cluster has only database 0: drop the /{db} from the URL (or use /0)")
    # A transaction that fails on a lost node refreshes the slot map only every
    # ``reinitialize_steps`` failures (5 by default): after a failover, our MULTI commits
    # kept going to the dead master for minutes. 1: refresh at the first failure.
    client = RedisCluster.from_url(url, reinitialize_steps=1, **options)
    try:
        await _retrying(client.initialize, attempts, sleep)
    except BaseException:
        await client.aclose()
        raise
    return client


def _database_0(url: str) -> str:
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "db"])
    return urlunsplit(parts._replace(path="/0", query=query))


async def _is_cluster(client: aioredis.Redis, attempts: int | None, sleep: Sleep) -> bool:
    info: Any = await _retrying(lambda: client.info("cluster"), attempts, sleep)
    return bool(int(info.get("cluster_enabled", 0)))


async def _retrying(action: Callable[[], Awaitable[Any]], attempts: int | None,
                    sleep: Sleep) -> Any:
    delay = 0.1
    attempt = 0
    while True:
        attempt += 1
        try:
            return await action()
        except UNREACHABLE as exc:
            if attempt == attempts:
                raise
            log.warning("redis_unreachable", attempt=attempt, error=str(exc), retry_in_s=delay)
            await sleep(delay)
            delay = min(delay * 2, 5.0)


def routed(client: Client, key: str) -> dict[str, Any]:
    """Options that send a command straight to the node serving ``key``'s slot.

    For commands whose keys redis-py cannot read from the arguments (XREADGROUP), the
    cluster client asks one fixed node ``COMMAND GETKEYS`` before every call; when that node
    is a master that died, the command can never be routed again (a layer stalled for good
    after a failover). Naming the node from the client's own slot map avoids the question.
    """
    if isinstance(client, RedisCluster):
        return {"target_nodes": client.get_node_from_key(key)}
    return {}


def is_cluster(client: Client) -> bool:
    """Whether ``client`` talks to a cluster (for what a cluster does differently, such as
    asking every master for a server setting)."""
    return isinstance(client, RedisCluster)


async def persists(client: Client) -> bool:
    """Whether every server behind the client keeps its data on disk (append-only file or
    snapshots): on a cluster, every master is asked."""
    if isinstance(client, RedisCluster):
        masters = client.get_primaries()
        infos: Any = await client.info("persistence", target_nodes=masters)
        saves: Any = await client.config_get("save", target_nodes=masters)
        return all(_persists(infos[n.name], saves[n.name]) for n in masters)
    return _persists(await client.info("persistence"), await client.config_get("save"))


def _persists(info: Any, save: Any) -> bool:
    return bool(int(info.get("aof_enabled", 0))) or bool(save.get("save", ""))
