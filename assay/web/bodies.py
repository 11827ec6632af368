"""Request bodies to rows, in bounded memory: JSON arrays, NDJSON and CSV, gzip or not.

``spool`` reads the body as it arrives, checks every row (an object of scalar values) and
writes the rows, a chunk at a time, as msgpack to a temporary file that stays in memory up
to a few MB and moves to disk beyond. Nothing is sent while the body is read, so a refused
body leaves nothing behind; ``Spooled.rows`` then reads the rows back for the producer.
A bad value raises ``BadBody`` with the JSON path of the first one (``$[3].qty``).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import tempfile
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import IO

import msgspec

from assay.contracts.messages import Scalar

Row = dict[str, Scalar]

CHUNK_ROWS = 1000
MAX_CSV_RECORD = 1024 * 1024
IN_MEMORY_BYTES = 4 * 1024 * 1024
"""The spool moves to a temporary file past this size."""

_row = msgspec.json.Decoder(Row)
_rows = msgspec.json.Decoder(list[Row])
_chunk_out = msgspec.msgpack.Encoder()
_chunk_in = msgspec.msgpack.Decoder(list[Row])


class BadBody(ValueError):
    """The body is not what its content type says; ``path`` names the first bad value."""

    def __init__(self, detail: str, path: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.path = path


class TooLarge(ValueError):
    """The body (after decompression) is larger than allowed."""


@dataclass(frozen=True)
class BodyFormat:
    """How to read one request body."""

    kind: str
    """``json``, ``ndjson`` or ``csv``."""
    gzip: bool = False
    delimiter: str = ","
    max_bytes: int = 256 * 1024 * 1024
    max_json_bytes: int = 32 * 1024 * 1024


class Spooled:
    """Checked rows of one body, held in a temporary file until they are sent, and a
    digest of the rows (the same rows give the same digest however the body was split,
    compressed or chunked on the way)."""

    def __init__(self) -> None:
        # closed by close(), after the rows were sent
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=IN_MEMORY_BYTES)
        self.count = 0
        self._digest = hashlib.sha256()

    @property
    def digest(self) -> str:
        return self._digest.hexdigest()

    def add(self, rows: list[Row]) -> None:
        if not rows:
            return
        for row in rows:
            self._digest.update(_chunk_out.encode(row))
        data = _chunk_out.encode(rows)
        self.file.write(len(data).to_bytes(4, "big"))
        self.file.write(data)
        self.count += len(rows)

    def chunks(self) -> Iterator[list[Row]]:
        self.file.seek(0)
        while header := self.file.read(4):
            yield _chunk_in.decode(self.file.read(int.from_bytes(header, "big")))

    async def rows(self) -> AsyncIterator[Row]:
        for chunk in self.chunks():
            for row in chunk:
                yield row

    def close(self) -> None:
        self.file.close()


async def spool(body: AsyncIterable[bytes], fmt: BodyFormat) -> Spooled:
    """Read and check a whole body into a ``Spooled``; BadBody/TooLarge when refused."""
    spooled = Spooled()
    try:
        data = _limited(_gunzip(body) if fmt.gzip else body, fmt.max_bytes)
        if fmt.kind == "json":
            await _json(data, fmt.max_json_bytes, spooled)
        elif fmt.kind == "ndjson":
            await _ndjson(data, spooled)
        else:
            await _csv(data, fmt.delimiter, spooled)
    except BaseException:
        spooled.close()
        raise
    return spooled


async def _limited(body: AsyncIterable[bytes], limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in body:
        seen += len(chunk)
        if seen > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
        yield chunk


async def _gunzip(body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Decompress as it arrives, in bounded pieces (a small bomb cannot expand at once)."""
    inflate = zlib.decompressobj(wbits=31)
    try:
        async for chunk in body:
            data = inflate.decompress(chunk, 1 << 20)
            while data:
                yield data
                data = inflate.decompress(inflate.unconsumed_tail, 1 << 20)
        rest = inflate.flush()
    except zlib.error as exc:
        raise BadBody(f"not valid gzip: {exc}") from exc
    if rest:
        yield rest
    if not inflate.eof:
        raise BadBody("the gzip stream ends early")


