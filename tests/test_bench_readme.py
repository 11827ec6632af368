"""`python -m bench report` regenerates README's Performance block from bench/results/: medians
of the newest series with min–max, legacy single results marked, nothing else of the README
touched. A small results folder made here; no servers."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench import readme


def machine(series: str | None, run: int, runs: int, load: float) -> dict[str, Any]:
    m: dict[str, Any] = {"cores": 2, "date": "2026-12-04T10:00:00+00:00",
                         "load_start": [load, 0, 0], "load_end": [load + 1, 0, 0],
                         "commit": "abc1234", "uncommitted": []}
    if series:
        m |= {"series": series, "run": run, "runs": runs,
              "command": "python -m bench e2e --rate 0 --runs 3", "cpu_loop_s": 0.42,
              "cpu_alloc_s": 0.3}
    return m


def throughput(rate: int, series: str | None, run: int, runs: int) -> dict[str, Any]:
    return {"kind": "throughput", "rate_asked": None, "records_per_s": rate,
            "cpu_cores": {"bronze": 0.2, "silver": 0.4, "barrier": 0.03, "producer": 0.1,
                          "postgres for bronze": 0.1, "postgres for silver": 0.2,
                          "redis server (all its clients)": 0.04},
            "rss_kb": {"bronze": 80_000, "silver": 90_000, "producer": None},
            "machine": machine(series, run, runs, 1.5 + run)}


def store(folder: Path, name: str, result: dict[str, Any]) -> None:
    m = result["machine"]
    if "series" in m:
        runs = folder / "runs" / name
        runs.mkdir(parents=True, exist_ok=True)
        (runs / f"{m['series']}-{m['run']}.json").write_text(json.dumps(result))
    else:
        (folder / f"{name}.json").write_text(json.dumps(result))


def results(tmp_path: Path) -> tuple[Path, list[int]]:
    folder = tmp_path / "results"
    newest = [21_000, 19_500, 23_250]
    for run, rate in enumerate([9_000, 8_000, 7_000], 1):
        store(folder, "e2e-unthrottled", throughput(rate, "20261201T000000Z", run, 3))
    for run, rate in enumerate(newest, 1):
        store(folder, "e2e-unthrottled", throughput(rate, "20261204T100000Z", run, 3))
    store(folder, "latency-5000", {"kind": "latency", "rate": 5000.0, "p50_ms": 20.5,
                                   "p95_ms": 40.0, "p99_ms": 51.5,
                                   "machine": machine(None, 1, 1, 1.9)})
    return folder, newest


README = "# x\n\ntext before\n\n{begin}\nstale figures\n{end}\n\ntext after\n"


def test_the_block_shows_the_median_and_range_of_the_newest_series(tmp_path: Path) -> None:
    folder, newest = results(tmp_path)
    path = tmp_path / "README.md"
    path.write_text(README.format(begin=readme.BEGIN, end=readme.END))

    assert readme.update(path, folder)

    text = path.read_text()
    assert text.startswith("# x\n\ntext before\n\n" + readme.BEGIN)
    assert text.endswith(readme.END + "\n\ntext after\n")
    assert "stale figures" not in text
    median = f"{statistics.median(newest):,.0f}"
    assert f"{median} ({min(newest):,}–{max(newest):,}) records/s" in text
    assert "3 runs, CPU loop 0.42 s, alloc 0.30 s, load 2.50 → 5.50" in text
    assert "`python -m bench e2e --rate 0 --runs 3`" in text
    assert "9,000" not in text  # an older series is not mixed in


def test_a_result_stored_before_runs_were_kept_says_so(tmp_path: Path) -> None:
    folder, _ = results(tmp_path)
    line = next(x for x in readme.block(folder).splitlines() if "5,000 records/s" in x)
    assert "p99 51.5 ms" in line
    assert "1 run (stored before runs were kept), CPU loop not recorded" in line
    assert "command not stored" in line


def test_regenerating_twice_changes_nothing_and_a_readme_without_markers_is_left(
        tmp_path: Path) -> None:
    folder, _ = results(tmp_path)
    path = tmp_path / "README.md"
    path.write_text(README.format(begin=readme.BEGIN, end=readme.END))
    readme.update(path, folder)
    once = path.read_text()
    readme.update(path, folder)
    assert path.read_text() == once

    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not readme.update(plain, folder)
    assert plain.read_text() == "no markers\n"


def test_the_committed_readme_block_is_what_bench_report_generates() -> None:
    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    assert readme.block(root / "bench" / "results") in text


def test_micro_benchmark_runs_become_rows_and_missing_ones_are_named(tmp_path: Path) -> None:
    folder, _ = results(tmp_path)
    silver = [30_000, 36_000, 33_000]
    for run, rate in enumerate(silver, 1):
        store(folder, "layers", {"kind": "layers", "records": 100_000,
                                 "validation": "compiled", "silver_rows": 99_000,
                                 "records_per_s": {"producer": 90_000, "bronze": 60_000,
                                                   "silver": rate},
                                 "machine": machine("20261204T110000Z", run, 3, 1.0)})
    text = readme.block(folder)

    line = next(x for x in text.splitlines() if x.startswith("| silver, one consumer"))
    assert f"{statistics.median(silver):,.0f} ({min(silver):,}–{max(silver):,})" in line
    assert "compiled validation" in line
    forwarding = next(x for x in text.splitlines() if x.startswith("| forwarding"))
    assert "not stored in `bench/results/`" in forwarding


def test_layers_rows_show_process_and_postgresql_cpu_per_record_when_stored(
        tmp_path: Path) -> None:
    folder, _ = results(tmp_path)
    for run, (py, pg) in enumerate([(13.0, 4.4), (14.0, 4.6), (15.0, 4.5)], 1):
        store(folder, "layers", {"kind": "layers", "records": 100_000,
                                 "validation": "compiled", "silver_rows": 100_000,
                                 "records_per_s": {"producer": 90_000, "bronze": 60_000,
                                                   "silver": 30_000 + run},
                                 "cpu_us_per_record": {"producer": 0.8, "bronze": 7.0,
                                                       "silver": py},
                                 "postgres_cpu_us_per_record": {"bronze": 2.2, "silver": pg},
                                 "machine": machine("20261205T090000Z", run, 3, 1.0)})
    line = next(x for x in readme.block(folder).splitlines()
                if x.startswith("| silver, one consumer"))
    assert "CPU µs/record: process 14.0 (13.0–15.0), PostgreSQL 4.5 (4.4–4.6)" in line


def test_the_gold_curve_row_shows_each_sizes_median_and_range_and_the_ratio_of_medians(
        tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    sizes = {1_000_000: [0.30, 0.20, 0.25], 16_000_000: [0.33, 0.45, 0.30]}
    parts = {"sync": 0.1, "kpi": 0.05, "link": 0.01, "other": 0.0}
    points = [{"lines": n, "build": 10.0, "whole": statistics.median(runs),
               "whole_min": min(runs), "whole_max": max(runs), "parts": parts,
               "windows": [{"whole": w, "parts": parts, "lines": 10_000, "load": 1.0}
                           for w in runs]} for n, runs in sizes.items()]
    (folder / "gold-curve.json").write_text(json.dumps(
        {"window_lines": 10_000, "windows": 3, "load_before": [1.5, 0, 0],
         "load_after": [2.5, 0, 0], "server": "PostgreSQL 15", "date": "2026-12-05",
         "commit": "abc1234", "command": "python -m bench.gold --lines 1000000 16000000",
         "points": points}))

    line = next(x for x in readme.block(folder).splitlines() if x.startswith("| Gold: a "))

    assert "1M / 16M lines" in line
    assert "0.25 (0.20–0.30) / 0.33 (0.30–0.45) s" in line
    assert "1.32× of the medians" in line
    assert "3 windows per size, median (min–max), load 1.50 → 2.50" in line
    assert "commit abc1234" in line and "`python -m bench.gold --lines 1000000 16000000`" in line


def test_run_options_count_before_and_after_the_parts_name(tmp_path: Path) -> None:
    from bench.__main__ import RESULTS, parse

    before = parse(["--runs", "1", "--results", str(tmp_path), "e2e", "--rate", "0"])
    after = parse(["e2e", "--runs", "2"])
    default = parse(["peer"])

    assert (before.runs, before.results) == (1, tmp_path)
    assert (after.runs, after.results) == (2, RESULTS)
    assert (default.runs, default.results) == (3, RESULTS)
