"""OPTIONS names every method of a path, whichever handler registered first (found by fuzzing:
``/v1/assets/{id}`` answered ``Allow: DELETE, OPTIONS`` without its GET)."""

from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

ASSET = "/v1/assets/e3e70682-c209-1cac-a29f-6fbed82c07cd"


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        (ASSET, {"DELETE", "GET", "OPTIONS"}),
        (f"{ASSET}/sidecar", {"GET", "OPTIONS", "POST"}),
        ("/v1/assets", {"GET", "OPTIONS"}),
    ],
)
async def test_options_and_405_name_the_same_methods(
    client: AsyncTestClient[Litestar], path: str, methods: set[str]
) -> None:
    options = await client.options(path)
    assert options.status_code == 204
    assert set(options.headers["allow"].split(", ")) == methods
    refused = await client.patch(path)
    assert refused.status_code == 405
    assert set(refused.headers["allow"].split(", ")) == methods
