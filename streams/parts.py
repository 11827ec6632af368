"""Tables sent in parts (the HTTP API): row ranges reserved per request, and their retries.

Per division, window and table a counter in Redis holds the last row number handed out;
a part reserves its rows with ``INCRBY``, so parts sent one after another or side by side
get distinct, gap-free row numbers. The reservation is stored under the request's
idempotency key (the client's ``Idempotency-Key``, or one the server made up) before a row
is sent: first row, count, and a fingerprint of the body. A retry under the same key sends
the same rows under the same numbers again, which the pipeline takes once (the barrier's
bitmap counts a row once, Silver upserts), so a request that broke off halfway leaves no
gap and counts nothing twice. Once answered, the key keeps the answer for ``ttl_s``.

While a request sends, it holds a lease on its key (``lease_ms``, renewed as it goes); a
second request with the key is told it is running. A failed request gives the lease back,
a killed one lets it expire, and the retry may run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.exceptions

from assay.streams.client import Client
from assay.streams.keys import Keys
from assay.streams.tasks import cancel_and_wait, cancel_requested

_CLAIM = """
local fingerprint = redis.call('HGET', KEYS[1], 'fingerprint')
if fingerprint and fingerprint ~= ARGV[1] then return {'mismatch'} end
local answer = redis.call('HGET', KEYS[1], 'answer')
if answer then return {'answered', answer} end
if not redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[3]) then return {'running'} end
if fingerprint then
  local first, count = unpack(redis.call('HMGET', KEYS[1], 'first', 'count'))
  return {'resumed', first, count}
end
local count = tonumber(ARGV[2])
local first = redis.call('INCRBY', KEYS[3], count) - count + 1
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'first', first, 'count', count)
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {'reserved', first, count}
"""
"""KEYS: record, lease, row counter. ARGV: fingerprint, rows, lease ms, lease token, ttl s."""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


_LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


@dataclass(frozen=True)
class Claim:
    """What a key holds when a request claims it.

    ``state``: ``reserved`` (new rows ``first``..``first + count - 1``), ``resumed`` (the
    rows an earlier attempt reserved: send them again), ``answered`` (``answer`` is the first
    answer), ``running`` (another request holds the key), ``mismatch`` (the key was used for
    another body).
    """

    state: str
    first: int = 0
    count: int = 0
    answer: bytes = b""
    token: str = ""


class TableParts:
    """Row ranges of tables sent in parts, each stored under its request's key."""

    def __init__(self, client: Client, keys: Keys, ttl_s: int = 86_400,
                 lease_ms: int = 30_000) -> None:
        self.redis = client
        self.keys = keys
        self.ttl_s = ttl_s
        self.lease_ms = lease_ms
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def _rows(self, division: str, window: str, table: str) -> str:
        return self.keys.state(division, f"http:rows:{window}:{table}")

    def _record(self, division: str, window: str, table: str, key: str) -> str:
        digest = hashlib.sha256(f"{window}\0{table}\0{key}".encode()).hexdigest()
        return self.keys.state(division, f"http:part:{digest}")

    async def total(self, division: str, window: str, table: str) -> int:
        return int(await self.redis.get(self._rows(division, window, table)) or 0)

    async def claim(self, division: str, window: str, table: str, key: str,
                    fingerprint: str, rows: int) -> Claim:
        """Reserve ``rows`` row numbers under ``key``, or find what the key already holds;
        ``reserved`` and ``resumed`` come with the lease (give it back with ``release``)."""
        record = self._record(division, window, table, key)
        token = uuid.uuid4().hex
        found: Any = await self._claim(
            keys=[record, f"{record}:lease", self._rows(division, window, table)],
            args=[fingerprint, rows, self.lease_ms, token, self.ttl_s])
        state = found[0].decode()
        if state == "answered":
            return Claim(state, answer=bytes(found[1]))
        if state in ("reserved", "resumed"):
            return Claim(state, first=int(found[1]), count=int(found[2]), token=token)
        return Claim(state)

    @contextlib.asynccontextmanager
    async def leased(self, division: str, window: str, table: str, key: str,
                     claim: Claim) -> AsyncIterator[None]:
        """Keep the claim's lease while the block runs; give it back when it ends."""
        lease = f"{self._record(division, window, table, key)}:lease"
        renewing = asyncio.ensure_future(self._keep(lease, claim.token))
        try:
            yield
        finally:
            with contextlib.suppress(*_LOST):
                await cancel_and_wait(renewing)
            with contextlib.suppress(*_LOST):  # else it expires
                await self._release(keys=[lease], args=[claim.token])

    async def _keep(self, lease: str, token: str) -> None:
        while not cancel_requested():
            await asyncio.sleep(self.lease_ms / 3000)
            await self._renew(keys=[lease], args=[token, self.lease_ms])

    async def answer(self, division: str, window: str, table: str, key: str,
                     body: bytes) -> None:
        """Keep the answer of a request that sent all its rows, for its retries."""
        record = self._record(division, window, table, key)
        async with self.redis.pipeline(transaction=True) as tx:
            tx.hset(record, "answer", body)
            tx.expire(record, self.ttl_s)
            await tx.execute()
