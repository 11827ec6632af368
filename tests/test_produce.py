"""`assay produce`: CSV and JSON-lines files into the ingest stream, with clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from assay.contracts.messages import Record, RecordBatch, TableEnd, msgpack_decoder
from assay.streams import keys as channels
from assay.streams.keys import Keys


def produce(args: list[str], config_dir: Path, redis_url: str, database_url: str,
            prefix: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": prefix}
    return subprocess.run([sys.executable, "-m", "assay", "produce", *args, "--config",
                           str(config_dir)], capture_output=True, text=True, env=env,
                          check=False)


async def sent(redis: aioredis.Redis, keys: Keys, division: str = "east"
               ) -> tuple[list[Record], list[TableEnd]]:
    records, ends = [], []
    for _, fields in await redis.xrange(keys.stream(division, channels.INGEST)):
        message = msgpack_decoder.decode(fields[b"msgpack"])
        if isinstance(message, RecordBatch):
            records.extend(message.records)
        elif isinstance(message, TableEnd):
            ends.append(message)
    return records, ends


@pytest.fixture
def urls(redis_url: str, database_url: str) -> tuple[str, str]:
    return redis_url, database_url


async def test_csv_with_header_and_delimiter(
        tmp_path: Path, config_dir: Path, urls: tuple[str, str], prefix: str, keys: Keys,
        redis: aioredis.Redis) -> None:
    path = tmp_path / "items.csv"
    path.write_text("id;name;qty;weight;unit\n1;a;2;1.5;LB\n2;b;3;;G\n", encoding="utf-8")
    result = produce([str(path), "--division", "east", "--table", "item", "--window", "w1",
                      "--delimiter", ";"], config_dir, *urls, prefix)
    assert result.returncode == 0, result.stderr
    assert "sent 2 rows" in result.stdout
    records, ends = await sent(redis, keys)
    assert [(r.row, r.payload["name"], r.payload["weight"]) for r in records] == [
        (1, "a", "1.5"), (2, "b", "")]
    assert [(e.table, e.window, e.rows) for e in ends] == [("item", "w1", 2)]


async def test_headerless_tab_file_with_columns_and_encoding(
        tmp_path: Path, config_dir: Path, urls: tuple[str, str], prefix: str, keys: Keys,
        redis: aioredis.Redis) -> None:
    path = tmp_path / "items.tsv"
    path.write_bytes("7\tcafé\t1\t2\tLB\n".encode("latin-1"))
    result = produce([str(path), "--division", "east", "--table", "item", "--window", "w1",
                      "--delimiter", "tab", "--no-header", "--columns",
                      "id,name,qty,weight,unit", "--encoding", "latin-1"],
                     config_dir, *urls, prefix)
    assert result.returncode == 0, result.stderr
    records, _ = await sent(redis, keys)
    assert records[0].payload == {"id": "7", "name": "café", "qty": "1", "weight": "2",
                                  "unit": "LB"}


async def test_json_lines(tmp_path: Path, config_dir: Path, urls: tuple[str, str], prefix: str,
                          keys: Keys, redis: aioredis.Redis) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": 1, "name": "x", "qty": 2.5, "weight": null, "unit": "G"}\n\n'
                    '{"id": 2, "name": "y", "qty": 1, "weight": 3, "unit": "LB"}\n')
    result = produce([str(path), "--division", "east", "--table", "item", "--window", "w1",
                      "--seq-field", "id"], config_dir, *urls, prefix)
    assert result.returncode == 0, result.stderr
    records, ends = await sent(redis, keys)
    assert [(r.row, r.seq, r.payload["weight"]) for r in records] == [(1, 1, None), (2, 2, 3)]
    assert ends[0].rows == 2


def test_malformed_line_is_a_clear_error(tmp_path: Path, config_dir: Path,
                                         urls: tuple[str, str], prefix: str) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": 1}\n[1, 2]\n')
    result = produce([str(path), "--division", "east", "--table", "item", "--window", "w1"],
                     config_dir, *urls, prefix)
    assert result.returncode == 2
    assert "items.jsonl:2: not a JSON object" in result.stderr


def test_unknown_division_is_refused_before_sending(tmp_path: Path, config_dir: Path,
                                                    urls: tuple[str, str], prefix: str) -> None:
    path = tmp_path / "items.csv"
    path.write_text("id\n1\n")
    result = produce([str(path), "--division", "mars", "--table", "item", "--window", "w1"],
                     config_dir, *urls, prefix)
    assert result.returncode == 2
    assert "unknown division 'mars'" in result.stderr


def test_ragged_csv_row_names_its_line(tmp_path: Path, config_dir: Path,
                                       urls: tuple[str, str], prefix: str) -> None:
    path = tmp_path / "items.csv"
    path.write_text("id,name\n1,a\n2\n")
    result = produce([str(path), "--division", "east", "--table", "item", "--window", "w1"],
                     config_dir, *urls, prefix)
    assert result.returncode == 2
    assert "items.csv:3: 1 fields, expected 2" in result.stderr
