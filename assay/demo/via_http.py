"""``assay demo --via http``: the same exports sent through ``assay serve`` instead of XADD.

The demo starts ``assay serve`` on a free port with a token of its own: a random token made
now, whose SHA-256 alone goes to the server (``ASSAY_HTTP_TOKEN_SHA256``); the token itself
is never written anywhere. Each export goes as JSON bodies of ``part_rows`` rows, the last
one with ``final=true``; a 429 is waited out as its ``Retry-After`` says, and every part
carries an ``Idempotency-Key``, so a retried part is never counted twice.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

import httpx
import msgspec

from assay.demo.simulator import Export
from assay.services.ports import free_port
from assay.web.app import TOKEN_HASH_ENV
from assay.web.auth import token_hash


class HttpSide:
    """The demo's ``assay serve`` process, its URL and its token."""

    def __init__(self, process: asyncio.subprocess.Process, url: str, token: str) -> None:
        self.process = process
        self.url = url
        self.token = token


async def start_serve(config_dir: Path, log_dir: Path, env: dict[str, str],
                      timeout_s: float = 60.0) -> HttpSide:
    """Start ``assay serve`` on a free port and wait until ``/readyz`` answers 200."""
    token = secrets.token_urlsafe(32)
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    out = (log_dir / "web.log").open("ab")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "assay", "serve", "--port", str(port), "--config",
        str(config_dir), env={**os.environ, **env, TOKEN_HASH_ENV: token_hash(token)},
        stdout=out, stderr=out)
    out.close()
    side = HttpSide(process, f"http://127.0.0.1:{port}", token)
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=side.url) as http:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"assay serve exited with {process.returncode}; see web.log")
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return side
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"assay serve not ready after {timeout_s:.0f} s")
            await asyncio.sleep(0.1)


async def replay_http(side: HttpSide, exports: Iterable[Export], err: TextIO,
                      part_rows: int = 1000) -> int:
    """Send every export through the HTTP API; returns the rows it accepted."""
    accepted = 0
    window = ""
    async with httpx.AsyncClient(base_url=side.url, timeout=120.0, headers={
            "Authorization": f"Bearer {side.token}"}) as http:
        for export in exports:
            if export.window != window:
                window = export.window
                err.write(f"\r  sending window {window} over HTTP ({accepted:,} rows accepted)")
                err.flush()
            url = f"/v1/divisions/{export.division}/windows/{export.window}/tables/{export.table}"
            parts = [export.rows[i:i + part_rows]
                     for i in range(0, len(export.rows), part_rows)] or [[]]
            for n, part in enumerate(parts):
                accepted += await _post(http, url, part, final=n == len(parts) - 1,
                                        key=f"demo-{export.window}-{n}")
    err.write(f"\r  sent {accepted:,} rows over HTTP\n")
    return accepted


async def _post(http: httpx.AsyncClient, url: str, rows: Sequence[object], final: bool,
                key: str) -> int:
    body = msgspec.json.encode(rows)
    while True:
        answer = await http.post(url, content=body, params={"final": str(final).lower()},
                                 headers={"Content-Type": "application/json",
                                          "Idempotency-Key": key})
        if answer.status_code in (409, 429, 503):  # running, backlog, broke off: same key
            await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
            continue
        if answer.status_code != 202:
            raise RuntimeError(f"{url}: {answer.status_code} {answer.text}")
        rows_accepted: int = answer.json()["rows"]
        return rows_accepted
