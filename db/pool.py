"""PostgreSQL connections: one pool per process, connected with capped backoff."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import structlog

from assay.contracts.errors import TransientError

log = structlog.get_logger("assay.db")

TRANSIENT_PG = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.InterfaceError,
    ConnectionError,
    OSError,
)


async def connect(
    dsn: str,
    *,
    attempts: int = 30,
    max_size: int = 4,
    application_name: str = "assay",
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> asyncpg.Pool:
    """Open a pool, retrying while the server is unreachable (capped backoff)."""
    delay = 0.1
    for attempt in range(1, attempts + 1):
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=max_size, command_timeout=300,
                server_settings={"application_name": application_name},
            )
            return pool
        except TRANSIENT_PG as exc:
            if attempt == attempts:
                raise
            log.warning("postgres_unreachable", attempt=attempt, error=str(exc), retry_in_s=delay)
            await sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction; connection trouble becomes TransientError."""
    try:
        async with pool.acquire() as conn, conn.transaction():
            yield conn
    except TRANSIENT_PG as exc:
        raise TransientError(f"{type(exc).__name__}: {exc}") from exc
