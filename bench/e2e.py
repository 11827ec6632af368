"""End to end: every layer its own OS process, a producer process beside them, Silver polled.

One harness (``Run``) serves two measurements on the demo's ``erp_order_line`` table
(the rows and their validation rules from ``config/erp.json``):

* ``throughput``: the producer sends as fast as it can (with the Producer API's
  backpressure) for warm-up + ``seconds``; Silver's committed rows are counted in the
  accounting ledger every second. The sustained rate is the rows committed
  during the ``seconds`` after warm-up, divided by those seconds.
* ``latency``: the producer sends at a fixed rate, one chunk every 20 ms, and notes
  when each chunk's XADD returned; the ledger is polled every 20 ms for new rows, so
  each row's XADD-to-Silver-commit latency is known to within one poll interval.

Each run has its own key prefix, DB schema and config folder (a copy of ``config/``
with ``pipeline.db_schema`` changed), all dropped at the end. Around the measured
interval it samples the CPU time of every process involved (layers, producer, the
layers' PostgreSQL backends, Redis), and before stopping the layers it reads their
peak RSS (``VmHWM``). Per-layer rates come from the layers' ``batch_committed`` logs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import functools
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio.cluster import RedisCluster

from assay.contracts.messages import Record, Scalar
from assay.db.ident import qualified, quote
from assay.demo.run import default_concurrency
from assay.runner import LAYERS as CHANNELS
from assay.runner import open_context
from assay.streams.client import Client, connect
from assay.streams.keys import Keys
from assay.streams.producer import Producer, TableTarget

ROOT = Path(__file__).resolve().parents[1]
TABLE = "erp_order_line"
TICK = os.sysconf("SC_CLK_TCK")
BLOCKED_S = 15.0
"""How long past its deadline the producer may wait for backlog room before giving up."""

_DATES = [f"2013-{m:02d}-{d:02d} {h:02d}:{h * 7 % 60:02d}:00"
          for m in range(1, 13) for d in (2, 9, 16, 23) for h in (1, 8, 14, 20)]
_PRICES = (2.29, 4.99, 8.99, 20.994, 34.99, 49.99, 120.0, 539.99, 782.99, 2024.994)


_PERIOD = 100 * 701
"""Row ``n`` takes its non-key values from ``_values(seed)[n % _PERIOD]`` (a multiple of 100,
so every hundredth row is the quarantined one)."""


@functools.cache
def _values(seed: int) -> tuple[tuple[str, str, str, str, str], ...]:
    """(OrderQty, ProductID, UnitPrice, LineTotal, CustomerAccount) texts, drawn once."""
    rng = random.Random(seed)
    values = []
    for n in range(_PERIOD):
        qty = 0 if n % 100 == 0 else rng.randint(1, 12)
        price = _PRICES[rng.randrange(len(_PRICES))]
        values.append((str(qty), str(rng.randint(707, 999)), f"{price:.4f}",
                       f"{qty * price:.6f}", f"AW{rng.randint(11000, 30118):08d}"))
    return tuple(values)


def order_lines(first: int, count: int, seed: int = 7) -> list[dict[str, Scalar]]:
    """erp_order_line rows as the ERP's CSV export carries them, keys first..first+count-1.

    One row in a hundred has ``OrderQty`` 0, which breaks the table's ``min: 1`` rule and
    goes to quarantine. Row ``n`` is the same whatever the call it comes in. The random
    values are drawn once per seed and reused with a period of 70,100 rows: a row costs the
    producer process 0.4 µs to make. Drawing them per row cost 2.5 µs (more on a loaded
    machine), which the all-in CPU figure counted as the pipeline's.
    """
    values, dates = _values(seed), _DATES
    rows: list[dict[str, Scalar]] = []
    for n in range(first, first + count):
        qty, product, price, total, account = values[n % _PERIOD]
        rows.append({
            "SalesOrderID": str(43659 + n // 4),
            "SalesOrderDetailID": str(n),
            "OrderQty": qty,
            "ProductID": product,
            "UnitPrice": price,
            "LineTotal": total,
            "ModifiedDate": dates[n % len(dates)],
            "CustomerAccount": account,
        })
    return rows


# --- the producer process -------------------------------------------------------------


@dataclass
class ProduceOptions:
    """What the producer process sends: to which divisions, how fast, for how long."""

    config_dir: Path
    divisions: list[str]
    seconds: float
    out: Path
    rate: float | None = None
    """Records per second; None sends as fast as backpressure allows."""
    chunk: int = 500
    window_rows: int = 20_000
    """Rows per division and window; then a table_end and the next window."""
    backlog: int = 1_000
    """The Producer's max_backlog: ingest entries per division before it waits."""


