"""The bearer guard on /v1 and the admin scope, with real tokens through real HTTP handling."""

from __future__ import annotations

import base64
import json
import time

import jwt
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.fixtures.app import TokenFactory, bearer

ADMIN_HEALTH = "/v1/admin/health"


def assert_problem(response_json: dict[str, object], status: int, code: str) -> None:
    assert response_json["status"] == status
    assert response_json["code"] == code
    assert response_json["type"] == f"urn:heimdex:problem:{code}"
    assert isinstance(response_json["title"], str)


async def test_liveness_needs_no_token(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_admin_health_without_a_token_is_401_problem(
    client: AsyncTestClient[Litestar],
) -> None:
    response = await client.get(ADMIN_HEALTH)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert_problem(response.json(), 401, "unauthenticated")


async def test_admin_health_without_the_admin_scope_is_403(
    client: AsyncTestClient[Litestar], make_token: TokenFactory
) -> None:
    response = await client.get(ADMIN_HEALTH, headers=bearer(make_token(scopes=["read"])))
    assert response.status_code == 403
    assert_problem(response.json(), 403, "insufficient_scope")


async def test_admin_health_with_the_admin_scope_reports_every_dependency(
    client: AsyncTestClient[Litestar], make_token: TokenFactory
) -> None:
    response = await client.get(ADMIN_HEALTH, headers=bearer(make_token(scopes=["admin"])))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    names = {c["name"]: c for c in body["checks"]}
    assert set(names) == {"database", "storage", "prober", "queue", "thumbnailer"}
    assert all(c["ok"] and c["latency_ms"] >= 0 for c in names.values())


def _unsigned(claims: dict[str, object]) -> str:
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def test_bad_tokens_are_401(
    client: AsyncTestClient[Litestar], make_token: TokenFactory
) -> None:
    now = int(time.time())
    bad = {
        "alg none": _unsigned({"org_id": "org-a", "scopes": ["admin"]}),
        "wrong signature": jwt.encode(
            {"org_id": "org-a", "scopes": ["admin"]}, "x" * 64, algorithm="HS256"
        ),
        "expired": make_token(scopes=["admin"], exp=now - 3600),
        "not yet valid": make_token(scopes=["admin"], nbf=now + 3600),
        "no org_id": make_token(org_id=None, scopes=["admin"]),
    }
    for reason, token in bad.items():
        response = await client.get(ADMIN_HEALTH, headers=bearer(token))
        assert response.status_code == 401, reason
        assert_problem(response.json(), 401, "unauthenticated")


async def test_other_authorization_schemes_are_401(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get(ADMIN_HEALTH, headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert response.status_code == 401


async def test_unknown_routes_answer_problem_json(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "not_found"


async def test_wrong_method_answers_problem_json(client: AsyncTestClient[Litestar]) -> None:
    response = await client.delete("/health")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


async def test_every_answer_carries_a_request_id(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = await client.get("/nope", headers={"X-Request-ID": "bad id with spaces"})
    request_id = generated.headers["x-request-id"]
    assert request_id != "bad id with spaces"
    assert generated.json()["request_id"] == request_id


async def test_openapi_document_is_served_and_declares_bearer_auth(
    client: AsyncTestClient[Litestar],
) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert "/v1/ingest/probe" in document["paths"]
    assert "/health" in document["paths"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


async def test_openapi_lists_only_problem_codes_a_client_can_get(
    client: AsyncTestClient[Litestar],
) -> None:
    # decode_limit_exceeded names a family; what is raised is one of its members.
    document = (await client.get("/schema/openapi.json")).text
    assert '"decode_memory_exceeded"' in document
    assert '"decode_cpu_exceeded"' in document
    assert '"decode_limit_exceeded"' not in document
