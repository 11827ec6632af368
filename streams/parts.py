"""Tables sent in parts (the HTTP API): the row count so far, and answers to retries.

Per division, window and table a counter in Redis holds the last row number handed out;
a part reserves its rows by one ``INCRBY``, so parts sent one after another or side by
side get distinct, gap-free row numbers. An ``Idempotency-Key`` maps to the first answer
given for it (kept ``ttl_s`` seconds); a retry gets that answer and sends nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis.asyncio as aioredis

from assay.streams.keys import Keys

PENDING = b"pending"
"""The answer of a request that is still being handled."""


class TableParts:
    """Row numbering of tables sent in parts, and the idempotency record of each part."""

    def __init__(self, client: aioredis.Redis, keys: Keys, ttl_s: int = 86_400) -> None:
        self.redis = client
        self.keys = keys
        self.ttl_s = ttl_s

    def _rows(self, division: str, window: str, table: str) -> str:
        return self.keys.state(division, f"http:rows:{window}:{table}")

    def _answer(self, division: str, window: str, table: str, key: str) -> str:
        digest = hashlib.sha256(f"{window}\0{table}\0{key}".encode()).hexdigest()
        return self.keys.state(division, f"http:idem:{digest}")

    async def reserve(self, division: str, window: str, table: str, rows: int) -> int:
        """Hand out ``rows`` row numbers; returns the first (1 for the first part)."""
        last = int(await self.redis.incrby(self._rows(division, window, table), rows))
        return last - rows + 1

    async def total(self, division: str, window: str, table: str) -> int:
        return int(await self.redis.get(self._rows(division, window, table)) or 0)

    async def claim(self, division: str, window: str, table: str, key: str) -> bytes | None:
        """Claim an idempotency key: None when it is new (the caller handles the request),
        else the stored answer, or ``PENDING`` while the first request is still running."""
        name = self._answer(division, window, table, key)
        if await self.redis.set(name, PENDING, nx=True, ex=self.ttl_s):
            return None
        found: Any = await self.redis.get(name)
        return PENDING if found is None else bytes(found)

    async def answer(self, division: str, window: str, table: str, key: str,
                     body: bytes) -> None:
        await self.redis.set(self._answer(division, window, table, key), body, ex=self.ttl_s)

    async def release(self, division: str, window: str, table: str, key: str) -> None:
        """Forget a claim whose request was refused, so a corrected retry may run."""
        await self.redis.delete(self._answer(division, window, table, key))
