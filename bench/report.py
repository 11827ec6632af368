"""The benchmark report: bench/results/*.json rendered as e2e.md and e2e.png.

``render`` reads whatever parts are there (e2e-*.json, latency-*.json, peer.json, and
py-spy stacks in profiles/<run>/), so re-running one part refreshes its lines only.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

TARGET_RATE = 35_000
"""Records/s end to end with the producer unthrottled (issue 16)."""
TARGET_PEER_RATIO = 1.75
"""End to end unthrottled over dlt's best dict-row ``csv`` load."""
TARGET_CPU_US = 40.0
"""CPU µs per record, all-in: layers, their PostgreSQL backends, producer, Redis."""
TARGET_HOLD = 0.98
"""A paced run holds its pace when it commits this share of the rate asked and drains."""
TARGET_P99_MS = 100.0
TARGET_P99_AT = 10_000
TARGET_RSS_MB = 250
LAYERS = ("bronze", "silver", "barrier")

Results = dict[str, dict[str, Any]]

CLUSTER_COMPARISON = ("e2e-single-unthrottled", "e2e-cluster-unthrottled")
"""``--cluster`` runs: one valkey-server beside a local cluster, for their ratio (issue 13),
not for the targets, which are measured on the servers the other runs use."""


def summary_line(name: str, result: dict[str, Any]) -> str:
    if result["kind"].startswith("http-"):
        shown = {k: v for k, v in result.items() if k not in ("kind", "machine")}
        return f"{name}: {json.dumps(shown)}"
    if result["kind"] == "throughput":
        return (f"{name}: {result['records_per_s']:,} records/s ingest to Silver committed "
                f"(producer {result['sent_per_s']:,}/s) over {result['seconds']} s")
    if result["kind"] == "latency":
        return (f"{name}: at {result['achieved_rate']:,}/s p50 {result['p50_ms']} ms, "
                f"p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms")
    if result["kind"] == "layers":
        return f"{name}: " + ", ".join(f"{k} {n:,}/s" for k, n in result["records_per_s"].items())
    if result["kind"] in ("forwarding", "validation"):
        return f"{name}: " + ", ".join(f"{x['method']} {x['records_per_s']:,}/s"
                                       for x in result["methods"])
    best = ", ".join(f"{fmt} {n:,}/s" for fmt, n in best_loads(result).items())
    return f"{name}: {result['peer']} merge of {result['records']:,} records, best: {best}"


def headline(result: dict[str, Any]) -> float:
    """The figure a run is ranked by: records/s (Silver's alone in ``layers``, batched
    forwarding's, compiled validation's per CPU second), p99 latency, or the best dlt csv
    load."""
    if result["kind"] == "throughput":
        return float(result["records_per_s"])
    if result["kind"] == "latency":
        return float(result["p99_ms"] or 0.0)
    if result["kind"] == "layers":
        return float(result["records_per_s"]["silver"])
    if result["kind"] == "forwarding":
        return float(result["methods"][-1]["records_per_s"])
    if result["kind"] == "validation":
        return float(result["methods"][-1]["records_per_cpu_s"])
    if result["kind"] == "http-throughput":
        return float(min(x["of_xadd"] for x in result["results"] if x["path"] != "xadd"))
    if result["kind"] == "http-upload":
        return float(result["serve_peak_rss_mb"])
    if result["kind"] == "http-page":
        return float(result["render_ms_median"])
    best = best_loads(result)
    return float(best.get("csv", max(best.values(), default=0)))


def best_loads(peer: dict[str, Any]) -> dict[str, int]:
    """The best records/s per dlt configuration (loads stored before formats: insert_values)."""
    best: dict[str, int] = {}
    for x in peer["loads"]:
        fmt = x.get("format", "insert_values")
        best[fmt] = max(best.get(fmt, 0), x["records_per_s"])
    return best


KINDS = ("throughput", "latency", "peer")


def render(folder: Path) -> None:
    found = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    results = {k: r for k, r in found.items() if isinstance(r, dict) and r.get("kind") in KINDS}
    (folder / "e2e.md").write_text(markdown(results, folder))
    chart(results, folder / "e2e.png")


