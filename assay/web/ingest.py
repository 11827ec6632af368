"""``POST /v1/divisions/{division}/windows/{window}/tables/{table}``: rows into ingest.

The body is read and checked whole (spooled, bounded memory) before anything is sent, so a
refused request adds nothing to the stream. Then the part's row numbers are reserved under
its ``Idempotency-Key`` (one made up when the client sent none), the rows go through the
same ``Producer`` as ``assay produce``, and ``?final=true`` ends the table with the count of
every part. A retry with the key of an answered request gets the first answer and sends
nothing; with the key of one that broke off, it sends the same rows under the same numbers.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response

from assay.contracts.http import Accepted, Problem
from assay.streams import keys as channels
from assay.streams.backlog import backlog
from assay.streams.consumer import TRANSIENT
from assay.streams.parts import Claim
from assay.streams.producer import TableTarget
from assay.web.answers import json_response, refuse
from assay.web.auth import require
from assay.web.bodies import BadBody, BodyFormat, Spooled, TooLarge, spool
from assay.web.state import Web

log = structlog.get_logger("assay.web")

WINDOW_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,39}$")
"""Window names: letters, digits, '-' and '_' (``2014-03``); nothing that could be a path."""
KINDS = {"application/json": "json", "application/x-ndjson": "ndjson",
         "application/jsonl": "ndjson", "text/csv": "csv"}
DELIMITERS = {",": ",", ";": ";", "tab": "\t", "\t": "\t", "|": "|"}


async def ingest(request: Request) -> Response:
    """Accept one part of a table of a division's window (JSON array, NDJSON or CSV)."""
    web: Web = request.app.state.web
    division = request.path_params["division"]
    window = request.path_params["window"]
    table = request.path_params["table"]
    require(request, "ingest", division)
    config = web.ctx.plan.config
    if division not in config.divisions:
        return refuse(404, "unknown_division", f"no division {division!r}")
    if table not in config.divisions[division].tables:
        return refuse(404, "unknown_table", f"division {division!r} expects no table {table!r}")
    if not WINDOW_RE.match(window):
        return refuse(422, "bad_window", f"a window name must match {WINDOW_RE.pattern}",
                      "$.path.window")
    fmt = _format(request, web)
    if isinstance(fmt, Response):
        return fmt
    final = request.query_params.get("final", "false").lower() in ("true", "1", "yes")
    behind = await _wait_for_room(web, division)
    if behind:
        return refuse(429, "backlog", f"Bronze is {behind} entries behind; retry later",
                      headers={"Retry-After": "1"})
    key = request.headers.get("idempotency-key")
    try:
        spooled = await spool(request.stream(), fmt)
    except BadBody as exc:
        return refuse(422 if exc.path and exc.path != "$" else 400, "bad_body", exc.detail,
                      exc.path)
    except TooLarge as exc:
        return refuse(413, "body_too_large", str(exc))
    try:
        return await _send(web, TableTarget(division, table, window), spooled, key, final)
    finally:
        spooled.close()


async def _wait_for_room(web: Web, division: str) -> int:
    """0 once Bronze is at most ``max_backlog`` entries behind; else, after waiting up to
    ``backlog_wait_s``, how far behind it still is."""
    stream = web.ctx.keys.stream(division, channels.INGEST)
    deadline = time.monotonic() + web.ctx.plan.config.http.backlog_wait_s
    delay = 0.02
    while (behind := await backlog(web.ctx.redis, stream) or 0) > web.producer.max_backlog:
        if time.monotonic() >= deadline:
            return behind
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.25)
    return 0


async def _send(web: Web, target: TableTarget, spooled: Spooled, key: str | None,
                final: bool) -> Response:
    """Reserve the body's rows under its key (or resume an earlier reservation), send them,
    and keep the answer; a lost connection on the way answers 503 with the key to retry."""
    key = key or f"auto-{uuid.uuid4().hex}"
    where = (target.division, target.window, target.table, key)
    fingerprint = f"{spooled.digest}:{'final' if final else 'part'}"
    try:
        claim = await web.parts.claim(*where, fingerprint, spooled.count)
    except TRANSIENT as exc:
        return _interrupted(target, key, None, exc)
    match claim.state:
        case "answered":
            return json_response(202, claim.answer, {"Idempotent-Replay": "true"})
        case "running":
            return refuse(409, "in_progress", "a request with this Idempotency-Key is running",
                          headers={"Retry-After": "1"})
        case "mismatch":
            return refuse(422, "idempotency_key_reused",
                          "this Idempotency-Key was used for another body (or another final)")
    try:
        async with web.parts.leased(*where, claim):
            answer = await _send_rows(web, target, spooled, claim, final)
            body = msgspec.json.encode(answer)
            await web.parts.answer(*where, body)
    except TRANSIENT as exc:
        return _interrupted(target, key, claim, exc)
    if web.rows_accepted is not None:
        web.rows_accepted.labels(target.division, target.table).inc(answer.rows)
    return json_response(202, body)


async def _send_rows(web: Web, target: TableTarget, spooled: Spooled, claim: Claim,
                     final: bool) -> Accepted:
    first = claim.first
    await web.producer.send_table(target, spooled.rows(), first_row=first, end=False)
    total = None
    if final:
        total = await web.parts.total(target.division, target.window, target.table)
        await web.producer.end_table(target, total)
    count = claim.count
    log.info("http_rows_accepted", division=target.division, table=target.table,
             window=target.window, rows=count, first_row=first, final=final,
             resumed=claim.state == "resumed")
    return Accepted(rows=count, first_row=first, last_row=first + count - 1,
                    entries=-(-count // web.producer.chunk_size), final=final,
                    table_rows=total)


def _interrupted(target: TableTarget, key: str, claim: Claim | None,
                 exc: BaseException) -> Response:
    """503 for a request that lost Redis while it reserved or sent its rows: which rows it
    holds and the key that sends exactly those again."""
    first, last = (claim.first, claim.first + claim.count - 1) if claim else (None, None)
    log.warning("http_send_interrupted", division=target.division, table=target.table,
                window=target.window, first_row=first, last_row=last, error=str(exc))
    held = f"rows {first}..{last} are reserved for this body and may be partly sent" \
        if claim else "the body's rows may have been reserved"
    problem = Problem(
        error="send_interrupted",
        detail=f"{held}; retry the same body with Idempotency-Key: {key} to send them under "
               "the same numbers (another key or none leaves them missing from the table)",
        first_row=first, last_row=last, idempotency_key=key)
    return json_response(503, problem, {"Retry-After": "1", "Idempotency-Key": key})


def _format(request: Request, web: Web) -> BodyFormat | Response:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    kind = KINDS.get(media)
    if kind is None:
        return refuse(415, "unsupported_media_type",
                      f"send one of {', '.join(sorted(KINDS))}, not {media or 'nothing'!r}")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        return refuse(415, "unsupported_encoding", "Content-Encoding may be gzip or nothing")
    delimiter = DELIMITERS.get(request.query_params.get("delimiter", ","))
    if delimiter is None:
        return refuse(422, "bad_delimiter", f"delimiter may be one of {sorted(DELIMITERS)}",
                      "$.query.delimiter")
    http = web.ctx.plan.config.http
    return BodyFormat(kind=kind, gzip=encoding == "gzip", delimiter=delimiter,
                      max_bytes=http.max_body_bytes, max_json_bytes=http.max_json_array_bytes)
