"""The status page: a static shell at ``/`` and its live part, rendered on the server.

The shell holds no data; its script (``static/page.js``, no build step, no CDN) asks for a
token once (kept in the tab's sessionStorage), then fetches ``/v1/status.html`` every
couple of seconds with it and swaps the HTML in. The live part summarises per division —
counts per state, the windows not yet complete with what they wait for, the newest
completed — so it stays small with 10,000 windows.
"""

from __future__ import annotations

import time
from html import escape
from importlib.resources import files
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from assay.db import quarantine
from assay.db.report import gold_windows
from assay.ops.window_view import window_summary
from assay.streams.lag import LagReport
from assay.web.auth import require, visible
from assay.web.read import active_alerts, dead_letters, only
from assay.web.state import Web

STATIC = files("assay.web") / "static"
SHOWN_OPEN = 50
SHOWN_DONE = 8
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "Cache-Control": "no-store"}


async def index(request: Request) -> Response:
    """The page shell (no data): the live part is fetched with the operator's token."""
    return HTMLResponse((STATIC / "index.html").read_text(), headers=SECURITY_HEADERS)


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    types = {"page.js": "text/javascript", "page.css": "text/css"}
    if name not in types:
        return Response("not found", 404)
    return Response((STATIC / name).read_text(), media_type=types[name],
                    headers=SECURITY_HEADERS)


async def status(request: Request) -> Response:
    """The live part of the page, as HTML (read scope)."""
    web: Web = request.app.state.web
    token = require(request, "read")
    return HTMLResponse(await render(web, visible(token, list(web.ctx.plan.config.divisions))),
                        headers=SECURITY_HEADERS)


async def render(web: Web, divisions: list[str], now: float | None = None) -> str:
    now = time.time() if now is None else now
    config = web.ctx.plan.config
    report = only(await web.sample(), divisions)
    dead = await dead_letters(web, divisions, 5)
    counts = await quarantine.counts(web.ctx.pool, web.ctx.plan.schema, divisions)
    held = await quarantine.sample(web.ctx.pool, web.ctx.plan.schema, divisions, limit=50)
    alerts = await active_alerts(web, divisions)
    parts = [f'<p class="at">as of {time.strftime("%H:%M:%S", time.localtime(now))}</p>',
             _alerts(alerts)]
    applied = await gold_windows(web.ctx.pool, config.pipeline.db_schema)
    for division in divisions:
        states, waiting, done = await window_summary(
            web.ctx.redis, web.ctx.keys, config, division, applied, now,
            waiting=SHOWN_OPEN, done=SHOWN_DONE)
        parts.append(_division(division, config.divisions[division].name, states, waiting,
                               done, config.divisions[division].window_timeout_s))
    parts += [_lag(web, report), _dead(report, dead), _quarantine(counts, held)]
    return "\n".join(parts)


