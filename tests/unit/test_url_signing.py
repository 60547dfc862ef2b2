"""HmacUrlSigner: what a client can put in a signed URL's query string."""

from __future__ import annotations

import pytest

from heimdex.adapters.auth.url_signing import HmacUrlSigner


def test_its_own_signature_verifies_and_any_change_does_not() -> None:
    signer = HmacUrlSigner("secret")
    signature = signer.sign("GET", "/v1/files/a.jpg", "acme", 100)
    assert signer.verify("GET", "/v1/files/a.jpg", "acme", 100, signature)
    assert not signer.verify("GET", "/v1/files/a.jpg", "acme", 101, signature)
    assert not signer.verify("PUT", "/v1/files/a.jpg", "acme", 100, signature)


@pytest.mark.parametrize("signature", ["é", "~\u0096", "\udcff", "", "0" * 1000])
def test_a_signature_that_is_not_ours_is_refused_never_an_error(signature: str) -> None:
    # Found by the fuzzer: hmac.compare_digest raised TypeError on non-ASCII str (a 500).
    assert not HmacUrlSigner("secret").verify("GET", "/v1/files/a.jpg", "acme", 100, signature)