def throughput_runs(results: Results) -> Results:
    """The e2e runs, paced ones by rate first, the unthrottled one last (not the points of
    the Silver scaling curve, which have a section of their own)."""
    runs = {k: r for k, r in results.items()
            if r["kind"] == "throughput" and "-silver" not in k}
    return dict(sorted(runs.items(), key=lambda kv: kv[1].get("rate_asked") or float("inf")))


def latency_runs(results: Results) -> list[dict[str, Any]]:
    return sorted((r for r in results.values() if r["kind"] == "latency"),
                  key=lambda r: r["rate"])


def _mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.0f}"


def _us(cores: float, per_s: int) -> str:
    return f"{cores / per_s * 1e6:,.1f}" if per_s else "-"


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _pace(r: dict[str, Any]) -> str:
    return (f"producer at {r['rate_asked']:,.0f}/s" if r.get("rate_asked")
            else "producer unthrottled")


def _machine(result: dict[str, Any]) -> str:
    m = result["machine"]
    dirty = f" + uncommitted {', '.join(m['uncommitted'])}" if m.get("uncommitted") else ""
    servers = ""
    if m.get("servers"):
        sv = m["servers"]
        pg = sv["postgres"]
        servers = (f", {'embedded ' if sv['embedded'] else ''}PostgreSQL {pg['server_version']}"
                   f" (fsync {pg['fsync']}, synchronous_commit {pg['synchronous_commit']}) and "
                   f"{sv['redis']} (AOF {'on' if sv['redis_aof'] else 'off'})")
    runs = (f", run {m['run']} of {m['runs']} (the median one; all in runs/)"
            if m.get("runs", 1) > 1 else "")
    return (f"{m['date']}{runs}, commit {m.get('commit', '?')}{dirty}, {m['cores']} cores, "
            f"load average {' '.join(map(str, m['load_start']))} at start, "
            f"{' '.join(map(str, m['load_end']))} at end{servers}")


def markdown(results: Results, folder: Path) -> str:
    lines = ["# assay end to end", "",
             "Every layer (bronze, silver, barrier) runs as its own OS process "
             "(`python -m assay run LAYER`); a producer process sends `erp_order_line` rows "
             "(the demo's shape and validation rules; 1 in 100 breaks `OrderQty min 1` and is "
             "quarantined) round-robin to the config's divisions, on the same machine. "
             "\"Silver committed\" is a record in the ledger `_rows` (applied or quarantined). "
             "`python -m bench` regenerates this file and `e2e.png`.", ""]
    runs = throughput_runs(results)
    lat = latency_runs(results)
    peer = results.get("peer")
    measured = {k: r for k, r in runs.items() if k not in CLUSTER_COMPARISON}
    lines += targets(measured, lat, peer)
    for name, run in runs.items():
        lines += throughput_section(run)
        lines += profile_section(folder / "profiles" / name)
    lines += scaling_section(results, folder)
    if lat:
        lines += latency_section(lat)
    if peer:
        lines += peer_section(peer, measured)
    return "\n".join(lines) + "\n"


def targets(runs: Results, lat: list[dict[str, Any]], peer: dict[str, Any] | None
            ) -> list[str]:
    lines = ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    for r in runs.values():
        rate = r["records_per_s"]
        if r.get("rate_asked"):
            held = rate >= TARGET_HOLD * r["rate_asked"] and r["drained_s"] is not None
            lines.append(f"| holds {r['rate_asked']:,.0f} records/s, drained when the producer "
                         f"stops | {rate:,}, drained {_drained(r)} | {_met(held)} |")
            continue
        lines.append(f"| ≥ {TARGET_RATE:,} records/s end to end, producer unthrottled | "
                     f"{rate:,} | {_met(rate >= TARGET_RATE)} |")
        cpu = cpu_us_per_record(r).get("all")
        if cpu is not None:
            lines.append(f"| ≤ {TARGET_CPU_US:.0f} µs CPU per record, all-in | {cpu:,.1f} µs "
                         f"| {_met(cpu <= TARGET_CPU_US)} |")
        csv = best_loads(peer).get("csv") if peer else None
        if csv:
            ratio = rate / csv
            met = _met(ratio >= TARGET_PEER_RATIO)
            lines.append(f"| ≥ {TARGET_PEER_RATIO}× dlt's best dict-row `csv` load | "
                         f"{ratio:.2f}× ({rate:,} / {csv:,}) | {met} |")
    at = next((r for r in lat if r["rate"] == TARGET_P99_AT), None)
    if at and at["p99_ms"] is not None:
        lines.append(f"| p99 ≤ {TARGET_P99_MS:.0f} ms at {TARGET_P99_AT:,} records/s | "
                     f"{at['p99_ms']:,.0f} ms | {_met(at['p99_ms'] <= TARGET_P99_MS)} |")
    else:
        lines.append(f"| p99 ≤ {TARGET_P99_MS:.0f} ms at {TARGET_P99_AT:,} records/s | "
                     "not measured | |")
    for label, group in (*((_pace(r), [r]) for r in runs.values()),
                         ("latency runs", lat)):
        rss = [kb for r in group for name, kb in r["rss_kb"].items()
               if name != "producer" and kb is not None]
        if rss:
            peak = max(rss) / 1024
            lines.append(f"| < {TARGET_RSS_MB} MB RSS per consumer process | {peak:,.0f} MB, "
                         f"largest, {label} | {_met(peak < TARGET_RSS_MB)} |")
    return [*lines, ""]


