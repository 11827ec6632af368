"""Request bodies to rows, whatever the chunking of the body: CSV quotes across chunks,
NDJSON lines across chunks, gzip, the row paths of errors."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import pytest

from assay.web.bodies import BadBody, BodyFormat, Spooled, TooLarge, spool

CSV = ('id;note\n1;"a ""quoted""; text\nover two lines"\n2;plain\n'
       '3;"ends with a quote ""\n"\n')
ROWS = [{"id": "1", "note": 'a "quoted"; text\nover two lines'},
        {"id": "2", "note": "plain"}, {"id": "3", "note": 'ends with a quote "\n'}]


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def rows_of(spooled: Spooled) -> list[dict[str, object]]:
    found = [row for chunk in spooled.chunks() for row in chunk]
    spooled.close()
    return found


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
async def test_csv_records_spanning_chunks(size: int) -> None:
    spooled = await spool(pieces(CSV.encode(), size), BodyFormat("csv", delimiter=";"))
    assert spooled.count == 3
    assert rows_of(spooled) == ROWS


@pytest.mark.parametrize("size", [1, 5, 1000])
async def test_ndjson_lines_spanning_chunks_and_gzip(size: int) -> None:
    body = b'{"a": 1, "b": "x"}\n\n{"a": 2.5, "b": null}\n{"a": true}'
    spooled = await spool(pieces(gzip.compress(body), size), BodyFormat("ndjson", gzip=True))
    assert rows_of(spooled) == [{"a": 1, "b": "x"}, {"a": 2.5, "b": None}, {"a": True}]


async def test_utf8_split_inside_a_character() -> None:
    data = "id,name\n1,café ünïcode\n".encode()
    spooled = await spool(pieces(data, 1), BodyFormat("csv"))
    assert rows_of(spooled) == [{"id": "1", "name": "café ünïcode"}]


@pytest.mark.parametrize(("kind", "body", "path"), [
    ("json", b'[{"a": 1}, {"a": 2}, {"a": {"deep": 1}}]', "$[2].a"),
    ("json", b'{"a": 1}', "$"),
    ("ndjson", b'{"a": 1}\n{"a": [1]}\n', "$[1].a"),
    ("csv", b'a,b\n1,2\n"open quote,3\n', "$[1]"),
])
async def test_the_path_of_the_first_bad_value(kind: str, body: bytes, path: str) -> None:
    with pytest.raises(BadBody) as caught:
        await spool(pieces(body, 4), BodyFormat(kind))
    assert caught.value.path == path


async def test_limits_apply_after_decompression() -> None:
    bomb = gzip.compress(b"\n" * 100_000)
    with pytest.raises(TooLarge):
        await spool(pieces(bomb, 100), BodyFormat("ndjson", gzip=True, max_bytes=10_000))
