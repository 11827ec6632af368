"""JSON answers of the HTTP API: bodies from ``contracts.http``, errors as ``Problem``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from assay.contracts.http import Problem

NAMES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed"}


def json_response(status: int, body: msgspec.Struct | bytes | dict[str, Any],
                  headers: Mapping[str, str] | None = None) -> Response:
    data = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return Response(data, status, headers=headers, media_type="application/json")


def refuse(status: int, error: str, detail: str, path: str | None = None,
           headers: Mapping[str, str] | None = None) -> Response:
    return json_response(status, Problem(error=error, detail=detail, path=path), headers)


def problem_answer(request: Request, exc: Exception) -> Response:
    """Starlette's HTTP errors (ours from ``require``, its own 404/405) as ``Problem``s."""
    if not isinstance(exc, HTTPException):
        return refuse(500, "error", "internal error")
    return refuse(exc.status_code, NAMES.get(exc.status_code, "error"), str(exc.detail),
                  headers=exc.headers)
