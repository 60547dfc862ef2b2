"""``Idempotency-Key`` on every POST, PUT and DELETE under /v1 (after authentication).

The first answer is stored and replayed (with ``Idempotent-Replayed: true``) for the same key and
request; the protocol's rules live in ``heimdex.application.idempotency``.
"""

from __future__ import annotations

import anyio
from litestar.enums import ScopeType
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import ASGIApp, HTTPRequestEvent, Message, Receive, ReceiveMessage, Scope, Send

from heimdex.application.idempotency import IdempotencyService, fingerprint, validate_key
from heimdex.domain.errors import DatabaseUnavailable
from heimdex.domain.idempotency import ClaimOutcome, IdempotencyScope, StoredResponse
from heimdex.entrypoints.http.auth import current_principal_from_scope
from heimdex.entrypoints.http.problems import request_body_limit
from heimdex.logs import get_logger

log = get_logger(__name__)

HEADER = b"idempotency-key"
_KEPT_HEADERS = frozenset({"content-type", "location"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _read_body(receive: Receive, limit: int | None) -> bytes:
    """The whole body, refused past the route's ``request_max_body_size`` (413) as the handler
    itself would: JSON documents here are small (``HEIMDEX_MAX_JSON_BODY_BYTES``)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body)
        body += message.get("body", b"")
        if limit is not None and len(body) > limit:
            raise RequestEntityTooLarge
        if not message.get("more_body", False):
            return bytes(body)


async def _send_stored(send: Send, response: StoredResponse) -> None:
    headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
    headers += [
        (b"content-length", str(len(response.body)).encode()),
        (b"idempotent-replayed", b"true"),
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, *, idempotency: IdempotencyService) -> None:
        self.app = app
        self.idempotency = idempotency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] not in ("POST", "PUT", "DELETE"):
            await self.app(scope, receive, send)
            return
        raw_key = _header(scope, HEADER)
        if raw_key is None:
            await self.app(scope, receive, send)
            return
        key = validate_key(raw_key)
        principal = current_principal_from_scope(scope)
        body = await _read_body(receive, request_body_limit(scope))
        idempotency = self.idempotency
        claim_scope = IdempotencyScope(
            org_id=principal.org_id,
            method=scope["method"],
            route=scope.get("path_template") or scope["path"],
            key=key,
        )
        claim = await idempotency.begin(
            claim_scope, fingerprint(scope["method"], scope["path"], body)
        )
        if claim.outcome is ClaimOutcome.REPLAY and claim.response is not None:
            await _send_stored(send, claim.response)
            return

        replayed = False

        async def receive_body() -> ReceiveMessage:
            nonlocal replayed
            if not replayed:
                replayed = True
                event: HTTPRequestEvent = {"type": "http.request", "body": body, "more_body": False}
                return event
            return await receive()

        status: int | None = None
        headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    text = name.decode("latin-1").lower()
                    if text in _KEPT_HEADERS:
                        headers[text] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_body, capture)
        except BaseException:
            with anyio.CancelScope(shield=True):  # free the key even when cancelled
                await idempotency.abandon(claim_scope)
            raise
        if status is None:
            await idempotency.abandon(claim_scope)
            return
        try:
            await idempotency.finish(
                claim_scope, StoredResponse(status=status, headers=headers, body=b"".join(chunks))
            )
        except DatabaseUnavailable as exc:
            # The answer is already with the client; only its record is lost (the database
            # went away meanwhile). The claim is freed after its lease, like a dead request's.
            log.warning(
                "idempotency_answer_not_recorded", route=claim_scope.route, error=exc.message
            )
