from __future__ import annotations

import pytest

from heimdex.application.idempotency import fingerprint, is_remembered, validate_key
from heimdex.domain.errors import InvalidIdempotencyKey


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there", "line\nbreak"])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidIdempotencyKey) as caught:
        validate_key(key)
    assert caught.value.code == "invalid_idempotency_key"


@pytest.mark.parametrize("key", ["a", "x" * 255, "8e03978e-40d5-43e8-bc93-6894a57f9324"])
def test_good_keys_pass(key: str) -> None:
    assert validate_key(key) == key


def test_fingerprint_separates_method_path_and_body() -> None:
    base = fingerprint("POST", "/v1/ingest/init", b"{}")
    assert base == fingerprint("post", "/v1/ingest/init", b"{}")
    assert base != fingerprint("POST", "/v1/ingest/commit", b"{}")
    assert base != fingerprint("POST", "/v1/ingest/init", b"{ }")
    # length prefixes keep the parts apart: moving a byte between them changes the fingerprint
    assert fingerprint("POST", "/a", b"b") != fingerprint("POST", "/ab", b"")


@pytest.mark.parametrize(
    ("status", "remembered"),
    [
        (200, True),
        (201, True),
        (204, True),
        (404, True),
        (422, True),
        (413, True),
        (400, False),
        (401, False),
        (403, False),
        (409, False),
        (429, False),
        (500, False),
        (503, False),
    ],
)
def test_which_answers_are_remembered(status: int, remembered: bool) -> None:
    assert is_remembered(status) is remembered
