"""GET /v1/assets: the date-time filters are RFC 3339, strictly (found by fuzzing)."""

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
