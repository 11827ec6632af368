"""Bearer tokens and request limits: the two middlewares in front of every route.

A token is known by its SHA-256 hash only (``http.tokens`` in config); the token itself is
never stored or logged. A request without a known token gets 401, except the health checks
and the status page's static shell (it holds no data and asks for a token). A token in the
query string is refused (it would end up in access logs and browser history). Routes ask
``require`` for the scope and division they need: 403 when the token lacks them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from urllib.parse import parse_qsl

import msgspec
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from assay.contracts.config import HttpToken
from assay.contracts.config import Scope as TokenScope
from assay.contracts.http import Problem

log = structlog.get_logger("assay.web")

PUBLIC = ("/", "/healthz", "/readyz", "/openapi.json", "/static/")
"""Paths served without a token ("/static/" is a prefix)."""
QUERY_SECRETS = {"token", "access_token", "api_key", "apikey", "auth", "authorization"}


def token_hash(token: str) -> str:
    """The hex SHA-256 of a token: what the config holds."""
    return hashlib.sha256(token.encode()).hexdigest()


def _public(path: str) -> bool:
    return path in PUBLIC or path.startswith("/static/")


async def problem(send: Send, status: int, error: str, detail: str,
                  headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = msgspec.json.encode(Problem(error=error, detail=detail))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class Limits:
    """Refuses oversized headers (431) and bodies announced larger than allowed (413)."""

    def __init__(self, app: ASGIApp, max_header_bytes: int, max_body_bytes: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if sum(len(k) + len(v) for k, v in headers) > self.max_header_bytes:
            await problem(send, 431, "headers_too_large",
                          f"request headers exceed {self.max_header_bytes} bytes")
            return
        for name, value in headers:
            if name == b"content-length" and (not value.isdigit()
                                              or int(value) > self.max_body_bytes):
                await problem(send, 413, "body_too_large",
                              f"the body may have up to {self.max_body_bytes} bytes")
                return
        await self.app(scope, receive, send)


class Auth:
    """Finds the request's token by its hash and puts it in ``scope['state']``."""

    def __init__(self, app: ASGIApp, tokens: Sequence[HttpToken]) -> None:
        self.app = app
        self.tokens = {t.sha256: t for t in tokens}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        if any(k.lower() in QUERY_SECRETS for k, _ in parse_qsl(query, keep_blank_values=True)):
            await problem(send, 400, "token_in_query",
                          "send the token in the Authorization header, never in the URL")
            return
        token = self._find(scope)
        if token is None and not _public(scope["path"]):
            log.info("http_unauthorized", path=scope["path"])
            await problem(send, 401, "unauthorized", "a valid bearer token is required",
                          [(b"www-authenticate", b'Bearer realm="assay"')])
            return
        scope.setdefault("state", {})["token"] = token
        await self.app(scope, receive, send)

    def _find(self, scope: Scope) -> HttpToken | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                kind, _, secret = value.decode("latin-1").partition(" ")
                if kind.lower() != "bearer" or not secret.strip():
                    return None
                digest = token_hash(secret.strip())
                for known, token in self.tokens.items():
                    if hmac.compare_digest(known, digest):
                        return token
                return None
        return None


def require(request: Request, scope: TokenScope, division: str | None = None) -> HttpToken:
    """The request's token if it has ``scope`` (and ``division``); else 401/403."""
    token: HttpToken | None = request.state.token
    if token is None:
        raise HTTPException(401, "a valid bearer token is required",
                            headers={"WWW-Authenticate": 'Bearer realm="assay"'})
    if scope not in token.scopes:
        raise HTTPException(403, f"token {token.name!r} lacks the {scope!r} scope")
    if division is not None and not allows(token, division):
        raise HTTPException(403, f"token {token.name!r} may not touch division {division!r}")
    return token


def allows(token: HttpToken, division: str) -> bool:
    return "*" in token.divisions or division in token.divisions


def visible(token: HttpToken, divisions: Sequence[str]) -> list[str]:
    """The divisions among ``divisions`` the token may see."""
    return [d for d in divisions if allows(token, d)]
