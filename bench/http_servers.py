"""``python -m bench.http_servers``: which ASGI server for ``assay serve`` — measured.

The same small Starlette app (a POST route that streams the body, as the ingest route reads
it, and a GET route) under uvicorn with h11, uvicorn with httptools, and granian, each its own
process on one worker; a client sends ``requests`` POSTs of a 1,000-row JSON body (≈ 230 kB,
the e2e bench's order lines) and as many small GETs, ``concurrency`` at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import httpx
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from assay.services.ports import free_port
from bench.e2e import order_lines


async def _post(request: Request) -> JSONResponse:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return JSONResponse({"bytes": size}, status_code=202)


async def _get(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/post", _post, methods=["POST"]), Route("/get", _get)])

SERVERS = {
    "uvicorn (h11)": ["-m", "uvicorn", "--http", "h11", "--no-access-log", "--log-level",
                      "warning", "bench.http_servers:app", "--port"],
    "uvicorn (httptools)": ["-m", "uvicorn", "--http", "httptools", "--no-access-log",
                            "--log-level", "warning", "bench.http_servers:app", "--port"],
    "granian": ["-m", "granian", "--interface", "asgi", "--workers", "1", "--log-level",
                "warning", "bench.http_servers:app", "--port"],
}


async def _load(url: str, body: bytes, requests: int, concurrency: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        deadline = time.monotonic() + 30
        while True:
            try:
                await http.get("/get")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        result = {}
        for name, call in (("post_per_s", lambda: http.post("/post", content=body)),
                           ("get_per_s", lambda: http.get("/get"))):
            left = requests

            async def worker(call: object = call) -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    answer = await call()  # type: ignore[operator]
                    answer.raise_for_status()

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            result[name] = round(requests / (time.perf_counter() - started))
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    body = msgspec.json.encode(order_lines(1, 1000))
    results = {}
    for name, command in SERVERS.items():
        port = free_port()
        server = subprocess.Popen([sys.executable, *command, str(port)],
                                  env={**os.environ, "PYTHONPATH": os.getcwd()})
        try:
            results[name] = asyncio.run(_load(f"http://127.0.0.1:{port}", body, args.requests,
                                              args.concurrency))
        finally:
            server.terminate()
            server.wait(30)
    print(json.dumps({"body_kb": round(len(body) / 1024), "results": results,
                      "load": [round(x, 2) for x in os.getloadavg()]}, indent=1))


if __name__ == "__main__":
    main()
