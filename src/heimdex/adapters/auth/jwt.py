"""``JwtCodec``: verifies bearer tokens (and mints development ones) with PyJWT.

One algorithm is pinned, so ``alg: none`` and key-confusion tokens are refused by PyJWT itself.
``exp``/``nbf`` are checked when present (by PyJWT, against the system time, as every other
validator of the token does); production also requires ``exp``. Minted tokens take their times
from the ``Clock``.

A verified token is remembered until its ``exp`` (by the system time, like PyJWT's check), keyed
on the exact token string, so a client's next request with it costs a dictionary look-up
instead of an HMAC and three base64/JSON decodes. Only tokens that verified and carry an ``exp``
are kept (one without would be remembered for ever), at most ``cache_size`` of them: past that,
the oldest is forgotten. A token that fails is never kept, so no client can fill the cache
without tokens the identity provider signed.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import jwt
from jwt.warnings import InsecureKeyLengthWarning

from heimdex.adapters.clock import SystemClock
from heimdex.domain.errors import Unauthenticated
from heimdex.domain.model import Principal
from heimdex.domain.ports import Clock
from heimdex.domain.storage_keys import is_valid_org_id


class JwtCodec:
    """Turns a bearer token into a ``Principal``; any flaw is ``Unauthenticated``."""

    def __init__(
        self,
        secret: str,
        *,
        algorithm: str = "HS256",
        require_exp: bool = False,
        leeway_seconds: float = 30.0,
        clock: Clock | None = None,
        cache_size: int = 4096,
    ) -> None:
        if not secret.strip():
            # PyJWT would refuse it on every request (a 500 each): refuse it once, at start-up.
            raise ValueError("the JWT secret is empty")
        self._secret = secret
        self._algorithm = algorithm
        self._require = ["exp"] if require_exp else []
        self._leeway = leeway_seconds
        self._clock: Clock = clock or SystemClock()
        self._cache_size = cache_size
        #: token -> (its principal, its exp in epoch seconds); insertion order is age
        self._verified: dict[str, tuple[Principal, float]] = {}

    @property
    def cached(self) -> int:
        """How many verified tokens are remembered now."""
        return len(self._verified)

    @contextmanager
    def _quiet_short_key(self) -> Iterator[None]:
        # The settings refuse a short secret in production and warn once at start-up in
        # development; PyJWT would otherwise warn again on every request.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            yield

    def decode(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known[1]:
                return known[0]
            del self._verified[token]  # expired: verified again below (the leeway may apply)
        principal, expires = self._verify(token)
        if expires is not None and self._cache_size > 0:
            if len(self._verified) >= self._cache_size:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float | None]:
        try:
            with self._quiet_short_key():
                claims: dict[str, Any] = jwt.decode(
                    token,
                    self._secret,
                    algorithms=[self._algorithm],
                    options={"require": self._require, "verify_aud": False},
                    leeway=self._leeway,
                )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Unauthenticated("the token is not valid yet (nbf)") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the token lacks the required claim {exc.claim!r}") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the token is not valid: {exc}") from exc
        org_id = claims.get("org_id")
        if not isinstance(org_id, str) or not org_id:
            raise Unauthenticated("the token lacks the required claim 'org_id'")
        if not is_valid_org_id(org_id):
            raise Unauthenticated("the token's org_id is not a valid organisation id")
        subject = claims.get("sub")
        principal = Principal(
            org_id=org_id,
            subject=subject if isinstance(subject, str) else None,
            scopes=_scopes(claims),
        )
        exp = claims.get("exp")  # PyJWT checked it is a number when present
        expires = float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
        return principal, expires

    def mint(
        self,
        org_id: str,
        *,
        scopes: Iterable[str] = (),
        subject: str | None = None,
        ttl_seconds: int | None = 3600,
    ) -> str:
        """A token the way an identity provider would issue it (used by ``heimdex token``)."""
        now = int(self._clock.now().timestamp())
        claims: dict[str, Any] = {"org_id": org_id, "iat": now}
        scope_list = sorted(set(scopes))
        if scope_list:
            claims["scopes"] = scope_list
        if subject:
            claims["sub"] = subject
        if ttl_seconds is not None:
            claims["exp"] = now + ttl_seconds
        with self._quiet_short_key():
            return jwt.encode(claims, self._secret, algorithm=self._algorithm)


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    """``scopes`` as a list, or OAuth's space-separated ``scope`` string; anything else is none."""
    raw = claims.get("scopes", claims.get("scope"))
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list):
        return frozenset(s for s in raw if isinstance(s, str))
    return frozenset()
