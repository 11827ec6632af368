"""The chaos suite: the demo, run as a user runs it, while faults are injected from outside.

Each scenario runs ``assay demo --json`` in a subprocess on embedded servers of its own data
folder (never the caller's servers: they are killed), while a killer SIGKILLs random layer
processes every few seconds, kills -9 the embedded PostgreSQL or Valkey, or SIGSTOPs a
layer. The faults begin once the first records have landed in Bronze, so they hit the
pipeline while it works, not before the data arrives. The demo supervises its layers and
its servers; the suite only breaks things and watches. One row per scenario: fault, count,
wall time, time to recover (the slowest recovery of the run), records in / applied /
quarantined / dead, windows complete, and whether the KPI rows equal those of the clean
run.

Time to recover: for a killed layer, from the SIGKILL until its restarted process logs
``layer_started`` (it then takes its own pending entries at once); for a killed server,
from the kill until the server answers on its port again and the consumer groups read
further; for a stopped layer, from SIGCONT until the groups read further.

    python -m tests.chaos            # the long form (make chaos): the whole demo
    python -m tests.chaos --short    # the short form make test runs: six windows, all
                                     # faults in one run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from assay.db.ident import qualified
from assay.services.postgres import DATABASE

PREFIX = "chaos"


@dataclass(frozen=True)
class Scenario:
    """What the killer does during one demo run; times count from the first records landed
    in Bronze."""

    name: str
    kill_layers_every_s: float | None = None
    kill_postgres_at_s: tuple[float, ...] = ()
    kill_valkey_at_s: tuple[float, ...] = ()
    stop_layer_for_s: float | None = None
    appendfsync: str = "always"
    lose_aof_tail_bytes: int = 0
    """With ``everysec``: what a machine crash loses (the writes of the last second, not yet
    on disk), made real by cutting the append-only file's tail after the kill -9."""


@dataclass
class Outcome:
    """One printed row."""

    scenario: Scenario
    faults: int = 0
    wall_s: float = 0.0
    recover_s: list[float] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    code: int = 0
    equal: bool | None = None
    lost_bytes: int = 0
    landed_s: float | None = None
    """When the first records landed in Bronze (and the faults began), from the demo's start."""

    def cells(self) -> list[str]:
        s = self.summary
        recover = f"{max(self.recover_s):.1f}" if self.recover_s else "-"
        equal = "-" if self.equal is None else ("yes" if self.equal else "NO")
        lost = (f"{self.lost_bytes / 1e6:.1f} MB of AOF, "
                f"{s.get('windows_resent', 0)} windows resent") if self.lost_bytes else "-"
        return [self.scenario.name, str(self.faults), f"{self.wall_s:.1f}", recover, lost,
                f"{s.get('records_in', '?'):,}" if s else "?",
                f"{s.get('records_landed', '?'):,}" if s else "?",
                str(s.get("records_quarantined", "?")), str(s.get("records_dead_lettered", "?")),
                str(s.get("windows_completed", "?")), equal]


HEADERS = ["fault", "count", "wall s", "recover s", "lost", "in", "applied", "quarantined", "dead",
           "windows", "KPIs equal"]


def comparable(row: dict[str, Any]) -> tuple[Any, ...]:
    tonnes = Decimal(str(row["shipped_tonnes"])).quantize(Decimal("0.001"))
    pct = row["attainment_pct"]
    return (row["division"], row["category"], row["year"], row["shipped_qty"], tonnes,
            row["annual_goal"], row["prior_year_shipped"],
            None if pct is None else Decimal(str(pct)).quantize(Decimal("0.1")))