async def produce(options: ProduceOptions, redis_url: str, key_prefix: str) -> None:
    """Send order lines round-robin over the divisions; write what was sent when to ``out``."""
    client = await connect(redis_url)
    producer = Producer(client, Keys(key_prefix), chunk_size=options.chunk,
                        max_backlog=options.backlog)
    sent_in = dict.fromkeys(options.divisions, 0)
    window_of = dict.fromkeys(options.divisions, 0)
    chunks: list[tuple[str, str, int, int, float]] = []
    interval = options.chunk / options.rate if options.rate else 0.0
    order_lines(1, 1)  # the values table, drawn before the clock starts
    started = time.time()
    print(json.dumps({"started": started}), flush=True)
    deadline, key, k, blocked = started + options.seconds, 1, 0, False
    stop: list[int] = []  # SIGTERM: the bench's measured interval is over (kept to the end)
    signal.signal(signal.SIGTERM, lambda signum, _: stop.append(signum))
    while time.time() < deadline and not stop:
        if interval:
            await asyncio.sleep(max(0.0, started + k * interval - time.time()))
        division = options.divisions[k % len(options.divisions)]
        window = f"w{window_of[division]:04d}"
        first = sent_in[division] + 1
        records = [Record(division=division, table=TABLE, window=window, row=first + i,
                          payload=row)
                   for i, row in enumerate(order_lines(key, options.chunk))]
        try:
            await asyncio.wait_for(producer.send_records(records),
                                   max(1.0, deadline + BLOCKED_S - time.time()))
        except TimeoutError:
            blocked = True
            break
        chunks.append((division, window, first, options.chunk, time.time()))
        key, k = key + options.chunk, k + 1
        sent_in[division] += options.chunk
        if sent_in[division] >= options.window_rows:
            await producer.end_table(TableTarget(division, TABLE, window), sent_in[division])
            window_of[division] += 1
            sent_in[division] = 0
    for division, rows in sent_in.items():
        if rows and not blocked:
            window = f"w{window_of[division]:04d}"
            await producer.end_table(TableTarget(division, TABLE, window), rows)
    await client.aclose()
    options.out.write_text(json.dumps({
        "started": started, "ended": time.time(), "sent": sum(c[3] for c in chunks),
        "blocked": blocked,
        "chunks": chunks, "cpu_s": time.process_time(), "rss_kb": peak_rss_kb(os.getpid()),
    }))


# --- processes, CPU and memory -----------------------------------------------------------


def peak_rss_kb(pid: int) -> int | None:
    """VmHWM of a live process, in kB (None when it is gone or not readable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (None when not readable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def local_ports(pid: int) -> set[int]:
    """Local TCP ports of a process's sockets (to find its PostgreSQL backends)."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return set()
    inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores together), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / TICK


@dataclass
class Sandbox:
    """One run's servers, key prefix, DB schema and config folder; dropped at the end."""

    redis_url: str
    database_url: str
    prefix: str
    folder: Path
    divisions: list[str]
    batch_size: int
    max_backlog: int
    pool: asyncpg.Pool
    redis: Client

    @property
    def schema(self) -> str:
        return self.prefix

    @property
    def config_dir(self) -> Path:
        return self.folder / "config"

    def env(self) -> dict[str, str]:
        return {**os.environ, "REDIS_URL": self.redis_url, "DATABASE_URL": self.database_url,
                "ASSAY_KEY_PREFIX": self.prefix, "PYTHONPATH": str(ROOT)}


