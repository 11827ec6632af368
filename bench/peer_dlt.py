"""The peer: dlt (dlthub) loading the same order lines into the same PostgreSQL with a merge.

Runs in its own process (``python -m bench.peer_dlt``, started by ``python -m bench peer``)
so its CPU and peak RSS are its own. The rows are ``bench.e2e.order_lines``, the same
text rows the assay producer sends, with column hints giving them the types Silver
gives them; dlt loads them with ``write_disposition="merge"`` on ``SalesOrderDetailID``
into a schema of its own, which is dropped afterwards. dlt validates no rules, so the
rows assay quarantines (OrderQty 0) load like the others.

    python -m bench.peer_dlt --records 200000 --out peer.json   (DATABASE_URL in env)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
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


def rows(records: int, chunk: int = 500) -> Iterator[list[dict[str, Any]]]:
    from bench.e2e import order_lines

    for first in range(1, records + 1, chunk):
        yield order_lines(first, min(chunk, records + 1 - first))


def with_password(url: str) -> str:
    """dlt insists on a password; a URL without one (trust auth) gets a placeholder."""
    parts = urlsplit(url)
    if parts.password is not None or parts.username is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:unused@{host}"))


def load(database_url: str, records: int, runs: int = 2) -> dict[str, Any]:
    """Load the rows ``runs`` times (the first inserts, the next ones update every key)."""
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    import dlt
    import psycopg2

    dataset = f"bench_dlt_{uuid.uuid4().hex[:8]}"
    folder = tempfile.mkdtemp(prefix=f"{dataset}-")
    pipeline = dlt.pipeline(pipeline_name=dataset, pipelines_dir=folder,
                            destination=dlt.destinations.postgres(
                                credentials=with_password(database_url)),
                            dataset_name=dataset)
    loads = []
    try:
        for _ in range(runs):
            resource = dlt.resource(rows(records), name="erp_order_line",
                                    write_disposition="merge",
                                    primary_key="SalesOrderDetailID", columns=COLUMNS)
            started = time.perf_counter()
            pipeline.extract(resource)
            extracted = time.perf_counter()
            pipeline.normalize()
            normalized = time.perf_counter()
            pipeline.load()
            loaded = time.perf_counter()
            loads.append({
                "seconds": round(loaded - started, 2),
                "records_per_s": round(records / (loaded - started)),
                "extract_s": round(extracted - started, 2),
                "normalize_s": round(normalized - extracted, 2),
                "load_s": round(loaded - normalized, 2),
            })
        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            cur.execute(f'SELECT count(*) FROM "{dataset}"."erp_order_line"')
            count = cur.fetchone()
    finally:
        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            for schema in (dataset, f"{dataset}_staging"):
                cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return {
        "kind": "peer", "peer": f"dlt {dlt.__version__}", "records": records,
        "write_disposition": "merge", "primary_key": "SalesOrderDetailID",
        "loader_file_format": "default (insert_values)", "loads": loads,
        "rows_in_table": count[0] if count else None,
    }


def peak_rss_kb() -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = load(os.environ["DATABASE_URL"], args.records, args.runs)
    result["cpu_s"] = round(time.process_time(), 2)
    result["rss_kb"] = peak_rss_kb()
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
