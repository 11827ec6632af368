"""The OpenAPI description of the HTTP API, built from the answer types in ``contracts/``.

``schema/openapi.json`` holds a copy (``assay serve --openapi`` prints it); a test keeps
the copy equal to what ``/openapi.json`` serves.
"""

from __future__ import annotations

from typing import Any

import msgspec

from assay.contracts.http import Accepted, Problem, QuarantineSelection, Replayed

_REF = "#/components/schemas/{name}"


def _answer(description: str, name: str | None = None) -> dict[str, Any]:
    if name is None:
        return {"description": description}
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": _REF.format(name=name)}}}}


def _problems(*codes: int) -> dict[str, Any]:
    texts = {400: "not a readable body, or a token in the query string",
             401: "no or unknown bearer token", 403: "the token lacks the scope or division",
             404: "unknown division or table", 409: "the same Idempotency-Key is running",
             413: "body too large", 415: "unsupported content type or encoding",
             422: "a bad value; `path` names the first", 429: "ingest backlog; see Retry-After",
             431: "headers too large", 503: "Redis or PostgreSQL not reachable"}
    return {str(c): _answer(texts[c], "Problem") for c in codes}


def _param(name: str, where: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path",
            "description": description, "schema": {"type": kind}}


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``assay serve``."""
    _, components = msgspec.json.schema_components(
        [Accepted, Problem, Replayed, QuarantineSelection], ref_template=_REF)
    read: dict[str, Any] = {"security": [{"bearer": []}]}
    division = _param("division", "query", "only this division")
    limit = _param("limit", "query", "1..1000 (default 50)", "integer")
    rows_body = {"type": "array", "items": {"type": "object", "additionalProperties": {
        "type": ["string", "number", "boolean", "null"]}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "assay", "version": "1",
                 "description": "Ingest table rows over HTTP; read pipeline state."},
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "A token whose SHA-256 is in the `http` config"}}},
        "paths": {
            "/v1/divisions/{division}/windows/{window}/tables/{table}": {"post": {
                **read, "summary": "Send one part of a table of a window (ingest scope)",
                "parameters": [
                    _param("division", "path", "a configured division"),
                    _param("window", "path", "the sync window, e.g. 2014-03"),
                    _param("table", "path", "a table the division expects"),
                    _param("final", "query", "the last part: send the table-end", "boolean"),
                    _param("delimiter", "query", "CSV delimiter: , ; | or tab"),
                    _param("Idempotency-Key", "header",
                           "a retry gets the first answer, or resends the same rows under "
                           "the same numbers when the first broke off"),
                    _param("Content-Encoding", "header", "gzip or nothing")],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": rows_body},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                    "text/csv": {"schema": {"type": "string"}}}},
                "responses": {"202": _answer("accepted", "Accepted"),
                              **_problems(400, 401, 403, 404, 409, 413, 415, 422, 429, 431),
                              "503": _answer("Redis lost while sending: `first_row`..`last_row`"
                                             " and the `idempotency_key` to retry them with",
                                             "Problem")}}},
            "/v1/windows": {"get": {**read, "summary": "Every window (read scope)",
                                    "parameters": [division],
                                    "responses": {"200": _answer("windows"),
                                                  **_problems(401, 403, 404)}}},
            "/v1/lag": {"get": {**read, "summary": "Streams and groups (read scope)",
                                "parameters": [division],
                                "responses": {"200": _answer("lag report"),
                                              **_problems(401, 403, 404)}}},
            "/v1/dead": {"get": {**read, "summary": "Newest dead letters (read scope)",
                                 "parameters": [division, limit],
                                 "responses": {"200": _answer("dead letters"),
                                               **_problems(401, 403, 404, 422)}}},
            "/v1/quarantine": {"get": {
                **read, "summary": "Quarantine counts and rows (read scope)",
                "parameters": [division, _param("table", "query", "only this table"), limit],
                "responses": {"200": _answer("counts and rows"),
                              **_problems(401, 403, 404, 422)}}},
            "/v1/quarantine/replay": {"post": {
                **read, "summary": "Re-drive quarantined rows (replay scope)",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": _REF.format(name="QuarantineSelection")}}}},
                "responses": {"202": _answer("re-driven", "Replayed"),
                              **_problems(401, 403, 422)}}},
            "/v1/status.html": {"get": {**read, "summary": "The status page's live part",
                                        "responses": {"200": _answer("HTML")}}},
            "/metrics": {"get": {**read, "summary": "Prometheus metrics (read scope)",
                                 "responses": {"200": _answer("text exposition")}}},
            "/healthz": {"get": {"summary": "Redis and PostgreSQL reachable",
                                 "responses": {"200": _answer("ok"), **_problems(503)}}},
            "/readyz": {"get": {"summary": "Started and healthy",
                                "responses": {"200": _answer("ok"), **_problems(503)}}},
            "/": {"get": {"summary": "The status page", "responses": {"200": _answer("HTML")}}},
        },
    }