def _drained(r: dict[str, Any]) -> str:
    return "never" if r["drained_s"] is None else f"in {r['drained_s']} s"


def cpu_us_per_record(run: dict[str, Any]) -> dict[str, float]:
    """CPU µs per committed record: each layer (process + its PostgreSQL backends), the
    producer, Redis, and all of them together."""
    cores, rate = run["cpu_cores"], run["records_per_s"]
    if not rate:
        return {}
    per = {name: ((cores.get(name) or 0.0) + (cores.get(f"postgres for {name}") or 0.0))
           / rate * 1e6 for name in LAYERS}
    per["producer"] = (cores.get("producer") or 0.0) / rate * 1e6
    per["redis"] = (cores.get("redis server (all its clients)") or 0.0) / rate * 1e6
    per["all"] = sum(per.values())
    return per


def _filled(r: dict[str, Any]) -> str:
    """How the warm-up of an unthrottled run ended, when it waited for a full backlog."""
    full = r.get("backlog_full_at_start")
    if not r.get("warmup_until_full") or not full:
        return ""
    waiting = ", ".join(f"{full[c]:,} {c}" for c in ("ingest", "bronze") if c in full)
    return (f" (until the backlogs between the layers were full, so that the producer sends no "
            f"faster than Silver commits: {waiting} entries waiting, of {full['of']:,} each)")