class Killer:
    """Breaks the demo process tree from outside, and times the recoveries."""

    def __init__(self, demo: asyncio.subprocess.Process, data_dir: Path, rng: random.Random,
                 lose_aof_tail_bytes: int = 0) -> None:
        self.demo = demo
        self.lose_aof_tail_bytes = lose_aof_tail_bytes
        self.lost_bytes = 0
        self.data_dir = data_dir
        self.rng = rng
        self.faults = 0
        self.recoveries: list[float] = []
        self.landed_at: float | None = None

    def layers(self) -> dict[str, int]:
        """The demo's layer processes: slot name → pid."""
        found = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.demo.pid and b"run" in argv and b"--name" in argv:
                found[argv[argv.index(b"--name") + 1].decode()] = int(proc.name)
        return found

    def started(self, slot: str) -> int:
        try:
            return (self.data_dir / "logs" / f"{slot}.log").read_text().count('"layer_started"')
        except OSError:
            return 0

    async def until(self, check: Callable[[], Any], timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.demo.returncode is None:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return True
            await asyncio.sleep(0.05)
        return False

    async def kill_layer(self) -> None:
        layers = self.layers()
        if not layers:
            return
        slot = self.rng.choice(sorted(layers))
        before = self.started(slot)
        began = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(layers[slot], signal.SIGKILL)
        self.faults += 1
        if await self.until(lambda: self.started(slot) > before):
            self.recoveries.append(time.monotonic() - began)

    async def stop_layer(self, seconds: float) -> None:
        layers = self.layers()
        # A layer of one consumer: nobody else can take its entries, so they wait for it
        # (past claim_idle_ms). A stopped one of several (silver.1 of two) is covered by the
        # others once its heartbeat expires, and the demo would end before its SIGCONT.
        slot = self.rng.choice(sorted(s for s in layers if s != "monitor" and "." not in s))
        os.kill(layers[slot], signal.SIGSTOP)
        self.faults += 1
        await asyncio.sleep(seconds)
        read = await self.progress()
        os.kill(layers[slot], signal.SIGCONT)
        began = time.monotonic()
        if await self.until(self._advanced(read)):
            self.recoveries.append(time.monotonic() - began)

    async def kill_server(self, name: str) -> None:
        pidfile = (self.data_dir / "redis" / "valkey.pid" if name == "redis"
                   else self.data_dir / "postgres" / "data" / "postmaster.pid")
        pid = int(pidfile.read_text().split()[0])
        read = await self.progress()
        began = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        self.faults += 1
        if name == "redis" and self.lose_aof_tail_bytes:
            self._cut_aof_tail()
        answers = self._redis_answers if name == "redis" else self._postgres_answers
        if await self.until(answers) and await self.until(self._advanced(read)):
            self.recoveries.append(time.monotonic() - began)

    def _cut_aof_tail(self) -> None:
        """Cut the tail of the incremental append-only file, before the supervisor restarts
        the server (it polls twice a second): valkey loads the rest (aof-load-truncated)."""
        folder = self.data_dir / "redis" / "appendonlydir"
        manifest = (folder / "appendonly.aof.manifest").read_text().split("\n")
        (incr,) = [line.split()[1] for line in manifest if line.endswith("type i")]
        path = folder / incr
        size = path.stat().st_size
        cut = min(self.lose_aof_tail_bytes, size)
        os.truncate(path, size - cut)
        self.lost_bytes += cut

    def _advanced(self, read: int) -> Callable[[], Any]:
        async def check() -> bool:
            return await self.progress() > read
        return check

    def _port(self, name: str) -> int:
        return int((self.data_dir / name / "port").read_text())

    async def _redis_answers(self) -> bool:
        client = aioredis.from_url(f"redis://127.0.0.1:{self._port('redis')}/0")
        try:
            return bool(await client.ping())
        except Exception:
            return False
        finally:
            await client.aclose()

    async def _postgres_answers(self) -> bool:
        try:
            conn = await asyncpg.connect(host="127.0.0.1", port=self._port("postgres"),
                                         user="postgres", database="postgres", timeout=1)
        except Exception:
            return False
        await conn.close()
        return True

    async def landed(self) -> bool:
        """Whether any Bronze table of the demo holds a record (committed there)."""
        try:
            conn = await asyncpg.connect(host="127.0.0.1", port=self._port("postgres"),
                                         user="postgres", database=DATABASE, timeout=1)
        except Exception:
            return False
        try:
            tables = await conn.fetch(
                "SELECT table_schema, table_name FROM information_schema.tables"
                " WHERE table_name LIKE 'bronze\\_%'")
            for t in tables:
                if await conn.fetchval(
                        f"SELECT EXISTS (SELECT 1 FROM {qualified(*t)})"):
                    return True
            return False
        finally:
            await conn.close()

    async def progress(self) -> int:
        """Entries read by every consumer group of the demo (-1 while Redis is down)."""
        try:
            client = aioredis.from_url(f"redis://127.0.0.1:{self._port('redis')}/0")
        except (OSError, ValueError):
            return -1
        try:
            total = 0
            async for key in client.scan_iter(match=f"{PREFIX}:*", _type="STREAM"):
                for group in await client.xinfo_groups(key):
                    total += int(group.get("entries-read") or 0)
            return total
        except Exception:
            return -1
        finally:
            await client.aclose()

    async def run(self, scenario: Scenario) -> None:
        """Wait for the layers and for the first records in Bronze, then break things."""
        await self.until(lambda: len(self.layers()) >= 5, timeout=300)
        if not await self.until(self.landed, timeout=300):
            return
        started = self.landed_at = time.monotonic()
        tasks = []
        if scenario.kill_layers_every_s is not None:
            tasks.append(self._every(scenario.kill_layers_every_s, self.kill_layer))
        for at in scenario.kill_postgres_at_s:
            tasks.append(self._at(started + at, lambda: self.kill_server("postgres")))
        for at in scenario.kill_valkey_at_s:
            tasks.append(self._at(started + at, lambda: self.kill_server("redis")))
        if scenario.stop_layer_for_s is not None:
            tasks.append(self.stop_layer(scenario.stop_layer_for_s))
        await asyncio.gather(*tasks)

    async def _every(self, seconds: float, action: Callable[[], Any]) -> None:
        while self.demo.returncode is None:
            await asyncio.sleep(seconds * (0.5 + self.rng.random()))
            await action()

    async def _at(self, when: float, action: Callable[[], Any]) -> None:
        await asyncio.sleep(max(0.0, when - time.monotonic()))
        if self.demo.returncode is None:
            await action()


async def run_scenario(scenario: Scenario, data_dir: Path, window_args: list[str],
                       timeout_s: float, seed: int) -> Outcome:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(ASSAY_DATA_DIR=str(data_dir), ASSAY_KEY_PREFIX=PREFIX,
               ASSAY_REDIS_APPENDFSYNC=scenario.appendfsync, ASSAY_LOG_FORMAT="json")
    outcome = Outcome(scenario)
    started = time.monotonic()
    with (data_dir / f"demo-{scenario.name.replace(' ', '_')}.log").open("ab") as err:
        demo = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "assay", "demo", "--json", "--timeout", str(timeout_s),
            *window_args, env=env, stdout=asyncio.subprocess.PIPE, stderr=err)
        killer = Killer(demo, data_dir, random.Random(seed), scenario.lose_aof_tail_bytes)
        chaos = asyncio.create_task(killer.run(scenario))
        out, _ = await demo.communicate()
        chaos.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await chaos
    outcome.wall_s = time.monotonic() - started
    outcome.code = demo.returncode or 0
    outcome.faults = killer.faults
    outcome.recover_s = killer.recoveries
    outcome.lost_bytes = killer.lost_bytes
    if killer.landed_at is not None:
        outcome.landed_s = killer.landed_at - started
    for line in out.decode().splitlines():
        data = json.loads(line)
        if "summary" in data:
            outcome.summary = data["summary"]
        else:
            outcome.rows.append(comparable(data))
    outcome.rows.sort(key=repr)
    return outcome


