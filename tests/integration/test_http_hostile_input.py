"""No 500s from input, on SQLite and PostgreSQL: date-times that overflow once converted to UTC
(in a filter or a forged cursor), JSON nested past Python's recursion limit, NUL characters
anywhere a client's text comes from, and numbers past what the database stores. Each is a typed
400 problem."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.fixtures.app import TokenFactory, bearer, init_upload

Client = AsyncTestClient[Litestar]

# A valid local time whose offset moves it past year 1 or year 9999 in UTC.
OVERFLOWING = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]


@pytest.fixture
def settings_overrides(database_url: str) -> dict[str, Any]:
    """Both backends; the legacy route on, so it is reached too."""
    return {"database_url": database_url, "enable_legacy": True}


def _cursor(created_at: str) -> str:
    raw = json.dumps({"created_at": created_at, "id": str(uuid.uuid4())}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _assert_problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code, response.text


async def _json_operations(client: Client) -> list[tuple[str, str]]:
    """Every (method, path) of the served document that takes a JSON body, path parameters
    filled with a fresh id: the guard must hold on each, including ones added later."""
    document = (await client.get("/schema/openapi.json")).json()
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            content = (operation.get("requestBody") or {}).get("content", {})
            if "application/json" in content:
                filled = path
                for parameter in operation.get("parameters", []):
                    if parameter["in"] == "path":
                        filled = filled.replace("{" + parameter["name"] + "}", str(uuid.uuid4()))
                found.append((method.upper(), filled))
    assert len(found) >= 4, found  # init, commit, probe, sidecar at least
    return found


# Every listing that filters by creation time: the class, not only the first route found.
LISTINGS = ["/v1/assets", "/v1/jobs"]


@pytest.mark.parametrize("listing", LISTINGS)
@pytest.mark.parametrize("name", ["created_after", "created_before"])
@pytest.mark.parametrize("value", OVERFLOWING)
async def test_a_filter_date_time_that_overflows_in_utc_is_400(
    client: Client, make_token: TokenFactory, org_a: str, listing: str, name: str, value: str
) -> None:
    response = await client.get(listing, params={name: value}, headers=bearer(make_token(org_a)))
    _assert_problem(response, 400, "timestamp_out_of_range")
    assert name in response.json()["detail"]


@pytest.mark.parametrize("listing", LISTINGS)
@pytest.mark.parametrize("value", OVERFLOWING)
async def test_a_forged_cursor_whose_date_time_overflows_in_utc_is_400(
    client: Client, make_token: TokenFactory, org_a: str, listing: str, value: str
) -> None:
    response = await client.get(
        listing, params={"cursor": _cursor(value)}, headers=bearer(make_token(org_a))
    )
    _assert_problem(response, 400, "timestamp_out_of_range")


async def test_date_times_with_offsets_still_filter_in_utc(
    client: Client, make_token: TokenFactory, org_a: str
) -> None:
    """The edges themselves are fine, and so is a cursor carrying an offset."""
    headers = bearer(make_token(org_a))
    for params in (
        {"created_after": "0001-01-01T00:00:00Z", "created_before": "9999-12-31T23:59:59Z"},
        {"created_after": "0001-01-01T01:00:00+01:00"},
        {"cursor": _cursor("2020-01-01T00:00:00+05:00")},
    ):
        response = await client.get("/v1/assets", params=params, headers=headers)
        assert response.status_code == 200, (params, response.text)


@pytest.mark.parametrize("depth", [1_000, 10_000])
async def test_json_nested_past_the_limit_is_400_on_every_json_route(
    client: Client, make_token: TokenFactory, org_a: str, depth: int
) -> None:
    """msgspec decodes recursively: nested past Python's recursion limit it raised
    RecursionError, a 500, on every JSON-body route (with or without an Idempotency-Key)."""
    headers = {**bearer(make_token(org_a, ["admin"])), "Content-Type": "application/json"}
    bodies = ["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth]
    for method, path in await _json_operations(client):
        for index, body in enumerate(bodies):
            for extra in ({}, {"Idempotency-Key": f"deep-{depth}-{index}-{method}{path}"}):
                response = await client.request(
                    method, path, content=body, headers={**headers, **extra}
                )
                _assert_problem(response, 400, "json_too_deep")


async def test_json_a_little_deep_or_with_brackets_in_strings_is_not_refused_as_too_deep(
    client: Client, make_token: TokenFactory, org_a: str
) -> None:
    headers = bearer(make_token(org_a))
    brackets = "[{" * 500
    response = await client.post(
        "/v1/ingest/init",
        json={"source_name": f"{brackets}.mp4", "content_type": "video/mp4", "content_length": 1},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    response = await client.post(
        "/v1/ingest/commit", json={"upload_id": [[[[[[[[1]]]]]]]]}, headers=headers
    )
    _assert_problem(response, 400, "invalid_request")


async def test_the_legacy_route_answers_deep_json_and_nul_with_a_4xx(
    client: Client, make_token: TokenFactory, org_a: str
) -> None:
    deep = "[" * 5000 + "]" * 5000
    response = await client.post(
        "/metadata", content=deep, headers={"Content-Type": "application/json"}
    )
    _assert_problem(response, 400, "invalid_request")
    response = await client.post(
        "/metadata",
        content=b"--b\r\nContent-Disposition: form-data; name=file; filename=a\r\n\r\nx\r\n--b--",
        headers={"Content-Type": "multipart/form-data; boundary=b", "X-Note": "a\x00b"},
    )
    _assert_problem(response, 400, "nul_character")


async def test_a_nul_in_a_query_parameter_is_400(
    client: Client, make_token: TokenFactory, org_a: str
) -> None:
    headers = bearer(make_token(org_a))
    for query in ("codec=%00", "codec=h264%00", "cursor=%00", "status=ready%00"):
        response = await client.get(f"/v1/assets?{query}", headers=headers)
        _assert_problem(response, 400, "nul_character")


async def test_a_nul_in_any_json_string_or_key_is_400_on_every_json_route(
    client: Client, make_token: TokenFactory, org_a: str
) -> None:
    headers = bearer(make_token(org_a, ["admin"]))
    for method, path in await _json_operations(client):
        for body in ({"a": "\x00"}, {"a\x00": 1}, [["x\x00y"]]):
            response = await client.request(method, path, json=body, headers=headers)
            _assert_problem(response, 400, "nul_character")


@pytest.mark.parametrize(
    "body",
    [
        {"source_uri": "file:///uploads/a\x00b"},
        {"source_uri": "\x00"},
    ],
)
async def test_a_nul_in_a_source_uri_is_400(
    client: Client, make_token: TokenFactory, org_a: str, body: dict[str, Any]
) -> None:
    response = await client.post("/v1/ingest/probe", json=body, headers=bearer(make_token(org_a)))
    _assert_problem(response, 400, "nul_character")


@pytest.mark.parametrize(
    ("field", "value"),
    [("source_name", "clip\x00.mp4"), ("content_type", "video/mp4\x00"), ("sha256", "\x00" * 64)],
)
async def test_a_nul_in_an_init_field_is_400_and_nothing_is_stored(
    client: Client, make_token: TokenFactory, org_a: str, field: str, value: str
) -> None:
    headers = bearer(make_token(org_a))
    body = {"source_name": "clip.mp4", "content_type": "video/mp4", "content_length": 10}
    response = await client.post("/v1/ingest/init", json={**body, field: value}, headers=headers)
    _assert_problem(response, 400, "nul_character")
    listing = await client.get("/v1/assets", headers=headers)
    assert listing.json()["items"] == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Idempotency-Key", "key\x00"),
        ("X-Request-ID", "id\x00"),
        ("Content-Type", "application/json\x00"),
    ],
)
async def test_a_nul_in_a_header_is_400(
    client: Client, make_token: TokenFactory, org_a: str, name: str, value: str
) -> None:
    headers = {**bearer(make_token(org_a)), name: value}
    response = await client.post(
        "/v1/ingest/commit", content=json.dumps({"upload_id": str(uuid.uuid4())}), headers=headers
    )
    _assert_problem(response, 400, "nul_character")


async def test_a_nul_in_the_token_is_refused_as_unauthenticated(client: Client) -> None:
    """Authentication answers first, so a client without a token learns nothing more."""
    response = await client.get("/v1/assets?codec=%00", headers={"Authorization": "Bearer a\x00b"})
    _assert_problem(response, 401, "unauthenticated")


async def test_a_nul_in_a_path_or_an_upload_header_is_400(
    client: Client, make_token: TokenFactory, org_a: str, tmp_path: Any
) -> None:
    token = make_token(org_a)
    response = await client.get("/v1/files/a%00b.jpg?org=x&expires=1&signature=y")
    _assert_problem(response, 400, "nul_character")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"0" * 10)
    init = await init_upload(client, token, clip)
    response = await client.put(
        init["upload_url"],
        content=clip.read_bytes(),
        headers={**init["headers"], "Content-Type": "video/mp4\x00"},
    )
    _assert_problem(response, 400, "nul_character")


@pytest.mark.parametrize("value", ["2147483648", "99999999999999999999"])
async def test_a_min_height_past_32_bits_is_400(
    client: Client, make_token: TokenFactory, org_a: str, value: str
) -> None:
    """Heights are 32-bit integers in the database: a larger one overflowed there, a 500."""
    response = await client.get(
        "/v1/assets", params={"min_height": value}, headers=bearer(make_token(org_a))
    )
    _assert_problem(response, 400, "invalid_request")
    ok = await client.get(
        "/v1/assets", params={"min_height": "2147483647"}, headers=bearer(make_token(org_a))
    )
    assert ok.status_code == 200, ok.text
