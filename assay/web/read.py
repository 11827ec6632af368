"""The read API and the health checks: the same readers ``assay windows``/``assay lag`` use.

Every answer is limited to the divisions the token may see.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from assay.contracts.http import QuarantineSelection, Replayed
from assay.db import quarantine
from assay.ops.alerts import AlertStore
from assay.ops.window_view import read_windows
from assay.replay import replay
from assay.streams.consumer import TRANSIENT
from assay.streams.dead import dead_letters as read_dead
from assay.streams.lag import LagReport
from assay.web.answers import json_response, refuse
from assay.web.auth import require, visible
from assay.web.state import Web

_selection = msgspec.json.Decoder(QuarantineSelection)


def _web(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


def _divisions(request: Request, web: Web) -> list[str] | Response:
    """The divisions asked for (``?division=``) that the token may read."""
    token = require(request, "read")
    allowed = visible(token, list(web.ctx.plan.config.divisions))
    asked = request.query_params.get("division")
    if asked is None:
        return allowed
    if asked not in web.ctx.plan.config.divisions:
        return refuse(404, "unknown_division", f"no division {asked!r}")
    require(request, "read", asked)
    return [asked]


def _limit(request: Request, default: int = 50) -> int | Response:
    raw = request.query_params.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        return refuse(422, "bad_limit", "limit is a number from 1 to 1000", "$.query.limit")
    return int(raw)


async def windows(request: Request) -> Response:
    """Every window of the visible divisions, as ``assay windows --json`` prints them."""
    web = _web(request)
    divisions = _divisions(request, web)
    if isinstance(divisions, Response):
        return divisions
    rows = await read_windows(web.ctx.redis, web.ctx.pool, web.ctx.keys, web.ctx.plan.config,
                              divisions, time.time())
    return json_response(200, msgspec.json.encode(rows))


async def lag(request: Request) -> Response:
    """Every stream and group of the visible divisions, as ``assay lag --json`` shows."""
    web = _web(request)
    divisions = _divisions(request, web)
    if isinstance(divisions, Response):
        return divisions
    report = await web.sample()
    return json_response(200, msgspec.json.encode(only(report, divisions)))


def only(report: LagReport, divisions: list[str]) -> LagReport:
    return msgspec.structs.replace(
        report, streams=tuple(s for s in report.streams if s.division in divisions),
        dead_letters=tuple(d for d in report.dead_letters if d.division in divisions))


async def dead_letters(web: Web, divisions: list[str], limit: int) -> list[dict[str, Any]]:
    """The newest dead letters of each division, newest first, as ``assay dead`` shows them
    (raw bytes as base64), with their division."""
    found: list[dict[str, Any]] = []
    for division in divisions:
        for letter in await read_dead(web.ctx.redis, web.ctx.keys, division, limit):
            letter.setdefault("error", letter.get("not_a_dead_letter", ""))
            found.append({**letter, "division": division})
    found.sort(key=lambda d: _entry_order(d["id"]), reverse=True)
    return found[:limit]


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def dead(request: Request) -> Response:
    """``/v1/dead?division=&limit=``: the newest dead letters with their reason."""
    web = _web(request)
    divisions = _divisions(request, web)
    limit = _limit(request)
    if isinstance(divisions, Response):
        return divisions
    if isinstance(limit, Response):
        return limit
    return json_response(200, msgspec.json.encode(await dead_letters(web, divisions, limit)))


async def held(request: Request) -> Response:
    """``/v1/quarantine?division=&table=&limit=``: counts per table and rule, and rows."""
    web = _web(request)
    divisions = _divisions(request, web)
    limit = _limit(request)
    if isinstance(divisions, Response):
        return divisions
    if isinstance(limit, Response):
        return limit
    schema = web.ctx.plan.schema
    counts = await quarantine.counts(web.ctx.pool, schema, divisions)
    rows = await quarantine.sample(web.ctx.pool, schema, divisions,
                                   table=request.query_params.get("table"), limit=limit)
    return json_response(200, msgspec.json.encode({
        "counts": [{**dict(c), "newest": c["newest"].timestamp()} for c in counts],
        "rows": [dict(r) for r in rows]}))


async def replay_rows(request: Request) -> Response:
    """``POST /v1/quarantine/replay``: re-drive the selected quarantined rows (replay scope
    on each of their divisions), as ``assay replay`` does."""
    web = _web(request)
    require(request, "replay")
    try:
        selection = _selection.decode(await request.body())
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        message, _, path = str(exc).partition(" - at `")
        return refuse(422, "bad_selection", message, path.rstrip("`") or "$")
    for row in selection.rows:
        require(request, "replay", row.division)
    report = await replay(web.ctx, rows_of=[(r.division, r.window, r.table, r.row)
                                            for r in selection.rows])
    return json_response(202, Replayed(report.rows))


async def metrics(request: Request) -> Response:
    """Prometheus metrics: the stream gauges (same names as the layers'), rows accepted."""
    require(request, "read")
    web = _web(request)
    await web.sample()
    return Response(generate_latest(web.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    """200 when Redis and PostgreSQL answer, else 503 naming which does not."""
    web = _web(request)
    down = []
    try:
        await web.ctx.redis.ping()
    except TRANSIENT:
        down.append("redis")
    try:
        await web.ctx.pool.fetchval("SELECT 1")
    except (OSError, ConnectionError):
        down.append("postgresql")
    if down:
        return refuse(503, "unhealthy", f"not reachable: {', '.join(down)}")
    return json_response(200, b'{"status":"ok"}')


async def readyz(request: Request) -> Response:
    """200 once the process has started (config loaded, schema migrated) and is healthy."""
    if not _web(request).ready:
        return refuse(503, "starting", "not ready yet")
    return await healthz(request)


async def active_alerts(web: Web, divisions: list[str]) -> list[dict[str, Any]]:
    store = AlertStore(web.ctx.redis, web.ctx.keys.alerts())
    return [{"rule": a.rule, "severity": a.severity, "subject": a.finding.subject,
             "division": a.finding.division, "message": a.finding.message, "since": a.since}
            for a in await store.load() if a.finding.division in divisions
            or not a.finding.division]
