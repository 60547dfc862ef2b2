"""The Idempotency-Key protocol: same key and body → the first answer again; same key, other
body → refused; a duplicate while the first runs → refused; a crashed claim's lease runs out."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from heimdex.domain.errors import (
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
)
from heimdex.domain.idempotency import (
    MAX_KEY_LENGTH,
    ClaimOutcome,
    ClaimWindow,
    IdempotencyClaim,
    IdempotencyScope,
    StoredResponse,
)
from heimdex.domain.ports import Clock, IdempotencyStore

# Answers that a retry of the same request would get again are remembered. Everything else —
# validation (400), auth (401/403), state conflicts (409), rate limits, server errors — is
# forgotten, so the corrected or later retry with the same key runs.
_REMEMBERED_ERRORS = frozenset({404, 410, 413, 415, 422})


def validate_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
    if not key.isascii() or not key.isprintable():
        raise InvalidIdempotencyKey("Idempotency-Key must be printable ASCII")
    return key


def fingerprint(method: str, route: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.upper().encode(), route.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def is_remembered(status: int) -> bool:
    return status < 400 or status in _REMEMBERED_ERRORS


class IdempotencyService:
    def __init__(
        self, store: IdempotencyStore, clock: Clock, ttl: timedelta, lease: timedelta
    ) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl
        self._lease = lease

    async def begin(self, scope: IdempotencyScope, body_fingerprint: str) -> IdempotencyClaim:
        """``CLAIMED``: run the request; ``REPLAY``: answer ``claim.response``. Raises for a
        reused key or one still in flight."""
        now = self._clock.now()
        window = ClaimWindow(now=now, lease_until=now + self._lease, expires_at=now + self._ttl)
        claim = await self._store.claim(scope, body_fingerprint, window)
        if claim.outcome is ClaimOutcome.MISMATCH:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different request body; use a new key"
            )
        if claim.outcome is ClaimOutcome.IN_FLIGHT:
            raise IdempotencyKeyInFlight(
                "a request with this Idempotency-Key is still running; retry later"
            )
        return claim

    async def finish(self, scope: IdempotencyScope, response: StoredResponse) -> None:
        if is_remembered(response.status):
            await self._store.complete(scope, response)
        else:
            await self._store.release(scope)

    async def abandon(self, scope: IdempotencyScope) -> None:
        """The request died without an answer: free the key for a retry."""
        await self._store.release(scope)