def throughput_section(r: dict[str, Any]) -> list[str]:
    pace = (f"{r['rate_asked']:,.0f} records/s" if r.get("rate_asked")
            else "as fast as the Producer API's backpressure lets it")
    drained = "not drained" if r["drained_s"] is None else r["drained_s"]
    lines = [
        f"## Throughput, ingest to Silver committed: {_pace(r)}", "",
        f"Measured {_machine(r)}.", "",
        f"The producer sends {pace} (chunks of {r['chunk']:,} records, the config's "
        f"`batch_size`; backpressure at {r['backlog_entries']:,} ingest entries per division) to "
        f"{len(r['divisions'])} divisions for {r['warmup_s']:.0f} s of warm-up{_filled(r)} and "
        f"{r['seconds']:.0f} s measured; each division's window ends with a `table_end` "
        f"every {r.get('window_rows', 0):,} records.", "",
        "| measure | value |", "|---|---:|",
        f"| **records/s committed in Silver, sustained over {r['seconds']:.0f} s** | "
        f"**{r['records_per_s']:,}** |",
        f"| records/s sent by the producer, same interval | {r['sent_per_s']:,} |",
        f"| records sent in all | {r['sent_total']:,} |",
        f"| not yet in Silver when the interval ended | {r['behind_at_end']:,} |",
        f"| seconds to drain after the producer stopped | {drained} |",
        f"| producer gave up waiting for backlog room | {'yes' if r['producer_blocked'] else 'no'}"
        " |", *_backlog_rows(r.get("streams_at_end", {})), "",
        "Per layer, from each process's `batch_committed` events in the same interval. "
        "CPU is read from /proc for the layer's process and for the PostgreSQL backends "
        "serving it; *µs per record* is CPU time per record the layer committed in the "
        "interval (a fair cost at steady state; with batches still in flight at the end it "
        "runs high). *In batches* adds up the time each of the layer's division streams spent "
        "inside a batch (they run concurrently, so it can pass 1).", "",
        "| layer | records/s | process cores | its PostgreSQL cores | CPU µs per record "
        "(process + PostgreSQL) | in batches | batches | mean / max records per batch | "
        "peak RSS MB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, x in r["layers"].items():
        cores = r["cpu_cores"].get(name) or 0.0
        pg = r["cpu_cores"].get(f"postgres for {name}") or 0.0
        lines.append(
            f"| {name} | {x['records_per_s']:,} | {cores:.2f} | {pg:.2f} | "
            f"{_us(cores, x['records_per_s'])} + {_us(pg, x['records_per_s'])} | "
            f"{x['busy_fraction']:.2f} s/s | {x['batches']} | {x['mean_batch_items']:,} / "
            f"{x['max_batch_items']:,} | {_mb(r['rss_kb'].get(name))} |")
    cores = r["cpu_cores"].get("producer") or 0.0
    lines.append(f"| producer | {r['sent_per_s']:,} | {cores:.2f} | | "
                 f"{_us(cores, r['sent_per_s'])} | | | {r['chunk']:,} per entry | "
                 f"{_mb(r['rss_kb'].get('producer'))} |")
    lines += ["", f"CPU used during the interval, in cores (the machine has "
              f"{r['machine']['cores']}; what the listed processes leave of *machine* went to "
              "other work on the machine):", "", "| process | cores |", "|---|---:|"]
    lines += [f"| {name} | {'-' if v is None else f'{v:.2f}'} |"
              for name, v in r["cpu_cores"].items()]
    if r.get("profiled"):
        lines += ["", "(This run was profiled with py-spy, which costs some CPU.)"]
    return [*lines, ""]


def scaling_section(results: Results, folder: Path) -> list[str]:
    """Records/s by the number of Silver consumer processes (``--silver-consumers``): the
    median of each point's latest series, with its min–max and loads."""
    points = sorted(((r["consumers"]["silver"], r.get("rate_asked") or 0.0, name)
                     for name, r in results.items()
                     if r["kind"] == "throughput" and "-silver" in name))
    if not points:
        return []
    lines = ["## Scaling: Silver consumer processes", "",
             "The same run with 1, 2, … Silver consumers sharing their group (Bronze and the "
             "barrier one each); `python -m bench e2e --rate 0 --silver-consumers 1 2 4`.", "",
             "| Silver consumers | producer | records/s, median (min–max) | runs | CPU µs per "
             "record, all-in | load at start → end | commit |",
             "|---:|---|---:|---:|---:|---|---|"]
    for silver, _, name in points:
        series = latest_series(folder / "runs" / name) or [results[name]]
        rates = sorted(r["records_per_s"] for r in series)
        median = results[name]
        m = median["machine"]
        cpu = cpu_us_per_record(median).get("all")
        lines.append(
            f"| {silver} | {_pace(median)} | {rates[(len(rates) - 1) // 2]:,} "
            f"({rates[0]:,}–{rates[-1]:,}) | {len(rates)} | "
            f"{'-' if cpu is None else f'{cpu:,.1f}'} | "
            f"{m['load_start'][0]} → {m['load_end'][0]} | {m.get('commit', '?')} |")
    return [*lines, ""]


def latest_series(folder: Path) -> list[dict[str, Any]]:
    """The runs of a part's latest series (``runs/<part>/<series>-<run>.json``)."""
    found = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not found:
        return []
    series = found[-1].name.rsplit("-", 1)[0]
    return [json.loads(p.read_text()) for p in found if p.name.rsplit("-", 1)[0] == series]


def _backlog_rows(streams: dict[str, dict[str, int]]) -> list[str]:
    return [f"| `{channel}` streams when the interval ended: entries / not yet read / read, "
            f"not acked | {x['entries']:,} / {x['lag']:,} / {x['pending']:,} |"
            for channel, x in streams.items()]


def latency_section(runs: list[dict[str, Any]]) -> list[str]:
    poll = runs[0]["poll_s"] * 1000
    lines = [
        "## Latency, XADD to Silver commit", "",
        f"The producer sends one chunk every 20 ms at a fixed rate and notes when each XADD "
        f"returned; the ledger is polled every {poll:.0f} ms, and a row's latency is the start "
        f"of the first poll that saw it minus its XADD time: an upper bound, at most one poll "
        f"interval (+ query time) above the true commit time.", "",
        "| rate asked | achieved | rows | p50 ms | p95 ms | p99 ms | max ms | not seen |"
        " peak RSS MB (bronze / silver / barrier) | machine cores busy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in runs:
        rss = " / ".join(_mb(r["rss_kb"].get(n)) for n in ("bronze", "silver", "barrier"))
        busy = r["cpu_cores"].get("machine (every process)")
        lines.append(
            f"| {r['rate']:,.0f} | {r['achieved_rate']:,} | {r['rows']:,} | {r['p50_ms']} | "
            f"{r['p95_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['missing']} | {rss} | "
            f"{busy:.2f} |")
    lines += [""] + [f"- {r['rate']:,.0f}/s measured {_machine(r)}." for r in runs]
    return [*lines, ""]


def peer_section(peer: dict[str, Any], runs: Results) -> list[str]:
    lines = [
        f"## Peer: {peer['peer']}, same rows, same PostgreSQL", "",
        f"Measured {_machine(peer)}. `write_disposition=\"merge\"` on "
        f"`{peer['primary_key']}` into a schema of its own, {peer['records']:,} records per "
        "load, column hints with Silver's types (bigint, decimal, timestamp). dlt checks no "
        "validation rules. Each configuration loads into a dataset of its own: load 1 inserts "
        "every key, the next ones update every key. `insert_values` and `csv` get dict rows "
        "(`csv` loads by COPY); `arrow+csv` gets the same text rows as typed Arrow tables "
        "(cast by pyarrow inside the timed extract) and loads them by COPY: a raw load, "
        "reported beside the others. dlt's figure is one process doing extract, normalize "
        "and load in turn (no concurrent producer, no ledger, no quarantine); assay's is "
        "streaming, every layer its own process.", "",
        "| loader | records/s | seconds | extract / normalize / load s | CPU s |",
        "|---|---:|---:|---|---:|"]
    for i, x in enumerate(peer["loads"], 1):
        lines.append(f"| dlt {x.get('format', 'insert_values')}, load {x.get('load', i)} | "
                     f"{x['records_per_s']:,} | {x['seconds']} | "
                     f"{x['extract_s']} / {x['normalize_s']} / {x['load_s']} | "
                     f"{x.get('cpu_s', '-')} |")
    lines += [f"| assay end to end, {_pace(r)} | {r['records_per_s']:,} | {r['seconds']} | "
              "streaming |" for r in runs.values()]
    best = best_loads(peer)
    lines += ["", "Best load per configuration: " + ", ".join(
        f"{fmt} {n:,} records/s" for fmt, n in best.items()) + "."]
    if "csv" in best:
        lines += [f"- assay end to end, {_pace(r)}, per dlt `csv` best: "
                  f"{r['records_per_s'] / best['csv']:.2f}×" for r in runs.values()]
    lines += ["", f"dlt process: peak RSS {_mb(peer['rss_kb'])} MB, {peer['cpu_s']} CPU s.", ""]
    return lines


PROJECT = ("assay/", "streams/", "processors/", "db/", "contracts/")
TRUNK = ("assay/__main__.py", "assay/cli.py")
"""Frames every sample passes through: not worth a line."""


def profile_section(folder: Path) -> list[str]:
    stacks = sorted(folder.glob("*.txt")) if folder.exists() else []
    if not stacks:
        return []
    lines = ["### Where the time goes (py-spy, 100 samples/s, during the measured interval)", "",
             "Shares of each layer's samples (py-spy counts a thread that is runnable but "
             "waiting for a core as active, so use the CPU figures above for absolute cost). "
             "*total* includes callees, *self* does not; only assay's own functions are listed, "
             "library time shows up in *self by package*.", ""]
    for path in stacks:
        total, inclusive, own, packages = profile(path)
        if not total:
            continue
        lines += [f"#### {path.stem} ({total:,} samples)", "",
                  "| function | total | self |", "|---|---:|---:|"]
        lines += [f"| `{f}` | {n / total:.0%} | {own[f] / total:.0%} |"
                  for f, n in inclusive.most_common(16)]
        lines += ["", "Self by package: " + ", ".join(
            f"{k} {n / total:.0%}" for k, n in packages.most_common(8)) + ".",
            "Most self time: " + ", ".join(
            f"`{f}` {n / total:.0%}" for f, n in own.most_common(8)) + ".", ""]
    return lines


def profile(path: Path) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """Samples; per assay function the samples it was on the stack; per function and per
    package the samples it was on top."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [_function(f) for f in stack.split(";")]
        total += n
        own[frames[-1][0]] += n
        packages[frames[-1][1].split("/")[0]] += n
        for name in {name for name, where in frames
                     if where.startswith(PROJECT) and where not in TRUNK}:
            inclusive[name] += n
    return total, inclusive, own, packages


def _function(frame: str) -> tuple[str, str]:
    """``name (path/to/file.py:12)`` as (``file.py:name``, ``path/to/file.py``)."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    return f"{path.rsplit('/', 1)[-1]}:{name}", path


def chart(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    runs = throughput_runs(results)
    lat = latency_runs(results)
    peer = results.get("peer")
    ax = axes[0][0]
    for r, color in zip(runs.values(), itertools.cycle("bgmc"), strict=False):
        sent = list(itertools.accumulate(r["timeline"]["sent"],
                                         lambda acc, x: (x[0], acc[1] + x[1])))
        ax.plot([s + 1 for s, _ in sent], [n / 1000 for _, n in sent], color=color, lw=0.8,
                ls=":", label=f"sent, {_pace(r)}")
        committed = r["timeline"]["committed"]
        ax.plot([s for s, _ in committed], [n / 1000 for _, n in committed], color=color,
                label=f"committed in Silver, {_pace(r)}")
        ax.axvspan(r["warmup_s"], r["warmup_s"] + r["seconds"], alpha=0.04, color=color)
    if runs:
        end = max(r["warmup_s"] + r["seconds"] for r in runs.values())
        ax.plot([0, end], [0, TARGET_RATE * end / 1000], color="red", lw=0.8, ls="--",
                label=f"{TARGET_RATE:,}/s (target)")
        ax.legend(fontsize=7)
    ax.set(title="records, cumulative (thousands; shaded: measured interval)",
           xlabel="s since producer start")
    ax = axes[0][1]
    if lat:
        width = 0.25
        for i, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
            ax.bar([j + i * width for j in range(len(lat))], [r[q] or 0 for r in lat],
                   width, label=q[:3])
        ax.set_xticks([j + width for j in range(len(lat))],
                      [f"{r['rate']:,.0f}/s" for r in lat])
        ax.axhline(TARGET_P99_MS, color="red", lw=0.8, ls="--", label="p99 target")
        ax.legend(fontsize=8)
    ax.set(title="XADD to Silver commit latency (ms)", xlabel="producer rate")
    ax = axes[1][0]
    bars = [(f"{layer}, {_pace(r).replace('producer ', '')}", kb / 1024)
            for r in runs.values() for layer, kb in r["rss_kb"].items() if kb]
    if bars:
        ax.bar([b[0] for b in bars], [b[1] for b in bars])
        ax.axhline(TARGET_RSS_MB, color="red", lw=0.8, ls="--", label="target")
        ax.tick_params(axis="x", labelsize=7, labelrotation=60)
        ax.legend(fontsize=8)
    ax.set(title="peak RSS per process in the throughput runs (MB)")
    ax = axes[1][1]
    compared = [(f"assay\n{_pace(r).replace('producer ', '')}", r["records_per_s"])
                for r in runs.values()]
    if peer:
        compared += [(f"dlt merge\n{fmt}, best", n) for fmt, n in best_loads(peer).items()]
    if compared:
        ax.bar([b[0] for b in compared], [b[1] for b in compared])
        ax.tick_params(axis="x", labelsize=8)
    ax.set(title="records/s: assay end to end vs dlt merge, same rows and PostgreSQL")
    first = next(iter(results.values()), None)
    if first:
        fig.suptitle("assay bench - " + _machine(first).replace(", PostgreSQL", "\nPostgreSQL")
                     .replace(", embedded PostgreSQL", "\nembedded PostgreSQL"), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
