"""PostgreSQL connections: one pool per process, connected with capped backoff."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import asyncpg
import structlog

from assay.contracts.errors import TransientError
from assay.db.codecs import set_codecs

log = structlog.get_logger("assay.db")

T = TypeVar("T")

TRANSIENT_PG = (
    asyncpg.PostgresConnectionError,  # class 08: connection exceptions
    asyncpg.exceptions.OperatorInterventionError,  # 57: shutdown, crash, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # 53: disk full, out of memory, connections
    asyncpg.exceptions.PostgresSystemError,  # 58: I/O errors of the server
    asyncpg.exceptions.TransactionRollbackError,  # 40: deadlock, serialisation failure
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # e.g. "cannot switch to state" after a lost server
    ConnectionError,
    OSError,  # includes TimeoutError
)
"""Server faults: retried with capped backoff, never held against a record."""

NUL_REFUSED = (
    asyncpg.exceptions.CharacterNotInRepertoireError,  # 22021: a text (or bind) holding NUL
    asyncpg.exceptions.UntranslatableCharacterError,  # 22P05: a jsonb holding \u0000
)
"""What PostgreSQL raises for a NUL character in what it stores (its text cannot hold one)."""


async def refusing_nul(write: Callable[[bool], Awaitable[T]]) -> T:
    """``write(False)``: a batch written without looking for NUL. When PostgreSQL refuses it
    for one (the transaction rolled back, nothing was written), ``write(True)``: the layer
    looks at each record and writes the batch again without those that hold NUL."""
    try:
        return await write(False)
    except NUL_REFUSED:
        return await write(True)


async def connect(
    dsn: str,
    *,
    attempts: int | None = None,
    max_size: int = 4,
    application_name: str = "assay",
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> asyncpg.Pool:
    """Open a pool, retrying while the server is unreachable (capped backoff).

    ``attempts`` None: until it answers, however long the outage (a signal still ends
    the process).
    """
    delay = 0.1
    attempt = 0
    while True:
        attempt += 1
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=max_size, command_timeout=300,
                server_settings={"application_name": application_name}, init=set_codecs,
            )
            return pool
        except TRANSIENT_PG as exc:
            if attempt == attempts:
                raise
            log.warning("postgres_unreachable", attempt=attempt, error=str(exc), retry_in_s=delay)
            await sleep(delay)
            delay = min(delay * 2, 5.0)


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction; connection trouble becomes TransientError."""
    try:
        async with pool.acquire() as conn, conn.transaction():
            yield conn
    except TRANSIENT_PG as exc:
        raise TransientError(f"{type(exc).__name__}: {exc}") from exc
