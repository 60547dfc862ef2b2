"""SignedUrlVerifier: the signed-URL routes' one check, its expiry by the Clock port."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from heimdex.adapters.auth.url_signing import HmacUrlSigner
from heimdex.application.signed_urls import Refusals, SignedUrlVerifier
from heimdex.domain.errors import InvalidUrlSignature, UrlExpired
from tests.unit.fakes import FakeClock

START = datetime(2026, 1, 1, tzinfo=UTC)
EXPIRES = int(START.timestamp()) + 60
PATH = "/v1/files/thumbnails/acme/a.jpg"
REFUSALS = Refusals(
    invalid=InvalidUrlSignature,
    expired=UrlExpired,
    name="this URL",
    unsigned_hint="ask for a fresh one",
    expired_hint="ask for a fresh one",
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def verifier(clock: FakeClock) -> SignedUrlVerifier:
    return SignedUrlVerifier(HmacUrlSigner("secret"), clock)


def query(expires: int = EXPIRES, org: str = "acme") -> dict[str, str]:
    signature = HmacUrlSigner("secret").sign("GET", PATH, org, expires)
    return {"org": org, "expires": str(expires), "signature": signature}


def test_a_signed_url_is_valid_until_its_expiry_by_the_clock(
    verifier: SignedUrlVerifier, clock: FakeClock
) -> None:
    signed = verifier.verify("GET", PATH, query(), REFUSALS)
    assert (signed.org_id, signed.seconds_left) == ("acme", 60)
    clock.advance(seconds=59.5)
    assert verifier.verify("GET", PATH, query(), REFUSALS).seconds_left == 1
    clock.advance(seconds=0.5)
    with pytest.raises(UrlExpired, match="this URL has expired; ask for a fresh one"):
        verifier.verify("GET", PATH, query(), REFUSALS)


@pytest.mark.parametrize(
    ("tampered", "said"),
    [
        ({}, "is not signed"),
        ({"signature": "0" * 64}, "signature does not match"),
        ({"expires": str(EXPIRES + 1)}, "signature does not match"),
        ({"org": "other"}, "signature does not match"),
        ({"org": "../etc"}, "is not signed"),
        ({"expires": "²"}, "is not signed"),
        ({"expires": "9" * 5000}, "is not signed"),
    ],
)
def test_anything_else_is_refused_as_invalid(
    verifier: SignedUrlVerifier, tampered: dict[str, str], said: str
) -> None:
    carried = {**query(), **tampered} if tampered else {}
    with pytest.raises(InvalidUrlSignature, match=said):
        verifier.verify("GET", PATH, carried, REFUSALS)
    with pytest.raises(InvalidUrlSignature):  # another method or path: not what was signed
        verifier.verify("PUT", PATH, query(), REFUSALS)
