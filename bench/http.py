"""``python -m bench http``: the HTTP face measured beside the XADD path, in one run.

* ``throughput``: the same ``rows`` order lines (the e2e bench's ``erp_order_line`` rows),
  over three divisions, windows of ``window_rows``, sent end to end to Silver (ledger
  count) three ways, each in a fresh sandbox with Bronze, Silver and the barrier running
  as their own processes: XADD through the Producer API; ``assay serve`` taking 1,000-row
  JSON bodies (one client per division); ``assay serve`` taking one streamed NDJSON body
  per division and window. Records/s = rows ÷ (first send → last row in Silver).
* ``upload``: one streamed NDJSON body of ``upload_rows`` rows (~200 MB) into ``assay
  serve`` with the layers running; the server's peak RSS (VmHWM) and the time it took.
* ``page``: the status page's live part rendered over 10,000 windows (in-process, median
  of five), and the same through HTTP.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec

from assay.db import accounting
from assay.runner import open_context
from assay.services.ports import free_port
from assay.streams.keys import Keys
from assay.streams.producer import Producer, TableTarget
from assay.web.app import TOKEN_HASH_ENV
from assay.web.auth import token_hash
from bench.e2e import (
    ROOT,
    TABLE,
    Sandbox,
    order_lines,
    peak_rss_kb,
    sandbox,
    start_layer,
    stop,
)

TOKEN = "bench-token-not-secret"


async def start_serve(box: Sandbox) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    log = box.folder / "web.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "assay", "serve", "--port", str(port), "--config",
            str(box.config_dir), env={**box.env(), TOKEN_HASH_ENV: token_hash(TOKEN)},
            stdout=out, stderr=out, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=url) as http:
        while True:
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return process, url
            except httpx.TransportError:
                pass
            if process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"assay serve did not start; see {log}")
            await asyncio.sleep(0.1)


def plan(rows: int, window_rows: int, divisions: list[str]
         ) -> dict[str, list[tuple[str, int, int]]]:
    """Per division, its windows as (window, first key, rows)."""
    per = rows // len(divisions)
    out: dict[str, list[tuple[str, int, int]]] = {}
    for d, division in enumerate(divisions):
        first = d * per + 1
        out[division] = [(f"w{i // window_rows:04d}", first + i, min(window_rows, per - i))
                         for i in range(0, per, window_rows)]
    return out


async def _xadd(box: Sandbox, division: str, windows: list[tuple[str, int, int]]) -> None:
    producer = Producer(box.redis, Keys(box.prefix), chunk_size=box.batch_size,
                        max_backlog=box.max_backlog)
    for window, first, count in windows:
        await producer.send_table(TableTarget(division, TABLE, window),
                                  order_lines(first, count))


async def _post(http: httpx.AsyncClient, url: str, **kwargs: Any) -> None:
    while True:
        answer = await http.post(url, **kwargs)
        if answer.status_code == 429:
            await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
            continue
        if answer.status_code != 202:
            raise RuntimeError(f"{answer.status_code}: {answer.text}")
        return


async def _json(http: httpx.AsyncClient, division: str,
                windows: list[tuple[str, int, int]]) -> None:
    for window, first, count in windows:
        url = f"/v1/divisions/{division}/windows/{window}/tables/{TABLE}"
        for start in range(0, count, 1000):
            n = min(1000, count - start)
            await _post(http, url, content=msgspec.json.encode(order_lines(first + start, n)),
                        params={"final": str(start + n >= count).lower()},
                        headers={"Content-Type": "application/json"})


async def ndjson_body(first: int, count: int) -> AsyncIterator[bytes]:
    encode = msgspec.json.encode
    for start in range(0, count, 1000):
        rows = order_lines(first + start, min(1000, count - start))
        yield b"".join(encode(r) + b"\n" for r in rows)


async def _ndjson(http: httpx.AsyncClient, division: str,
                  windows: list[tuple[str, int, int]]) -> None:
    for window, first, count in windows:
        await _post(http, f"/v1/divisions/{division}/windows/{window}/tables/{TABLE}",
                    content=ndjson_body(first, count), params={"final": "true"},
                    headers={"Content-Type": "application/x-ndjson"})


async def one_path(redis_url: str, database_url: str, path: str, rows: int,
                   window_rows: int) -> dict[str, Any]:
    async with sandbox(redis_url, database_url, f"http_{path.replace('-', '_')}") as box:
        logs = box.folder / "logs"
        logs.mkdir()
        layers = [await start_layer(box, name, logs) for name in ("bronze", "silver", "barrier")]
        serve = None
        try:
            if path != "xadd":
                serve, url = await start_serve(box)
            windows = plan(rows, window_rows, box.divisions)
            total = sum(n for ws in windows.values() for _, _, n in ws)
            started = time.time()
            if path == "xadd":
                await asyncio.gather(*(_xadd(box, d, w) for d, w in windows.items()))
            else:
                async with httpx.AsyncClient(base_url=url, timeout=300, headers={
                        "Authorization": f"Bearer {TOKEN}"}) as http:
                    send = _json if path == "http-json" else _ndjson
                    await asyncio.gather(*(send(http, d, w) for d, w in windows.items()))
            sent_s = time.time() - started
            deadline = time.monotonic() + 600
            while sum((await accounting.outcomes(box.pool, box.schema)).values()) < total:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path}: Silver did not take every row")
                await asyncio.sleep(0.05)
            elapsed = time.time() - started
            serve_rss = peak_rss_kb(serve.pid) if serve is not None else None
        finally:
            if serve is not None:
                await stop(serve)
            for layer in layers:
                await stop(layer.process)
    return {"path": path, "rows": total, "seconds": round(elapsed, 2),
            "records_per_s": round(total / elapsed), "sent_s": round(sent_s, 2),
            "serve_peak_rss_mb": None if serve_rss is None else round(serve_rss / 1024, 1)}


async def throughput(redis_url: str, database_url: str, rows: int = 300_000,
                     window_rows: int = 20_000) -> dict[str, Any]:
    results = [await one_path(redis_url, database_url, path, rows, window_rows)
               for path in ("xadd", "http-json", "http-ndjson")]
    xadd = results[0]["records_per_s"]
    for r in results:
        r["of_xadd"] = round(r["records_per_s"] / xadd, 2)
    return {"kind": "http-throughput", "results": results}


async def upload(redis_url: str, database_url: str, rows: int = 1_000_000) -> dict[str, Any]:
    """One NDJSON body of ``rows`` rows streamed into ``assay serve``: its peak RSS."""
    async with sandbox(redis_url, database_url, "http_upload") as box:
        logs = box.folder / "logs"
        logs.mkdir()
        layers = [await start_layer(box, name, logs) for name in ("bronze", "silver", "barrier")]
        serve, url = await start_serve(box)
        size = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in ndjson_body(1, rows):
                size += len(chunk)
                yield chunk

        try:
            idle_rss = peak_rss_kb(serve.pid)
            started = time.time()
            async with httpx.AsyncClient(base_url=url, timeout=900, headers={
                    "Authorization": f"Bearer {TOKEN}"}) as http:
                await _post(http, f"/v1/divisions/{box.divisions[0]}/windows/w0/tables/{TABLE}",
                            content=counted(), params={"final": "true"},
                            headers={"Content-Type": "application/x-ndjson"})
            accepted_s = time.time() - started
            rss = peak_rss_kb(serve.pid)
        finally:
            await stop(serve)
            for layer in layers:
                await stop(layer.process)
    return {"kind": "http-upload", "rows": rows, "body_mb": round(size / 2**20, 1),
            "accepted_s": round(accepted_s, 1),
            "serve_peak_rss_mb": round((rss or 0) / 1024, 1),
            "serve_rss_before_mb": round((idle_rss or 0) / 1024, 1)}


async def page(redis_url: str, database_url: str, windows: int = 10_000) -> dict[str, Any]:
    """The status page's live part over ``windows`` windows (spread over the divisions)."""
    from assay.web.page import render
    from assay.web.state import Web

    async with sandbox(redis_url, database_url, "http_page") as box:
        ctx = await open_context(box.config_dir, redis_url, database_url, box.prefix)
        web = Web.open(ctx)
        now = time.time()
        pipe = box.redis.pipeline(transaction=False)
        for i in range(windows):
            division = box.divisions[i % len(box.divisions)]
            name = f"w{i:05d}"
            status = "open" if i % 50 == 0 else "completed"
            tables = ctx.plan.config.divisions[division].tables
            fields: dict[str, Any] = {"status": status, "opened_at": now - 3600 + i * 0.1}
            if status == "completed":
                fields["completed_at"] = now - 1000
            for t in tables:
                fields[f"{t}:expected"] = 100
                fields[f"{t}:seen"] = 100 if status == "completed" else 40
            pipe.hset(ctx.keys.state(division, f"w:{name}"), mapping=fields)
            pipe.zadd(ctx.keys.state(division, "windows"), {name: fields["opened_at"]})
        await pipe.execute()
        divisions = list(ctx.plan.config.divisions)
        timings = []
        for _ in range(5):
            t0 = time.perf_counter()
            html = await render(web, divisions)
            timings.append(time.perf_counter() - t0)
        await ctx.close()
        serve, url = await start_serve(box)
        try:
            over_http = []
            async with httpx.AsyncClient(base_url=url, headers={
                    "Authorization": f"Bearer {TOKEN}"}) as http:
                for _ in range(5):
                    t0 = time.perf_counter()
                    answer = await http.get("/v1/status.html")
                    over_http.append(time.perf_counter() - t0)
                    assert answer.status_code == 200
        finally:
            await stop(serve)
    return {"kind": "http-page", "windows": windows, "html_kb": round(len(html) / 1024, 1),
            "render_ms_median": round(statistics.median(timings) * 1000, 1),
            "render_ms_max": round(max(timings) * 1000, 1),
            "http_ms_median": round(statistics.median(over_http) * 1000, 1)}


def main(part: str, redis_url: str, database_url: str, **options: Any) -> dict[str, Any]:
    parts = {"throughput": throughput, "upload": upload, "page": page}
    result: dict[str, Any] = asyncio.run(parts[part](redis_url, database_url, **options))
    result["load_end"] = [round(x, 2) for x in os.getloadavg()]
    return result
