"""Repeated runs of a benchmark part, each stored with the machine's state beside it.

``repeat`` runs a part N times; every run goes to ``results/runs/<name>/<series>-<run>.json``
(one series per invocation) with its load average at start and end, commit, servers and
the command that made it, and the median run (by ``report.headline``) to
``results/<name>.json``. ``bench.readme`` builds the README's figures from these.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent


def repeat(name: str, part: Callable[[], dict[str, Any]], runs: int, results: Path = RESULTS,
           servers: dict[str, Any] | None = None, program: str = "python -m bench"
           ) -> list[dict[str, Any]]:
    """Run one part ``runs`` times with the machine's state recorded beside each run; store
    every run, and the median one as ``<name>.json``."""
    return interleave({name: part}, runs, results, servers, program)[name]


def interleave(parts: dict[str, Callable[[], dict[str, Any]]], runs: int,
               results: Path = RESULTS, servers: dict[str, Any] | None = None,
               program: str = "python -m bench") -> dict[str, list[dict[str, Any]]]:
    """Run each part once per round, ``runs`` rounds (a machine whose speed drifts then
    drifts under all of them alike); store every run, one series per part, and each part's
    median run as ``<name>.json``."""
    series = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    done: dict[str, list[dict[str, Any]]] = {name: [] for name in parts}
    for run in range(1, runs + 1):
        for name, part in parts.items():
            folder = results / "runs" / name
            folder.mkdir(parents=True, exist_ok=True)
            load_start, cpu = os.getloadavg(), cpu_reference()
            started = dt.datetime.now(dt.UTC)
            result = part()
            result["machine"] = {
                "cores": os.cpu_count(), "date": started.isoformat(timespec="seconds"),
                "load_start": [round(x, 2) for x in load_start],
                "load_end": [round(x, 2) for x in os.getloadavg()],
                "python": sys.version.split()[0], **code_version(), "servers": servers,
                "series": series, "run": run, "runs": runs, "command": command(program),
                **cpu,
            }
            (folder / f"{series}-{run}.json").write_text(json.dumps(result, indent=1))
            print(f"run {run}/{runs} " + report.summary_line(name, result), flush=True)
            done[name].append(result)
    for name, series_runs in done.items():
        (results / f"{name}.json").write_text(json.dumps(median_run(series_runs), indent=1))
    return done


LOOP = 5_000_000
"""Additions of the reference loop (``cpu_reference``)."""
ALLOC = 300_000
"""Dicts of the allocation reference (``cpu_reference``)."""


def cpu_reference() -> dict[str, Any]:
    """The CPU's model and two reference times of one core (best of 3, before each run: a
    shared machine's speed drifts within minutes): ``cpu_loop_s``, a pure-Python loop (the
    interpreter alone), and ``cpu_alloc_s``, building and dropping small dicts of text (what
    the layers do per record: allocation, the garbage collector, memory). Machines sold as the
    same size differ: the same code ran about three times slower per record on one 2-core
    machine of this workplace than on another, while the plain loop differed far less. Figures
    from machines whose reference times differ are not comparable."""
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {"cpu_model": model, "cpu_loop_s": _best_of(3, _loop),
            "cpu_alloc_s": _best_of(3, _alloc)}


def _best_of(times: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return round(best, 3)


def _loop() -> int:
    total = 0
    for i in range(LOOP):
        total += i
    return total


def _alloc() -> int:
    rows = [{"key": str(i), "value": f"{i}.50", "at": "2024-01-01"} for i in range(ALLOC)]
    return sum(len(r["key"]) for r in rows)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose headline figure is the (lower) median of the series."""
    ranked = sorted(runs, key=report.headline)
    return ranked[(len(ranked) - 1) // 2]


def command(program: str) -> str:
    """How this invocation was started, as one would type it again."""
    return shlex.join([*program.split(), *sys.argv[1:]])


def code_version() -> dict[str, Any]:
    """The commit measured, and the production files that differ from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True,
                              text=True, check=False)
        return done.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()
               if line[3:].split("/")[0] in ("assay", "contracts", "streams", "processors",
                                             "db", "config")]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": changed}


