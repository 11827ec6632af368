"""Counting the dead letters: the Redis half of the demo's report (the SQL half is in db/)."""

from __future__ import annotations

import redis.asyncio as aioredis

from assay.streams.keys import DEAD, Keys


async def dead_letters(client: aioredis.Redis, keys: Keys, divisions: list[str]) -> int:
    """How many entries the dead-letter streams of these divisions hold."""
    total = 0
    for division in divisions:
        total += int(await client.xlen(keys.stream(division, DEAD)))
    return total
