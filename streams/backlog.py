"""How far behind a stream's consumer groups are: the measure of backpressure."""

from __future__ import annotations

from typing import Any

import redis.exceptions

from assay.streams.client import Client


async def backlog(client: Client, stream: str, scan_bound: int = 10_000) -> int | None:
    """Entries the slowest group has not finished (not yet read + read, not acked).

    None when no group reads the stream (then nobody is behind, there is only a length).
    Acked entries that were not trimmed yet do not count. Redis 7.0 reports no lag after
    deletions; then the entries after the group's last delivered id are counted, bounded.
    """
    try:
        groups: Any = await client.xinfo_groups(stream)
    except redis.exceptions.ResponseError:
        return 0  # no such stream yet
    if not groups:
        return None
    worst = 0
    for group in groups:
        lag = group.get("lag")
        if lag is None:
            last = group["last-delivered-id"]
            last = last.decode() if isinstance(last, bytes) else last
            following: Any = await client.xrange(stream, min=f"({last}", count=scan_bound)
            lag = len(following)
        worst = max(worst, int(lag) + int(group["pending"]))
    return worst