def _alerts(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return '<section id="alerts"><h2>Alerts</h2><p class="ok">none active</p></section>'
    items = "".join(f'<li class="{escape(a["severity"])}"><b>{escape(a["rule"])}</b>'
                    f' {escape(a["message"])}</li>' for a in alerts)
    return f'<section id="alerts"><h2>Alerts</h2><ul>{items}</ul></section>'


def _division(division: str, name: str, counts: dict[str, int], waiting: list[dict[str, Any]],
              done: list[dict[str, Any]], timeout_s: float) -> str:
    summary = " ".join(f'<span class="badge {escape(s)}">{escape(s)} {n}</span>'
                       for s, n in sorted(counts.items()))
    shown = waiting[::-1] + done[::-1]
    lines = []
    for r in shown:
        late = r["status"] == "open" and r["age_s"] > timeout_s
        state = "late" if late else r["status"]
        wait = "" if r["status"] in ("completed", "partial") else ", ".join(r["waiting_for"])
        lines.append(
            f'<tr data-window="{escape(r["window"])}" data-status="{escape(r["status"])}">'
            f'<td>{escape(r["window"])}</td><td><span class="badge {escape(state)}">'
            f'{escape(state)}</span></td><td class="n">{_age(r["age_s"])}</td>'
            f'<td class="n">{r["failed"]}</td>'
            f'<td class="wait">{escape(wait)}</td></tr>')
    total = sum(counts.values())
    hidden = total - len(shown)
    more = f'<p class="more">{hidden} more windows not shown (GET /v1/windows)</p>' if hidden \
        else ""
    return (f'<section class="division" id="division-{escape(division)}">'
            f'<h2>{escape(name)} <small>{escape(division)}</small></h2>'
            f'<p>{total} windows {summary}</p>'
            '<table><thead><tr><th>window</th><th>state</th><th>age</th><th>failed</th>'
            f'<th>waiting for</th></tr></thead><tbody>{"".join(lines)}</tbody></table>{more}'
            "</section>")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _lag(web: Web, report: LagReport) -> str:
    lines = []
    for stream, group in report.groups():
        history = [g.lag for past in web.history for s, g in past.groups()
                   if s.stream == stream.stream and g.group == group.group]
        oldest = "" if group.oldest_pending_ms is None else _age(group.oldest_pending_ms / 1000)
        lines.append(f'<tr><td>{escape(stream.division)}</td><td>{escape(stream.channel)}</td>'
                     f'<td>{escape(group.layer)}</td><td class="n">{group.lag}</td>'
                     f'<td class="n">{group.pending}</td><td class="n">{oldest}</td>'
                     f"<td>{sparkline(history)}</td></tr>")
    return ('<section id="lag"><h2>Streams</h2><table><thead><tr><th>division</th>'
            '<th>stream</th><th>layer</th><th>lag</th><th>pending</th><th>oldest</th>'
            f'<th>lag, last minutes</th></tr></thead><tbody>{"".join(lines)}</tbody></table>'
            "</section>")


def sparkline(values: list[int], width: int = 120, height: int = 20) -> str:
    """An inline SVG polyline of ``values`` (empty when there is nothing to draw)."""
    if len(values) < 2:
        return ""
    top = max(max(values), 1)
    step = width / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 1 - v / top * (height - 2):.1f}"
                      for i, v in enumerate(values))
    return (f'<svg class="spark" width="{width}" height="{height}" aria-label="max {top}">'
            f'<polyline points="{points}"/></svg>')


def _dead(report: LagReport, dead: list[dict[str, Any]]) -> str:
    totals = " ".join(f"{escape(d.division)}: {d.length}" for d in report.dead_letters)
    items = "".join(
        f'<li class="dead-letter"><code>{escape(d["division"])}</code> {escape(d["id"])}'
        f' <b>{escape(str(d.get("layer", "")))}</b> {escape(str(d.get("error", "")))}</li>'
        for d in dead)
    return f'<section id="dead"><h2>Dead letters</h2><p>{totals}</p><ul>{items}</ul></section>'


def _quarantine(counts: list[Any], held: list[Any]) -> str:
    summary = "".join(f'<tr><td>{escape(c["division"])}</td><td>{escape(c["table_name"])}</td>'
                      f'<td>{escape(c["rule"] or "")}</td><td class="n">{c["rows"]}</td>'
                      f'<td>{escape(c["message"] or "")}</td></tr>' for c in counts)
    rows = "".join(
        f'<tr class="held" data-id="{escape(_row_id(r))}"><td><input type="checkbox"'
        f' aria-label="select row {r["row"]}"></td><td>{escape(r["division"])}</td>'
        f'<td>{escape(r["window"])}</td><td>{escape(r["table_name"])}</td>'
        f'<td class="n">{r["row"]}</td><td>{escape(r["field"] or "")}</td>'
        f'<td>{escape(r["message"] or "")}</td><td><code>{escape(r["payload"][:300])}</code>'
        "</td></tr>" for r in held)
    return ('<section id="quarantine"><h2>Quarantine</h2><table><thead><tr><th>division</th>'
            '<th>table</th><th>rule</th><th>rows</th><th>newest message</th></tr></thead>'
            f'<tbody>{summary}</tbody></table><table class="rows"><thead><tr><th></th>'
            '<th>division</th><th>window</th><th>table</th><th>row</th><th>field</th>'
            f'<th>message</th><th>payload</th></tr></thead><tbody>{rows}</tbody></table>'
            "</section>")


def _row_id(r: Any) -> str:
    return f'{r["division"]}|{r["window"]}|{r["table_name"]}|{r["row"]}'
