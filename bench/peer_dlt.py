"""The peer: dlt (dlthub) loading the same order lines into the same PostgreSQL with a merge.

Runs in its own process (``python -m bench.peer_dlt``, started by ``python -m bench peer``)
so its CPU and peak RSS are its own. The rows are ``bench.e2e.order_lines``, the same
text rows the assay producer sends, merged with ``write_disposition="merge"`` on
``SalesOrderDetailID`` into a schema of its own per configuration, dropped afterwards.
Three configurations, each loaded ``--runs`` times (the first load inserts every key, the
next ones update every key):

* ``insert_values``: dict rows, dlt's default PostgreSQL loader (multi-row INSERTs);
* ``csv``: dict rows, ``loader_file_format="csv"`` (COPY), what a dlt user picks for speed;
* ``arrow+csv``: the same text rows turned into typed Arrow tables (pyarrow casts, inside
  the timed extract) and loaded with ``csv``: a raw load, no row-by-row Python at all.

Column hints give the rows the types Silver gives them (bigint, decimal, timestamp). dlt
validates no rules, so the rows assay quarantines (OrderQty 0) load like the others.

    python -m bench.peer_dlt --records 200000 --runs 3 --out peer.json   (DATABASE_URL in env)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

COLUMNS: dict[str, Any] = {
    "SalesOrderID": {"data_type": "bigint"},
    "SalesOrderDetailID": {"data_type": "bigint", "nullable": False},
    "OrderQty": {"data_type": "bigint"},
    "ProductID": {"data_type": "bigint"},
    "UnitPrice": {"data_type": "decimal"},
    "LineTotal": {"data_type": "decimal"},
    "ModifiedDate": {"data_type": "timestamp"},
    "CustomerAccount": {"data_type": "text"},
}
FORMATS = ("insert_values", "csv", "arrow+csv")
DICT_CHUNK = 500
"""Dict rows per yielded list: the chunk the assay producer sends."""
ARROW_CHUNK = 10_000
"""Rows per Arrow table: a batch size an Arrow user would choose."""


def rows(records: int, chunk: int = DICT_CHUNK) -> Iterator[list[dict[str, Any]]]:
    from bench.e2e import order_lines

    for first in range(1, records + 1, chunk):
        yield order_lines(first, min(chunk, records + 1 - first))


def arrow_tables(records: int, chunk: int = ARROW_CHUNK) -> Iterator[Any]:
    """The same text rows as typed Arrow tables: columns cast from text by pyarrow."""
    for batch in rows(records, chunk):
        yield arrow_table(batch)


def arrow_table(batch: list[dict[str, Any]]) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    types = {"bigint": pa.int64(), "decimal": pa.decimal128(38, 9),
             "timestamp": pa.timestamp("us", tz="UTC"), "text": pa.string()}
    columns = {}
    for name, hint in COLUMNS.items():
        text = pa.array([row[name] for row in batch], type=pa.string())
        if hint["data_type"] == "timestamp":
            text = pc.strptime(text, format="%Y-%m-%d %H:%M:%S", unit="us")
            columns[name] = text.cast(pa.timestamp("us")).cast(types["timestamp"])
        else:
            columns[name] = text.cast(types[hint["data_type"]])
    schema = pa.schema([pa.field(name, array.type, nullable=COLUMNS[name].get("nullable", True))
                        for name, array in columns.items()])
    return pa.table(columns, schema=schema)


def with_password(url: str) -> str:
    """dlt insists on a password; a URL without one (trust auth) gets a placeholder."""
    parts = urlsplit(url)
    if parts.password is not None or parts.username is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:unused@{host}"))


def source(fmt: str, records: int) -> Callable[[], Iterator[Any]]:
    if fmt == "arrow+csv":
        return lambda: arrow_tables(records)
    return lambda: rows(records)


def load_format(database_url: str, fmt: str, records: int, runs: int) -> list[dict[str, Any]]:
    """``runs`` loads of one configuration into a dataset of its own, dropped afterwards."""
    import dlt
    import psycopg2

    dataset = f"bench_dlt_{uuid.uuid4().hex[:8]}"
    folder = tempfile.mkdtemp(prefix=f"{dataset}-")
    pipeline = dlt.pipeline(pipeline_name=dataset, pipelines_dir=folder,
                            destination=dlt.destinations.postgres(
                                credentials=with_password(database_url)),
                            dataset_name=dataset)
    file_format: Literal["insert_values", "csv"] = (
        "insert_values" if fmt == "insert_values" else "csv")
    loads = []
    try:
        for n in range(1, runs + 1):
            resource = dlt.resource(source(fmt, records)(), name="erp_order_line",
                                    write_disposition="merge",
                                    primary_key="SalesOrderDetailID", columns=COLUMNS)
            cpu = time.process_time()
            started = time.perf_counter()
            pipeline.extract(resource, loader_file_format=file_format)
            extracted = time.perf_counter()
            pipeline.normalize()
            normalized = time.perf_counter()
            pipeline.load()
            loaded = time.perf_counter()
            with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
                cur.execute(f'SELECT count(*) FROM "{dataset}"."erp_order_line"')
                count = cur.fetchone()
            loads.append({
                "format": fmt, "load": n,
                "seconds": round(loaded - started, 2),
                "records_per_s": round(records / (loaded - started)),
                "extract_s": round(extracted - started, 2),
                "normalize_s": round(normalized - extracted, 2),
                "load_s": round(loaded - normalized, 2),
                "cpu_s": round(time.process_time() - cpu, 2),
                "rows_in_table": count[0] if count else None,
            })
    finally:
        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            for schema in (dataset, f"{dataset}_staging"):
                cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return loads


def load(database_url: str, records: int, runs: int = 3,
         formats: tuple[str, ...] = FORMATS) -> dict[str, Any]:
    """Every configuration in ``formats``, ``runs`` loads each; the best load per format."""
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    import dlt

    loads = [x for fmt in formats for x in load_format(database_url, fmt, records, runs)]
    best = {fmt: max(x["records_per_s"] for x in loads if x["format"] == fmt)
            for fmt in formats}
    return {
        "kind": "peer", "peer": f"dlt {dlt.__version__}", "records": records,
        "write_disposition": "merge", "primary_key": "SalesOrderDetailID",
        "loader_file_format": list(formats), "loads_per_format": runs,
        "chunk": {"insert_values": DICT_CHUNK, "csv": DICT_CHUNK, "arrow+csv": ARROW_CHUNK},
        "best_records_per_s": best, "loads": loads,
        "rows_in_table": min(x["rows_in_table"] or 0 for x in loads),
    }


def peak_rss_kb() -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3, help="loads per configuration (≥ 3)")
    parser.add_argument("--format", action="append", choices=FORMATS,
                        help="configurations to load (repeatable; default: all three)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = load(os.environ["DATABASE_URL"], args.records, args.runs,
                  tuple(args.format or FORMATS))
    result["cpu_s"] = round(time.process_time(), 2)
    result["rss_kb"] = peak_rss_kb()
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