def copy_config(source: Path, target: Path, schema: str,
                rename: Mapping[str, str] | None = None) -> list[str]:
    """Copy a config folder with ``pipeline.db_schema`` set and divisions renamed
    (``rename``: old id → new id); returns the division ids."""
    target.mkdir(parents=True)
    divisions: list[str] = []
    for path in sorted(source.glob("*.json")):
        data = json.loads(path.read_text())
        if "pipeline" in data:
            data["pipeline"]["db_schema"] = schema
        if "divisions" in data and rename:
            data["divisions"] = {rename.get(k, k): v for k, v in data["divisions"].items()}
        divisions.extend(data.get("divisions", {}))
        (target / path.name).write_text(json.dumps(data, indent=2))
    return divisions


@contextlib.asynccontextmanager
async def sandbox(redis_url: str, database_url: str, label: str,
                  rename: Mapping[str, str] | None = None) -> AsyncIterator[Sandbox]:
    """A fresh prefix and schema with the tables migrated; all of it dropped on the way out."""
    prefix = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2,
                                     server_settings={"application_name": f"bench:{prefix}"})
    client = await connect(redis_url)
    try:
        divisions = copy_config(ROOT / "config", folder / "config", prefix, rename)
        ctx = await open_context(folder / "config", redis_url, database_url, prefix)
        await ctx.close()
        pipeline = ctx.plan.config.pipeline
        yield Sandbox(redis_url, database_url, prefix, folder, divisions, pipeline.batch_size,
                      pipeline.max_backlog_entries, pool, client)
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {quote(prefix)} CASCADE")
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            await client.delete(key)
        await pool.close()
        await client.aclose()
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Layer:
    """A layer's consumer process (``name``: its slot, e.g. ``silver.2``) and its log file."""

    name: str
    process: asyncio.subprocess.Process
    log: Path
    layer: str = ""

    def __post_init__(self) -> None:
        self.layer = self.layer or self.name


def slots(consumers: Mapping[str, int]) -> list[tuple[str, str]]:
    """(layer, slot name) per consumer process: ``silver: 2`` → silver.1, silver.2."""
    return [(layer, layer if n == 1 else f"{layer}.{i}")
            for layer, n in consumers.items() for i in range(1, n + 1)]


def default_consumers() -> dict[str, int]:
    """The demo's: one consumer each, Silver one per core up to four."""
    return {"bronze": 1, "barrier": 1, **default_concurrency()}


async def start_layer(box: Sandbox, layer: str, log_dir: Path, name: str | None = None
                      ) -> Layer:
    """``python -m assay run LAYER`` with JSON debug logs; returns once it has started."""
    name = name or layer
    log = log_dir / f"{name}.log"
    env = {**box.env(), "ASSAY_LOG_LEVEL": "DEBUG", "ASSAY_LOG_FORMAT": "json"}
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "assay", "run", layer, "--config", str(box.config_dir),
            "--name", name, env=env, stdout=out, stderr=out, cwd=ROOT)
    deadline = time.monotonic() + 60
    while b'"layer_started"' not in log.read_bytes():
        if process.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"layer {name} did not start; see {log}")
        await asyncio.sleep(0.05)
    return Layer(name, process, log, layer)


