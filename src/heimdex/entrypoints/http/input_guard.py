"""What no request may carry, refused before any handler reads it.

- A NUL character (U+0000) anywhere a client's text can come from: the path, the query string,
  a header, any string (or key) of a JSON body. PostgreSQL's text types cannot hold one, and
  SQLite would store what PostgreSQL refuses; refusing it at the door answers the same
  ``nul_character`` problem on both, whatever the field.
- JSON nested deeper than ``MAX_JSON_DEPTH``. msgspec decodes recursively and stops at Python's
  recursion limit with a ``RecursionError``; no document of this API is more than a few levels
  deep, so the depth is counted on the raw bytes before decoding (``json_too_deep``).

``InputGuardMiddleware`` sits on every router that takes client input (all but liveness,
metrics and the schema); ``GuardedRequest`` is the app's request class, so every JSON body any
handler decodes goes through it. ``documented()`` declares both codes on every route.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Request
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Empty, Receive, Scope, Send

from heimdex.domain.errors import JsonTooDeep, NulCharacter

#: arrays and objects inside one another; the deepest document of this API has three
MAX_JSON_DEPTH = 32

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(rb"[^\[\]{}]")
_OPENING = frozenset(b"[{")


def check_json_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse a JSON text whose arrays and objects nest deeper than ``limit``.

    Counting the opening brackets is enough for almost every body; only one with more of
    them than ``limit`` is scanned, strings (which may hold brackets) removed first."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return
    depth = 0
    for byte in _NOT_A_BRACKET.sub(b"", _STRING.sub(b"", body)):
        if byte in _OPENING:
            depth += 1
            if depth > limit:
                raise JsonTooDeep(f"the JSON body nests more than {limit} levels")
        else:
            depth -= 1


def refuse_nul_in(value: Any, where: str = "the JSON body") -> None:
    """Refuse a NUL in any string or key of a decoded JSON value (depth already bounded)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise NulCharacter(f"{where} carries a NUL character (\\u0000)")
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_nul_in(key, where)
            refuse_nul_in(item, where)
    elif isinstance(value, list):
        for item in value:
            refuse_nul_in(item, where)


class GuardedRequest(Request[Any, Any, Any]):
    """Litestar's request whose JSON body is checked before and after decoding."""

    async def json(self) -> Any:
        if self._json is Empty and self._connection_state.json is Empty:
            check_json_depth(await self.body())
            value = await super().json()
            refuse_nul_in(value)
            return value
        return await super().json()


def refuse_nul_in_scope(scope: Scope) -> None:
    """Refuse a NUL in the (decoded) path, the query string (raw or ``%00``) or a header."""
    if "\x00" in scope["path"]:
        raise NulCharacter("the path carries a NUL character")
    query = scope.get("query_string", b"")
    if b"\x00" in query or b"%00" in query:
        raise NulCharacter("the query string carries a NUL character (%00)")
    for name, value in scope.get("headers", []):
        if b"\x00" in name:
            raise NulCharacter("a header name carries a NUL character")
        if b"\x00" in value:
            raise NulCharacter(f"the header {name.decode('latin-1')!r} carries a NUL character")


class InputGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            refuse_nul_in_scope(scope)
        await self.app(scope, receive, send)
