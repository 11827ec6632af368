"""The ASGI app of ``assay serve``: routes, middleware, and one process's connections."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from assay.contracts.config import SHA256_RE, HttpToken
from assay.runner import Context
from assay.streams.tasks import cancel_and_wait
from assay.web import page, read
from assay.web.answers import json_response, problem_answer
from assay.web.auth import Auth, Limits
from assay.web.ingest import ingest
from assay.web.openapi import openapi
from assay.web.state import Web

log = structlog.get_logger("assay.web")


async def openapi_json(request: Request) -> Response:
    return json_response(200, openapi())


def create_app(web: Web, sample_s: float = 2.0) -> Starlette:
    """The app over an opened ``Web`` (its connections are shared by every request)."""
    http = web.ctx.plan.config.http

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sampler = asyncio.ensure_future(web.sample_forever(sample_s))
        web.ready = True
        try:
            yield
        finally:
            web.ready = False
            await cancel_and_wait(sampler)

    routes = [
        Route("/v1/divisions/{division}/windows/{window}/tables/{table}", ingest,
              methods=["POST"]),
        Route("/v1/windows", read.windows),
        Route("/v1/lag", read.lag),
        Route("/v1/dead", read.dead),
        Route("/v1/quarantine", read.held),
        Route("/v1/quarantine/replay", read.replay_rows, methods=["POST"]),
        Route("/v1/status.html", page.status),
        Route("/metrics", read.metrics),
        Route("/healthz", read.healthz),
        Route("/readyz", read.readyz),
        Route("/openapi.json", openapi_json),
        Route("/", page.index),
        Route("/static/{name}", page.static),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan,
        middleware=[Middleware(Limits, max_header_bytes=http.max_header_bytes,
                               max_body_bytes=http.max_body_bytes),
                    Middleware(Auth, tokens=web.tokens)],
        exception_handlers={HTTPException: problem_answer})
    app.state.web = web
    return app


TOKEN_HASH_ENV = "ASSAY_HTTP_TOKEN_SHA256"
"""A token's SHA-256 that a supervisor (the demo) adds for itself: every scope and division."""


def extra_tokens(environ: Mapping[str, str]) -> list[HttpToken]:
    digest = environ.get(TOKEN_HASH_ENV)
    if not digest:
        return []
    if not SHA256_RE.match(digest):
        raise ValueError(f"{TOKEN_HASH_ENV} is not a SHA-256 hex digest")
    return [HttpToken(name="supervisor", sha256=digest, divisions=["*"],
                      scopes=["ingest", "read", "replay"])]


async def serve(ctx: Context, host: str, port: int, extra: Sequence[HttpToken] = ()) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn's own handlers), then close the app."""
    web = Web.open(ctx, extra)
    config = uvicorn.Config(create_app(web), host=host, port=port, log_config=None,
                            access_log=False, lifespan="on", server_header=False,
                            h11_max_incomplete_event_size=ctx.plan.config.http.max_header_bytes)
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    log.info("http_serving", host=host, port=port,
             tokens=len(web.tokens))
    try:
        await server.serve()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("http_stopped")


class _Server(uvicorn.Server):
    """uvicorn's server, stopped by our signal handlers: SIGTERM ends requests in hand and
    exits 0 (uvicorn's own handlers re-raise the signal after shutting down)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop(self) -> None:
        log.info("shutdown_requested", layer="web")
        self.should_exit = True
