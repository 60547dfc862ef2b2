"""Per-organisation rate limits on the bearer-token routes under /v1 (after authentication).

Each request takes a token from its organisation's bucket (``RateLimiter``). Allowed answers
carry ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset``; a refusal is 429
``rate_limited`` with ``Retry-After`` in whole seconds. Which routes are limited, and why the
others are not, is in docs/security.md (*Limits*).
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from heimdex.domain.errors import RateLimited
from heimdex.domain.ports import RateLimiter
from heimdex.domain.rate_limit import RateDecision
from heimdex.entrypoints.http.auth import current_principal_from_scope


def rate_limit_headers(decision: RateDecision) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset_seconds),
    }


class RateLimitMiddleware:
    """``limiter``: the process's buckets, or ``None`` when rates are not limited."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter | None) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self.limiter
        # No principal: a request the auth middleware lets through unauthenticated (OPTIONS,
        # say) is not a tenant's to count; the handler refuses what needs a token.
        if scope["type"] != ScopeType.HTTP or limiter is None or scope.get("user") is None:
            await self.app(scope, receive, send)
            return
        principal = current_principal_from_scope(scope)
        decision = await limiter.acquire(principal.org_id)
        headers = rate_limit_headers(decision)
        if not decision.allowed:
            raise RateLimited(
                f"more than {decision.limit} requests at once or the sustained rate for this "
                f"organisation; retry after {decision.retry_after_seconds} s",
                retry_after=decision.retry_after_seconds,
                headers=headers,
            )
        encoded = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *encoded]
            await send(message)

        await self.app(scope, receive, send_with_headers)
