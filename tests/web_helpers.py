"""A real ``assay serve`` app on a real socket (uvicorn in the test's loop), and tokens."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn

from assay.runner import Context
from assay.web.app import create_app
from assay.web.auth import token_hash
from assay.web.state import Web

INGEST_EAST = "east-ingest-token-0123456789"
READER = "reader-token-0123456789"
OPERATOR = "operator-token-0123456789"


def write_tokens(folder: Path, **http: object) -> Path:
    """An ``http`` section with three tokens: east ingest, read-all, operator (everything)."""
    (folder / "http.json").write_text(json.dumps({"http": {"tokens": [
        {"name": "east-ingest", "sha256": token_hash(INGEST_EAST), "divisions": ["east"],
         "scopes": ["ingest"]},
        {"name": "reader", "sha256": token_hash(READER), "divisions": ["*"],
         "scopes": ["read"]},
        {"name": "operator", "sha256": token_hash(OPERATOR), "divisions": ["*"],
         "scopes": ["ingest", "read", "replay"]},
    ], **http}}))
    return folder


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def served(ctx: Context, sample_s: float = 0.5) -> AsyncIterator[tuple[str, Web]]:
    """Serve the app on a free port of 127.0.0.1; yields its base URL and its ``Web``."""
    web = Web.open(ctx)
    config = uvicorn.Config(create_app(web, sample_s=sample_s), host="127.0.0.1", port=0,
                            log_config=None, access_log=False, lifespan="on",
                            h11_max_incomplete_event_size=ctx.plan.config.http.max_header_bytes)
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    deadline = time.monotonic() + 20
    while not server.started:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", web
    finally:
        server.should_exit = True
        await task