async def stop(process: asyncio.subprocess.Process, grace_s: float = 30.0) -> int:
    """SIGTERM (the layers finish their batch and exit 0), SIGKILL after the grace period."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), grace_s)
    except TimeoutError:
        process.kill()
        return await process.wait()


# --- reading Silver's ledger ---------------------------------------------------------------


class Ledger:
    """Rows of the bench table that Silver accounted for (applied or quarantined)."""

    def __init__(self, box: Sandbox, window_rows: int) -> None:
        self.pool = box.pool
        self.rows = qualified(box.schema, "_row_ranges")
        self.divisions = box.divisions
        self.window_rows = window_rows
        self.closed_windows = 0
        self.closed_rows = 0
        self.low = dict.fromkeys(box.divisions, 0)
        self.seen: dict[tuple[str, int], float] = {}

    async def count(self) -> int:
        """Every row committed so far; complete windows are counted once, then remembered."""
        counts = await self.pool.fetch(
            f'SELECT "window", sum(last_row - first_row + 1)::bigint AS n FROM {self.rows}'
            ' WHERE division = ANY($1::text[])'
            ' AND "window" >= $2 AND table_name = $3 GROUP BY "window" ORDER BY "window"',
            self.divisions, f"w{self.closed_windows:04d}", TABLE)
        full = self.window_rows * len(self.divisions)
        open_rows = 0
        for record in counts:
            if record["window"] == f"w{self.closed_windows:04d}" and record["n"] == full:
                self.closed_windows += 1
                self.closed_rows += full
            else:
                open_rows += record["n"]
        return self.closed_rows + open_rows

    async def poll_rows(self, window: str) -> None:
        """Note the time each row of ``window`` is first seen (an upper bound of its commit)."""
        now = time.time()
        found = await self.pool.fetch(
            'SELECT r.division, r.first_row, r.last_row FROM unnest($1::text[], $2::bigint[])'
            f' AS w(d, low) JOIN {self.rows} r ON r.division = w.d AND r."window" = $3'
            ' AND r.table_name = $4 AND r.last_row > w.low',
            list(self.low), list(self.low.values()), window, TABLE)
        for record in found:
            low = self.low[record["division"]]
            for row in range(max(record["first_row"], low + 1), record["last_row"] + 1):
                self.seen.setdefault((record["division"], row), now)
        for division in self.low:
            while (division, self.low[division] + 1) in self.seen:
                self.low[division] += 1


# --- one run ---------------------------------------------------------------------------


@dataclass
class Snapshot:
    """CPU seconds of every process of interest at one moment.

    ``backends`` holds each PostgreSQL backend serving the layers, by (layer, backend pid):
    a backend belongs to the layer whose process holds its client port.
    """

    at: float
    cpu: dict[str, float | None]
    backends: dict[tuple[str, int], float | None]
    redis: float
    machine: float


@dataclass
class Run:
    """Layer processes in a sandbox, a producer process beside them, and their measures."""

    box: Sandbox
    log_dir: Path
    layers: list[Layer] = field(default_factory=list)
    producer: asyncio.subprocess.Process | None = None

    async def start(self, consumers: Mapping[str, int] | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.layers = list(await asyncio.gather(
            *(start_layer(self.box, layer, self.log_dir, name)
              for layer, name in slots(consumers or default_consumers()))))

    def consumers(self) -> dict[str, int]:
        return dict(collections.Counter(layer.layer for layer in self.layers))

    async def start_producer(self, options: ProduceOptions) -> float:
        """Start the producer process; returns the wall time at which it began sending."""
        args = [sys.executable, "-m", "bench", "produce", "--config", str(options.config_dir),
                "--divisions", ",".join(options.divisions), "--seconds", str(options.seconds),
                "--chunk", str(options.chunk), "--window-rows", str(options.window_rows),
                "--backlog", str(options.backlog), "--out", str(options.out)]
        if options.rate:
            args += ["--rate", str(options.rate)]
        self.producer = await asyncio.create_subprocess_exec(
            *args, env=self.box.env(), cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        assert self.producer.stdout is not None
        line = await asyncio.wait_for(self.producer.stdout.readline(), 60)
        if not line:
            raise RuntimeError("the producer exited before it started sending")
        return float(json.loads(line)["started"])

    def stop_producer(self) -> None:
        """The producer ends after the chunk in hand (and its windows' table ends)."""
        if self.producer is not None and self.producer.returncode is None:
            self.producer.send_signal(signal.SIGTERM)

    async def wait_producer(self, out: Path) -> dict[str, Any]:
        assert self.producer is not None
        code = await self.producer.wait()
        if code != 0:
            raise RuntimeError(f"the producer exited with {code}")
        sent: dict[str, Any] = json.loads(out.read_text())
        return sent

    def check_alive(self) -> None:
        dead = [layer.name for layer in self.layers if layer.process.returncode is not None]
        if dead:
            raise RuntimeError(f"layer {dead[0]} exited early; see {self.log_dir}")

    async def snapshot(self) -> Snapshot:
        """CPU seconds so far; a layer with several consumer processes sums them."""
        cpu: dict[str, float | None] = {}
        for layer in self.layers:
            used, before = cpu_seconds(layer.process.pid), cpu.get(layer.layer, 0.0)
            cpu[layer.layer] = None if used is None or before is None else before + used
        if self.producer is not None:
            cpu["producer"] = cpu_seconds(self.producer.pid)
        cpu["bench (poller)"] = time.process_time()
        owner = {port: layer.layer for layer in self.layers
                 for port in local_ports(layer.process.pid)}
        backends = await self.box.pool.fetch(
            "SELECT pid, client_port FROM pg_stat_activity WHERE application_name = $1",
            f"assay:{self.box.prefix}")
        return Snapshot(time.time(), cpu,
                        {(owner.get(r["client_port"], "?"), r["pid"]): cpu_seconds(r["pid"])
                         for r in backends},
                        await redis_cpu_seconds(self.box.redis), machine_busy_seconds())

    async def backlog(self) -> dict[str, dict[str, int]]:
        """Per channel, over the divisions: entries in the streams, and entries not yet
        delivered to (lag) or not yet acked by (pending) the group reading them."""
        found: dict[str, dict[str, int]] = {}
        for layer in dict.fromkeys(x.layer for x in self.layers):
            for channel in CHANNELS[layer]:
                totals = found.setdefault(channel, {"entries": 0, "lag": 0, "pending": 0})
                for division in self.box.divisions:
                    stream = Keys(self.box.prefix).stream(division, channel)
                    totals["entries"] += int(await self.box.redis.xlen(stream))
                    groups: Any = await self.box.redis.xinfo_groups(stream)
                    for group in groups:
                        totals["lag"] += int(group.get("lag") or 0)
                        totals["pending"] += int(group["pending"])
        return found

    def peak_rss(self) -> dict[str, int | None]:
        """Each layer's peak RSS in kB (its largest process); read while they still run."""
        peaks: dict[str, int | None] = {}
        for layer in self.layers:
            kb = peak_rss_kb(layer.process.pid)
            known = [x for x in (peaks.get(layer.layer), kb) if x is not None]
            peaks[layer.layer] = max(known) if known else None
        return peaks

    async def stop_all(self) -> list[int]:
        codes = [await stop(layer.process) for layer in self.layers]
        if self.producer is not None:
            await stop(self.producer)
        return codes


async def redis_cpu_seconds(client: Client) -> float:
    """CPU seconds the Redis server used so far (on a cluster: every node together)."""
    if isinstance(client, RedisCluster):
        nodes: Any = await client.info("cpu", target_nodes=client.get_nodes())
        infos = list(nodes.values())
    else:
        infos = [await client.info("cpu")]
    return sum(float(i["used_cpu_sys"]) + float(i["used_cpu_user"]) for i in infos)


def cpu_use(first: Snapshot, last: Snapshot) -> dict[str, float | None]:
    """Cores used per process between two snapshots (1.0 = one core all the time)."""
    span = last.at - first.at
    use: dict[str, float | None] = {}
    for name, end in last.cpu.items():
        begin = first.cpu.get(name)
        use[name] = None if end is None or begin is None else round((end - begin) / span, 3)
    for layer in sorted({layer for layer, _ in last.backends}):
        used = [end - (first.backends.get((name, pid)) or 0.0)
                for (name, pid), end in last.backends.items() if name == layer and end is not None]
        use[f"postgres for {layer}"] = round(sum(used) / span, 3) if used else None
    use["redis server (all its clients)"] = round((last.redis - first.redis) / span, 3)
    use["machine (every process)"] = round((last.machine - first.machine) / span, 3)
    return use


def batch_events(log: Path) -> list[dict[str, Any]]:
    """The ``batch_committed`` events of a layer's JSON log, with ``at`` in epoch seconds."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        if '"batch_committed"' in line:
            event = json.loads(line)
            event["at"] = dt.datetime.fromisoformat(event["timestamp"]).timestamp()
            events.append(event)
    return events


def layer_events(layers: list[Layer]) -> dict[str, list[dict[str, Any]]]:
    """The ``batch_committed`` events per layer, of all its consumer processes."""
    events: dict[str, list[dict[str, Any]]] = {}
    for layer in layers:
        events.setdefault(layer.layer, []).extend(batch_events(layer.log))
    return events


def layer_rates(layers: list[Layer], begin: float, end: float) -> dict[str, dict[str, Any]]:
    """Per layer, from its ``batch_committed`` events inside [begin, end]."""
    rates: dict[str, dict[str, Any]] = {}
    for name, events in layer_events(layers).items():
        batches = [b for b in events if begin <= b["at"] <= end]
        records = sum(b["processed"] + b["quarantined"] for b in batches)
        busy = sum(b["seconds"] for b in batches)
        items = [b["items"] for b in batches]
        rates[name] = {
            "records_per_s": round(records / (end - begin)),
            "busy_fraction": round(busy / (end - begin), 3),
            "records_per_busy_s": round(records / busy) if busy else None,
            "batches": len(batches),
            "mean_batch_items": round(sum(items) / len(items)) if items else 0,
            "max_batch_items": max(items, default=0),
        }
    return rates


def per_second(events: list[tuple[float, int]], start: float) -> list[tuple[int, int]]:
    """Counts summed per whole second since ``start``."""
    buckets: dict[int, int] = {}
    for at, n in events:
        buckets[int(at - start)] = buckets.get(int(at - start), 0) + n
    return sorted(buckets.items())


async def count_until(run: Run, ledger: Ledger, samples: list[tuple[float, int]],
                      until: float, every: float = 1.0) -> tuple[float, int]:
    """Count Silver's rows every ``every`` seconds until ``until``; returns the last count."""
    while True:
        run.check_alive()
        samples.append((time.time(), await ledger.count()))
        if samples[-1][0] >= until:
            return samples[-1]
        await asyncio.sleep(max(0.0, min(every, until - time.time())))


async def start_profilers(layers: list[Layer], folder: Path, seconds: float
                          ) -> list[asyncio.subprocess.Process]:
    """``py-spy record`` on each layer for ``seconds``, written twice: as collapsed stacks
    (``<layer>.txt``, read by the report) and as a flame graph (``<layer>.svg``)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    folder.mkdir(parents=True, exist_ok=True)
    return [await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(layer.process.pid), "--duration", str(int(seconds)),
        "--rate", "100", "--nonblocking", "--format", fmt,
        "--output", str(folder / f"{layer.name}.{suffix}"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        for layer in layers for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg"))]


# --- the two measurements -------------------------------------------------------------------


async def throughput(redis_url: str, database_url: str, *, seconds: float = 30.0,
                     warmup: float = 5.0, rate: float | None = None, backlog: int | None = None,
                     drain_s: float = 20.0, window_chunks: int = 10,
                     profile_dir: Path | None = None, log_dir: Path | None = None,
                     rename: Mapping[str, str] | None = None,
                     consumers: Mapping[str, int] | None = None,
                     fill: bool = False, fill_s: float = 180.0) -> dict[str, Any]:
    """Records/s from ingest to Silver committed, sustained over ``seconds`` after warm-up.

    The producer sends chunks of the config's ``batch_size`` (as the demo's does),
    ``window_chunks`` chunks per division and window (then a table_end), as fast as
    backpressure allows or at ``rate``. With ``fill``, the warm-up lasts at least ``warmup``
    s and until the backlogs between the layers are full (at most ``fill_s``): before that,
    an unthrottled producer sends faster than the layers commit, and its CPU goes to records
    the interval does not count. Not the default: the targets were set with the plain
    warm-up, and on a 2-core machine the backlogs take minutes to fill. The producer is
    stopped when the interval ends.
    """
    async with sandbox(redis_url, database_url, "e2e", rename) as box:
        run = Run(box, log_dir or box.folder / "logs")
        chunk = box.batch_size
        backlog = backlog or box.max_backlog
        ledger = Ledger(box, window_chunks * chunk)
        out = box.folder / "sent.json"
        samples: list[tuple[float, int]] = []
        try:
            await run.start(consumers)
            t0 = await run.start_producer(ProduceOptions(
                box.config_dir, box.divisions,
                (fill_s + seconds + 60 if fill else warmup + seconds), out,
                rate, chunk, window_chunks * chunk, backlog))
            await count_until(run, ledger, samples, t0 + warmup)
            full = (await fill_backlog(run, ledger, samples, backlog * len(box.divisions),
                                       t0 + fill_s) if fill else None)
            warmed = time.time() - t0
            begin = await count_until(run, ledger, samples, time.time())
            first = await run.snapshot()
            profilers = (await start_profilers(run.layers, profile_dir, seconds)
                         if profile_dir else [])
            end = await count_until(run, ledger, samples, begin[0] + seconds)
            last = await run.snapshot()
            backlog_at_end = await run.backlog()
            if fill:
                run.stop_producer()
            sent = await run.wait_producer(out)
            drained = await drain(run, ledger, samples, sent["sent"], drain_s)
            rss = run.peak_rss()
            for profiler in profilers:
                await profiler.wait()
        finally:
            codes = await run.stop_all()
        if any(codes):
            raise RuntimeError(f"layer exit codes {codes}")
        sent_times = [(c[4], c[3]) for c in sent["chunks"]]
        span = end[0] - begin[0]
        return {
            "kind": "throughput", "seconds": round(span, 1), "warmup_s": round(warmed, 1),
            "warmup_until_full": fill, "backlog_full_at_start": full,
            "divisions": box.divisions, "chunk": chunk, "backlog_entries": backlog,
            "rate_asked": rate, "sandbox": box.prefix, "window_rows": window_chunks * chunk,
            "consumers": run.consumers(),
            "records_per_s": round((end[1] - begin[1]) / span),
            "sent_per_s": round(sum(n for at, n in sent_times if begin[0] <= at <= end[0]) / span),
            "sent_total": sent["sent"], "behind_at_end": sent["sent"] - end[1],
            "producer_blocked": sent["blocked"], "streams_at_end": backlog_at_end,
            "drained_s": drained,
            "cpu_cores": cpu_use(first, last),
            "layers": layer_rates(run.layers, begin[0], end[0]),
            "rss_kb": {**rss, "producer": sent["rss_kb"]},
            "timeline": {
                "sent": per_second(sent_times, t0),
                "committed": [(round(at - t0, 2), n) for at, n in samples],
                **{name: per_second([(b["at"], b["processed"] + b["quarantined"])
                                     for b in events], t0)
                   for name, events in layer_events(run.layers).items()},
            },
            "profiled": profile_dir is not None,
        }


FILLED = ("ingest", "bronze")
"""The streams between the producer and Silver: each layer waits when the one after it has
``max_backlog_entries`` entries per division left to do (lag + pending)."""


FULL = 0.8
"""A backlog counts as full at this share of its limit: the producer waits on one division
at a time while the others drain a little, so the sum over divisions never reaches it."""


async def fill_backlog(run: Run, ledger: Ledger, samples: list[tuple[float, int]],
                       entries: int, until: float) -> dict[str, int]:
    """Count until the ingest and bronze streams each hold ``entries`` entries not yet done
    by their readers (then the producer and Bronze wait for room, and the producer sends no
    faster than Silver commits), or ``until``; the entries waiting then."""
    while True:
        run.check_alive()
        samples.append((time.time(), await ledger.count()))
        found = await run.backlog()
        waiting = {c: found.get(c, {}).get("lag", 0) + found.get(c, {}).get("pending", 0)
                   for c in FILLED}
        if min(waiting.values()) >= FULL * entries or time.time() >= until:
            return {**waiting, "of": entries}
        await asyncio.sleep(0.5)


async def drain(run: Run, ledger: Ledger, samples: list[tuple[float, int]], total: int,
                limit_s: float) -> float | None:
    """Count until every sent row is committed; seconds it took, None past ``limit_s``."""
    started = time.time()
    while time.time() < started + limit_s:
        run.check_alive()
        samples.append((time.time(), await ledger.count()))
        if samples[-1][1] >= total:
            return round(samples[-1][0] - started, 1)
        await asyncio.sleep(0.25)
    return None


async def latency(redis_url: str, database_url: str, *, rate: float, seconds: float = 20.0,
                  warmup: float = 2.0, poll_s: float = 0.02, drain_s: float = 30.0,
                  log_dir: Path | None = None) -> dict[str, Any]:
    """XADD-to-Silver-commit latency of every row at a fixed producer rate."""
    chunk = max(1, round(rate * 0.02))
    async with sandbox(redis_url, database_url, f"lat{int(rate)}") as box:
        run = Run(box, log_dir or box.folder / "logs")
        ledger = Ledger(box, window_rows=10**9)
        out = box.folder / "sent.json"
        try:
            await run.start()
            t0 = await run.start_producer(ProduceOptions(
                box.config_dir, box.divisions, warmup + seconds, out, rate, chunk,
                window_rows=10**9))
            await poll_until(run, ledger, t0 + warmup, poll_s)
            first = await run.snapshot()
            await poll_until(run, ledger, t0 + warmup + seconds, poll_s)
            last = await run.snapshot()
            sent = await run.wait_producer(out)
            await poll_until(run, ledger, time.time() + drain_s, poll_s, sent["sent"])
            rss = run.peak_rss()
        finally:
            codes = await run.stop_all()
        if any(codes):
            raise RuntimeError(f"layer exit codes {codes}")
        measured = [c for c in sent["chunks"] if c[4] >= t0 + warmup]
        lat = sorted(ledger.seen[(division, row)] - at
                     for division, _, first_row, n, at in measured
                     for row in range(first_row, first_row + n) if (division, row) in ledger.seen)
        rows = sum(c[3] for c in measured)
        return {
            "kind": "latency", "rate": rate, "seconds": seconds, "warmup_s": warmup,
            "chunk": chunk, "poll_s": poll_s, "rows": rows, "missing": rows - len(lat),
            "achieved_rate": round(rows / max(1e-9, measured[-1][4] - measured[0][4])),
            "p50_ms": _ms(lat, 0.50), "p95_ms": _ms(lat, 0.95), "p99_ms": _ms(lat, 0.99),
            "max_ms": _ms(lat, 1.0), "consumers": run.consumers(),
            "cpu_cores": cpu_use(first, last),
            "layers": layer_rates(run.layers, t0 + warmup, t0 + warmup + seconds),
            "rss_kb": {**rss, "producer": sent["rss_kb"]},
        }


async def poll_until(run: Run, ledger: Ledger, until: float, every: float,
                     rows: int | None = None) -> None:
    """Poll the ledger for new rows until ``until`` (or until ``rows`` rows were seen)."""
    while time.time() < until and (rows is None or len(ledger.seen) < rows):
        run.check_alive()
        await ledger.poll_rows("w0000")
        await asyncio.sleep(every)


def _ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)