def table(outcomes: list[Outcome]) -> str:
    cells = [o.cells() for o in outcomes]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
              for row in cells]
    return "\n".join(lines)


SHORT = [
    Scenario("SIGKILL layers + kill -9 PostgreSQL + kill -9 Valkey (always)",
             kill_layers_every_s=1.0, kill_postgres_at_s=(0.5,), kill_valkey_at_s=(2.0,)),
]
"""make test's form: every fault in one run of six windows, beside the clean run. Six windows
take a few seconds from the first records in Bronze to the last KPI, so the faults come early;
the outage of PostgreSQL holds the rest of the work back until Valkey's turn."""
LONG = [
    Scenario("SIGKILL layers", kill_layers_every_s=3.0),
    Scenario("kill -9 PostgreSQL", kill_postgres_at_s=(5.0, 12.0)),
    Scenario("kill -9 Valkey (appendfsync always)", kill_valkey_at_s=(6.0,)),
    Scenario("kill -9 Valkey (appendfsync everysec), last second lost",
             kill_valkey_at_s=(6.0,), appendfsync="everysec", lose_aof_tail_bytes=2_000_000),
    Scenario("SIGSTOP a layer 65 s (> claim_idle_ms)", stop_layer_for_s=65.0),
]


async def suite(short: bool, data_dir: Path, seed: int, out: Any = sys.stdout,
                only: str | None = None) -> list[Outcome]:
    data_dir.mkdir(parents=True, exist_ok=True)
    window_args = ["--first", "2012-01", "--last", "2012-06"] if short else []
    timeout_s = 300.0 if short else 900.0
    clean = await run_scenario(Scenario("none (clean run)"), data_dir, window_args, timeout_s,
                               seed)
    outcomes = [clean]
    scenarios = SHORT if short else LONG
    if only:
        scenarios = [s for s in LONG + SHORT if only in s.name]
    for scenario in scenarios:
        outcome = await run_scenario(scenario, data_dir, window_args, timeout_s, seed)
        outcome.equal = outcome.code == 0 and outcome.rows == clean.rows
        outcomes.append(outcome)
        landed = "-" if outcome.landed_s is None else f"{outcome.landed_s:.1f}"
        out.write(f"  {scenario.name}: done in {outcome.wall_s:.1f} s, faults from"
                  f" {landed} s (first records in Bronze)\n")
        out.flush()
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--short", action="store_true", help="six windows, three faults")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--only", default=None, help="only the scenarios naming this text")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="assay-chaos-") as scratch:
        data_dir = args.data_dir or Path(scratch) / "data"
        outcomes = asyncio.run(suite(args.short, data_dir, args.seed, only=args.only))
    print(table(outcomes))
    load = os.getloadavg()
    print(f"(python -m tests.chaos{' --short' if args.short else ''}, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
    ok = all(o.code == 0 and o.equal is not False
             and o.summary.get("records_dead_lettered") == 0 for o in outcomes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
