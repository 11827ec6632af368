"""The producer API: push the records of a table of one division and window.

Rows are numbered 1..N in the order given and sent in chunks, each chunk one stream
entry holding a ``RecordBatch`` (one round trip per chunk, not per record). The
table ends with a ``TableEnd`` carrying N. Resending after a network error uses the
same row numbers, so a retry never duplicates a row downstream.

Backpressure: before each chunk the producer waits while Bronze has more than
``max_backlog`` entries of the division's ingest stream left to do.

Lost connections are retried with capped backoff, ``retries`` times (None: for as long
as the outage lasts); a ``deadline`` bounds both the retrying and the waiting for room
(``ProducerTimeout``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.exceptions
import structlog

from assay.contracts.messages import Operation, Record, RecordBatch, Scalar, TableEnd
from assay.streams import keys as channels
from assay.streams.backlog import backlog
from assay.streams.client import CLUSTER_CHANGING, Client
from assay.streams.codec import encode, with_big_ints_as_text
from assay.streams.keys import Keys

log = structlog.get_logger("assay.producer")

Row = Mapping[str, Scalar]


class ProducerError(ValueError):
    """The producer was asked to send something the pipeline would not accept."""


class ProducerTimeout(TimeoutError):
    """The deadline passed while the producer waited for Redis or for backlog room."""


@dataclass(frozen=True)
class TableTarget:
    """Where rows go and how they are read: division, table, window, and row options."""

    division: str
    table: str
    window: str
    seq_field: str | None = None
    op: Operation = "upsert"


class Producer:
    """Sends table records into a division's ingest stream."""

    def __init__(
        self,
        client: Client,
        keys: Keys,
        *,
        known: Mapping[str, Iterable[str]] | None = None,
        chunk_size: int = 500,
        max_backlog: int = 100,
        retries: int | None = 10,
        deadline: float | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.known = {d: set(t) for d, t in known.items()} if known is not None else None
        self.chunk_size = chunk_size
        self.max_backlog = max_backlog
        self.retries = retries
        self.deadline = deadline
        """A ``clock()`` value after which waiting raises ``ProducerTimeout``."""
        self.sleep = sleep
        self.clock = clock

    def check(self, target: TableTarget) -> None:
        """Refuse an unknown division or table before anything is sent."""
        if self.known is None:
            return
        if target.division not in self.known:
            raise ProducerError(
                f"unknown division {target.division!r}; known: {sorted(self.known)}")
        if target.table not in self.known[target.division]:
            raise ProducerError(
                f"table {target.table!r} is not expected for division {target.division!r};"
                f" expected: {sorted(self.known[target.division])}")

    async def send_table(
        self,
        target: TableTarget,
        rows: Iterable[Row] | AsyncIterable[Row],
        progress: Callable[[int], object] | None = None,
        *,
        first_row: int = 1,
        end: bool = True,
    ) -> int:
        """Send every row, then the table-end; returns the row count.

        ``first_row``/``end``: a table sent in parts (the HTTP API) numbers each part on
        from where the previous one ended and sends the table-end with the last part only.
        """
        self.check(target)
        count = 0
        chunk: list[Record] = []
        async for row in _aiter(rows):
            count += 1
            seq = row.get(target.seq_field) if target.seq_field else None
            chunk.append(Record(
                division=target.division, table=target.table, window=target.window,
                row=first_row + count - 1, payload=dict(row), op=target.op,
                seq=None if seq is None or isinstance(seq, bool | float) else seq,
            ))
            if len(chunk) >= self.chunk_size:
                await self.send_records(chunk)
                if progress is not None:
                    progress(len(chunk))
                chunk = []
        if chunk:
            await self.send_records(chunk)
            if progress is not None:
                progress(len(chunk))
        if end:
            await self.end_table(target, first_row + count - 1)
        return count

    async def send_records(self, records: list[Record]) -> None:
        """Send records of one division as one entry, retrying lost connections."""
        if not records:
            return
        division = records[0].division
        if any(r.division != division for r in records):
            raise ProducerError("one call sends records of one division")
        stream = self.keys.stream(division, channels.INGEST)
        await self._wait_for_room(stream)
        try:
            fields = encode(RecordBatch(records=records))
        except OverflowError:  # a payload integer msgpack cannot carry: send its exact text
            fields = encode(RecordBatch(records=[with_big_ints_as_text(r) for r in records]))
        await self._with_retry(lambda: self.redis.xadd(stream, fields))

    async def end_table(self, target: TableTarget, rows: int) -> None:
        stream = self.keys.stream(target.division, channels.INGEST)
        message = TableEnd(division=target.division, table=target.table, window=target.window,
                           rows=rows)
        await self._with_retry(lambda: self.redis.xadd(stream, encode(message)))
        log.debug("table_sent", division=target.division, table=target.table,
                 window=target.window, rows=rows)

    async def _wait_for_room(self, stream: str) -> None:
        delay = 0.05
        while (behind := await self._length(stream)) > self.max_backlog:
            self._check_deadline(f"waiting for backlog room on {stream} ({behind} entries)")
            await self.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _check_deadline(self, doing: str) -> None:
        if self.deadline is not None and self.clock() >= self.deadline:
            raise ProducerTimeout(f"deadline passed while {doing}")

    async def _length(self, stream: str) -> int:
        """What Bronze has yet to do (0 while no group reads the stream: nobody to wait for)."""
        behind: Any = await self._with_retry(lambda: backlog(self.redis, stream))
        return int(behind or 0)

    async def _with_retry(self, send: Callable[[], Awaitable[object]]) -> object:
        delay = 0.1
        attempt = 0
        while True:
            attempt += 1
            try:
                return await send()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                    ConnectionError, OSError, *CLUSTER_CHANGING) as exc:
                if attempt == self.retries:
                    raise
                self._check_deadline(f"retrying ({type(exc).__name__}: {exc})")
                log.warning("producer_retry", attempt=attempt, error=str(exc), retry_in_s=delay)
                await self.sleep(delay)
                delay = min(delay * 2, 5.0)


async def _aiter(rows: Iterable[Row] | AsyncIterable[Row]) -> AsyncIterable[Row]:
    if isinstance(rows, AsyncIterable):
        async for row in rows:
            yield row
    else:
        for row in rows:
            yield row
