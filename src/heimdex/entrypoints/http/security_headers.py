"""Headers every answer carries, whichever part of the stack made it (a route, a problem, a
routing 404 or 405, a body over its limit): set on the way out, under everything else.

- ``X-Content-Type-Options: nosniff``: a browser renders an answer only as its declared type,
  never as HTML it guessed from bytes a client uploaded.
- ``Cache-Control: no-store`` unless the route chose its own: answers carry one
  organisation's data (or say who may see it), and no shared cache or browser should keep
  them. A signed file says ``private, max-age`` up to its URL's expiry instead.
"""

from __future__ import annotations

from litestar.types import ASGIApp, Message, Receive, Scope, Send

_NOSNIFF = (b"x-content-type-options", b"nosniff")
_NO_STORE = (b"cache-control", b"no-store")


def with_security_headers(app: ASGIApp) -> ASGIApp:
    """``app`` whose every HTTP answer carries the headers above."""

    async def secured(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                if _NOSNIFF[0] not in names:
                    headers.append(_NOSNIFF)
                if _NO_STORE[0] not in names:
                    headers.append(_NO_STORE)
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_secured)

    return secured
