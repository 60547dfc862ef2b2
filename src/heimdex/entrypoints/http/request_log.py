"""One log line per request: request id, org id, route, status, duration — and the same route,
status and duration for the request metrics. Also sets ``X-Request-ID`` on every answer (the
caller's own when it sends a sane one)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Send

from heimdex.domain.model import Principal
from heimdex.logs import get_logger

log = get_logger("heimdex.request")
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")  # fullmatch: "$" passes a "\n"

# (method, route template or None when no route matched, status, seconds)
RequestObserver = Callable[[str, str | None, int, float], None]


def _request_id(scope: HTTPScope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(candidate):
                return candidate
    return uuid.uuid4().hex


async def log_request(
    app: ASGIApp,
    scope: HTTPScope,
    receive: Receive,
    send: Send,
    observe: RequestObserver | None = None,
) -> None:
    """Run ``app`` for one HTTP request and log how it went, whatever happened; ``observe``
    gets the same facts for the request metrics."""
    request_id = _request_id(scope)
    scope.setdefault("state", {})["request_id"] = request_id
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    status = 500

    async def send_with_id(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = list(message.get("headers", []))
            headers.append((b"x-request-id", request_id.encode()))
            message["headers"] = headers
        await send(message)

    try:
        await app(scope, receive, send_with_id)
    finally:
        seconds = time.perf_counter() - started
        user: Any = scope.get("user")
        route = scope.get("path_template") or None
        log.info(
            "request",
            request_id=request_id,
            method=scope["method"],
            path=scope["path"],
            route=route,
            status=status,
            duration_ms=round(seconds * 1000, 2),
            org_id=user.org_id if isinstance(user, Principal) else None,
        )
        if observe is not None:
            observe(scope["method"], route, status, seconds)
        structlog.contextvars.clear_contextvars()
