"""Bearer-token authentication for ``/v1`` and the scope guard."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import structlog
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp, Scope

from heimdex.application.tenancy import ensure_scope
from heimdex.domain.errors import Unauthenticated
from heimdex.domain.model import Principal


# Runtime-checkable: Litestar checks a dependency's value against the handler's annotation.
@runtime_checkable
class TokenDecoder(Protocol):
    """Bearer tokens to principals (the JWT codec); raises ``Unauthenticated`` for a bad one."""

    def decode(self, token: str) -> Principal: ...


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Verifies ``Authorization: Bearer <jwt>`` with the app's token codec (``tokens``, given
    where the middleware is declared: ``DefineMiddleware(BearerAuthMiddleware, tokens=…)``)."""

    def __init__(self, app: ASGIApp, *, tokens: TokenDecoder) -> None:
        super().__init__(app)
        self._tokens = tokens

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("send a bearer token: 'Authorization: Bearer <jwt>'")
        principal = self._tokens.decode(token.strip())
        structlog.contextvars.bind_contextvars(org_id=principal.org_id)
        return AuthenticationResult(user=principal, auth=token)


def require_scope(scope: str) -> Any:
    """A guard that answers 403 ``insufficient_scope`` unless the token carries ``scope``."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        ensure_scope(current_principal(connection), scope)

    return guard


def current_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    return current_principal_from_scope(connection.scope)


def current_principal_from_scope(scope: Scope) -> Principal:
    user = scope.get("user")
    if not isinstance(user, Principal):
        raise Unauthenticated("authentication required")
    return user
