"""GET /v1/assets: the date-time filters are RFC 3339, strictly (found by fuzzing); `sha256` is
64 hex digits exactly."""

from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.fixtures.app import TokenFactory, bearer


@pytest.mark.parametrize("name", ["created_after", "created_before"])
@pytest.mark.parametrize("value", ["0.5", "1700000000", "yesterday"])
async def test_a_bare_number_is_not_a_date_time(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, name: str, value: str
) -> None:
    response = await client.get(
        "/v1/assets", params={name: value}, headers=bearer(make_token(org_a))
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"
    assert name in response.json()["detail"]


async def test_an_rfc3339_date_time_filters(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    response = await client.get(
        "/v1/assets",
        params={
            "created_after": "2000-01-01T00:00:00Z",
            "created_before": "2999-01-01T00:00:00+02:00",
        },
        headers=bearer(make_token(org_a)),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "value",
    ["abc", "g" * 64, "ab" * 32 + "\n", "ab" * 32 + "0", " " + "ab" * 32, ""],
    ids=["short", "not-hex", "newline", "long", "space", "empty"],
)
async def test_sha256_is_64_hex_digits_exactly(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, value: str
) -> None:
    response = await client.get(
        "/v1/assets", params={"sha256": value}, headers=bearer(make_token(org_a))
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "invalid_request"
    assert "sha256" in response.text
