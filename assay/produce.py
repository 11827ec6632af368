"""Reading CSV and JSON-lines files into the producer API, with a progress bar."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
from tqdm import tqdm

from assay.contracts.config import load_config
from assay.contracts.messages import Scalar
from assay.streams.client import connect
from assay.streams.keys import Keys
from assay.streams.producer import Producer, ProducerError, TableTarget


@dataclass(frozen=True)
class FileFormat:
    """How to read a source file."""

    kind: str = "csv"
    delimiter: str = ","
    header: bool = True
    columns: list[str] | None = None
    encoding: str = "utf-8"


def read_rows(path: Path, fmt: FileFormat) -> Iterator[dict[str, Scalar]]:
    """Rows of a file as dicts; a malformed line raises ProducerError naming it."""
    if fmt.kind == "jsonl":
        yield from _jsonl(path, fmt.encoding)
        return
    with path.open(newline="", encoding=fmt.encoding) as f:
        reader = csv.reader(f, delimiter=fmt.delimiter)
        names = fmt.columns
        if fmt.header:
            header = next(reader, None)
            if header is None:
                return
            names = names or [h.strip() for h in header]
        if not names:
            raise ProducerError(f"{path}: no header row; give --columns")
        for line, values in enumerate(reader, start=2 if fmt.header else 1):
            if len(values) != len(names):
                raise ProducerError(
                    f"{path}:{line}: {len(values)} fields, expected {len(names)} ({names})")
            yield dict(zip(names, values, strict=True))


def _jsonl(path: Path, encoding: str) -> Iterator[dict[str, Scalar]]:
    decoder = msgspec.json.Decoder(dict[str, str | int | float | bool | None])  # any integer
    with path.open(encoding=encoding) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ProducerError(f"{path}:{line_no}: not a JSON object of scalars: {exc}"
                                    ) from exc


async def produce_file(path: Path, fmt: FileFormat, *, division: str, table: str, window: str,
                       seq_field: str | None, op: str, redis_url: str, config_dir: Path,
                       key_prefix: str = "assay", redis_cluster: bool | None = None) -> int:
    """Send a file's rows as one table of a window; returns the row count."""
    config = load_config(config_dir)
    known = {d: c.tables for d, c in config.divisions.items()}
    client = await connect(redis_url, cluster=redis_cluster)
    producer = Producer(client, Keys(key_prefix), known=known,
                        max_backlog=config.pipeline.max_backlog_entries)
    target = TableTarget(division, table, window, seq_field=seq_field,
                         op="delete" if op == "delete" else "upsert")
    producer.check(target)
    try:
        with tqdm(desc=f"{table} {division}/{window}", unit=" rows") as bar:
            return await producer.send_table(target, read_rows(path, fmt), progress=bar.update)
    finally:
        await client.aclose()