def _at(exc: msgspec.MsgspecError, index: int | None, data: bytes) -> tuple[str, str]:
    """msgspec's message and its path, made relative to row ``index`` of the body, with
    the field named where msgspec says ``[...]`` (a dict value)."""
    message, _, path = str(exc).partition(" - at `")
    path = path.rstrip("`") or "$"
    if path.endswith("[...]"):
        field = _bad_field(data, index, path)
        if field is not None:
            path = path.removesuffix("[...]") + f".{field}"
    if index is not None:
        path = f"$[{index}]" + path[1:]
    return message, path


def _bad_field(data: bytes, index: int | None, path: str) -> str | None:
    """The first field of the row at fault whose value is not a scalar."""
    found = msgspec.json.decode(data)
    if index is None:
        found = found[int(path[2:path.index("]")])]
    if not isinstance(found, dict):
        return None
    return next((k for k, v in found.items() if isinstance(v, dict | list)), None)


async def _json(data: AsyncIterable[bytes], limit: int, spooled: Spooled) -> None:
    parts: list[bytes] = []
    size = 0
    async for chunk in data:
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"a JSON array body may have up to {limit} bytes; send larger"
                           " tables as application/x-ndjson or text/csv (streamed)")
        parts.append(chunk)
    try:
        rows = _rows.decode(body := b"".join(parts))
    except msgspec.ValidationError as exc:
        message, path = _at(exc, None, body)
        raise BadBody(message, path) from exc
    except msgspec.DecodeError as exc:
        raise BadBody(f"not valid JSON: {exc}", "$") from exc
    for start in range(0, len(rows), CHUNK_ROWS):
        spooled.add(rows[start:start + CHUNK_ROWS])


async def _ndjson(data: AsyncIterable[bytes], spooled: Spooled) -> None:
    carry = b""
    index = 0
    async for chunk in data:
        lines = (carry + chunk).split(b"\n")
        carry = lines.pop()
        index = _ndjson_lines(lines, index, spooled)
    _ndjson_lines([carry], index, spooled)


def _ndjson_lines(lines: list[bytes], index: int, spooled: Spooled) -> int:
    rows: list[Row] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            rows.append(_row.decode(line))
        except msgspec.ValidationError as exc:
            message, path = _at(exc, index, line)
            raise BadBody(message, path) from exc
        except msgspec.DecodeError as exc:
            raise BadBody(f"not valid JSON: {exc}", f"$[{index}]") from exc
        index += 1
    for start in range(0, len(rows), CHUNK_ROWS):
        spooled.add(rows[start:start + CHUNK_ROWS])
    return index


async def _csv(data: AsyncIterable[bytes], delimiter: str, spooled: Spooled) -> None:
    """CSV with a header row. Text is parsed up to the last line end outside quotes, so
    a quoted field spanning lines is never cut in two."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    state = _CsvState(delimiter)
    carry = ""
    try:
        async for chunk in data:
            carry = state.feed(carry + decoder.decode(chunk), spooled)
        carry += decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise BadBody(f"not UTF-8: {exc}") from exc
    state.feed(carry, spooled, final=True)
    if state.names is None:
        raise BadBody("a CSV body needs a header row", "$")


class _CsvState:
    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter
        self.names: list[str] | None = None
        self.index = 0

    def feed(self, text: str, spooled: Spooled, final: bool = False) -> str:
        """Parse the complete records of ``text``; returns the incomplete rest."""
        cut = len(text) if final else _complete(text)
        if cut == 0 and len(text) > MAX_CSV_RECORD:
            raise BadBody(f"a CSV record longer than {MAX_CSV_RECORD} characters (an open"
                          " quote?)", f"$[{self.index}]")
        rows: list[Row] = []
        try:
            self._parse(text[:cut], rows)
        except csv.Error as exc:
            raise BadBody(f"not valid CSV: {exc}", f"$[{self.index}]") from exc
        spooled.add(rows)
        return text[cut:]

    def _parse(self, text: str, rows: list[Row]) -> None:
        for values in csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter,
                                 strict=True):
            if self.names is None:
                self.names = [v.strip() for v in values]
                continue
            if not values:
                continue
            if len(values) != len(self.names):
                raise BadBody(f"{len(values)} fields, the header has {len(self.names)}",
                              f"$[{self.index}]")
            rows.append(dict(zip(self.names, values, strict=True)))
            self.index += 1


def _complete(text: str) -> int:
    """Length of the leading part of ``text`` that ends at a line end outside quotes."""
    end = start = quotes = 0
    while (newline := text.find("\n", start)) >= 0:
        quotes += text.count('"', start, newline)
        start = newline + 1
        if quotes % 2 == 0:
            end = start
    return end
