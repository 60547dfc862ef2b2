"""The token codec against real PyJWT-encoded tokens."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import jwt
import pytest

from heimdex.adapters.auth.jwt import JwtCodec
from heimdex.domain.errors import Unauthenticated
from tests.unit.fakes import FakeClock

SECRET = "s" * 64


def encode(claims: dict[str, object], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def unsigned(claims: dict[str, object]) -> str:
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_decodes_org_scopes_and_subject() -> None:
    principal = JwtCodec(SECRET).decode(
        encode({"org_id": "acme", "scopes": ["admin", "read"], "sub": "u1"})
    )
    assert principal.org_id == "acme"
    assert principal.scopes == frozenset({"admin", "read"})
    assert principal.subject == "u1"


def test_accepts_the_oauth_space_separated_scope_claim() -> None:
    principal = JwtCodec(SECRET).decode(encode({"org_id": "acme", "scope": "admin read"}))
    assert principal.has_scope("admin")


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (unsigned({"org_id": "acme"}), "alg none"),
        (encode({"org_id": "acme"}, secret="t" * 64), "wrong signature"),
        (encode({"org_id": "acme", "exp": int(time.time()) - 3600}), "expired"),
        (encode({"org_id": "acme", "nbf": int(time.time()) + 3600}), "not yet valid"),
        (encode({"sub": "u1"}), "no org_id"),
        (encode({"org_id": ""}), "empty org_id"),
        (encode({"org_id": "../etc"}), "org_id not usable"),
        (encode({"org_id": "acme\n"}), "org_id with a trailing newline (another tenant)"),
        (encode({"org_id": 42}), "org_id not a string"),
        (encode({"org_id": "acme"}, algorithm="HS512"), "another algorithm"),
        ("not-a-jwt", "garbage"),
    ],
)
def test_refuses_bad_tokens(token: str, reason: str) -> None:
    with pytest.raises(Unauthenticated):
        JwtCodec(SECRET).decode(token)


def test_exp_is_required_only_when_asked() -> None:
    token = encode({"org_id": "acme"})
    assert JwtCodec(SECRET).decode(token).org_id == "acme"
    with pytest.raises(Unauthenticated, match="exp"):
        JwtCodec(SECRET, require_exp=True).decode(token)


def test_leeway_tolerates_small_clock_skew() -> None:
    token = encode({"org_id": "acme", "exp": int(time.time()) - 5})
    assert JwtCodec(SECRET, leeway_seconds=30).decode(token).org_id == "acme"
    with pytest.raises(Unauthenticated):
        JwtCodec(SECRET, leeway_seconds=0).decode(token)


def test_minted_tokens_round_trip_and_expire() -> None:
    # The clock is fixed (at a whole second of the present, so PyJWT's own exp check passes).
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    codec = JwtCodec(SECRET, clock=clock)
    token = codec.mint("acme", scopes=["admin"], ttl_seconds=60)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["org_id"] == "acme"
    assert claims["scopes"] == ["admin"]
    assert claims["iat"] == clock.now().timestamp()
    assert claims["exp"] == claims["iat"] + 60
    assert codec.decode(token).has_scope("admin")


# -- the verified-token cache ----------------------------------------------------------------
def test_a_verified_token_is_remembered_until_its_exp_and_then_refused() -> None:
    codec = JwtCodec(SECRET, leeway_seconds=0)
    token = encode({"org_id": "acme", "exp": int(time.time()) + 2})
    assert codec.decode(token).org_id == "acme"
    assert codec.cached == 1
    assert codec.decode(token).org_id == "acme"  # from the cache
    time.sleep(max(0.0, int(time.time()) + 2 - time.time()) + 1.05)  # past exp
    with pytest.raises(Unauthenticated, match="expired"):
        codec.decode(token)
    assert codec.cached == 0


def test_the_cache_is_keyed_on_the_exact_token() -> None:
    codec = JwtCodec(SECRET)
    token = encode({"org_id": "acme", "exp": int(time.time()) + 3600})
    codec.decode(token)
    head, body, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(Unauthenticated):
        codec.decode(f"{head}.{body}.{flipped}")  # not the cached token: verified, and refused
    other = encode({"org_id": "other", "exp": int(time.time()) + 3600})
    assert codec.decode(other).org_id == "other"
    assert codec.decode(token).org_id == "acme"


def test_refused_and_exp_less_tokens_are_never_kept_and_the_cache_is_bounded() -> None:
    codec = JwtCodec(SECRET, cache_size=3)
    for bad in (encode({"org_id": "acme"}, secret="t" * 64), "not-a-jwt"):
        with pytest.raises(Unauthenticated):
            codec.decode(bad)
    codec.decode(encode({"org_id": "acme"}))  # valid, but no exp: would be kept for ever
    assert codec.cached == 0
    tokens = [encode({"org_id": f"org-{i}", "exp": int(time.time()) + 3600}) for i in range(5)]
    for token in tokens:
        codec.decode(token)
        assert codec.cached <= 3
    assert codec.cached == 3
    # The oldest were forgotten, and are still verified (and accepted) when they come back.
    assert codec.decode(tokens[0]).org_id == "org-0"
    assert codec.cached == 3


def test_a_cache_of_zero_keeps_nothing() -> None:
    codec = JwtCodec(SECRET, cache_size=0)
    codec.decode(encode({"org_id": "acme", "exp": int(time.time()) + 3600}))
    assert codec.cached == 0
