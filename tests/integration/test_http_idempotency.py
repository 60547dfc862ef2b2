"""Idempotency-Key on POST and DELETE, through real HTTP handling."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from structlog.testing import capture_logs

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.domain.errors import DatabaseUnavailable
from heimdex.settings import Settings
from tests.fixtures.app import TokenFactory, bearer, ingest_file, services_of

INIT = "/v1/ingest/init"
BODY = {"source_name": "clip.mp4", "content_length": 1000, "content_type": "video/mp4"}


@pytest.fixture
def settings_overrides(database_url: str) -> dict[str, Any]:
    """Every test here runs on SQLite and on PostgreSQL (as the runtime role)."""
    return {"database_url": database_url}


def keyed(token: str, key: str) -> dict[str, str]:
    return {**bearer(token), "Idempotency-Key": key}


async def test_same_key_and_body_replays_the_first_answer(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    token = make_token(org_a)
    first = await client.post(INIT, json=BODY, headers=keyed(token, "k-1"))
    second = await client.post(INIT, json=BODY, headers=keyed(token, "k-1"))
    assert first.status_code == second.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert second.headers["content-type"] == first.headers["content-type"]
    fresh = await client.post(INIT, json=BODY, headers=keyed(token, "k-2"))
    assert fresh.json()["upload_id"] != first.json()["upload_id"]


async def test_same_key_with_another_body_is_422(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    token = make_token(org_a)
    await client.post(INIT, json=BODY, headers=keyed(token, "k"))
    other = await client.post(INIT, json={**BODY, "content_length": 999}, headers=keyed(token, "k"))
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"


async def test_bad_keys_are_400(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    token = make_token(org_a)
    for key in ("", "x" * 256):
        response = await client.post(INIT, json=BODY, headers=keyed(token, key))
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_idempotency_key"
    assert (await client.post(INIT, json=BODY, headers=keyed(token, "x" * 255))).status_code == 201


async def test_a_request_that_fails_validation_is_not_remembered(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    token = make_token(org_a)
    broken = await client.post(INIT, json={"source_name": "a.mp4"}, headers=keyed(token, "k"))
    assert broken.status_code == 400
    fixed = await client.post(INIT, json=BODY, headers=keyed(token, "k"))
    assert fixed.status_code == 201
    assert "idempotent-replayed" not in fixed.headers


async def test_keys_are_per_organisation_and_route(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, org_b: str
) -> None:
    a, b = make_token(org_a), make_token(org_b)
    first = await client.post(INIT, json=BODY, headers=keyed(a, "shared"))
    theirs = await client.post(INIT, json=BODY, headers=keyed(b, "shared"))
    assert theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["upload_id"] != first.json()["upload_id"]
    commit = await client.post(
        "/v1/ingest/commit",
        json={"upload_id": first.json()["upload_id"]},
        headers=keyed(a, "shared"),
    )
    assert commit.status_code == 409  # ran (not a replay of init): nothing uploaded yet


async def test_a_remembered_error_is_replayed(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    token = make_token(org_a)
    body = {**BODY, "content_type": "text/plain"}
    first = await client.post(INIT, json=body, headers=keyed(token, "k"))
    second = await client.post(INIT, json=body, headers=keyed(token, "k"))
    assert first.status_code == second.status_code == 415
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["content-type"].startswith("application/problem+json")


async def test_delete_with_a_key_replays_its_204(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, h264_aac_mp4: Path, org_a: str
) -> None:
    token = make_token(org_a)
    asset: dict[str, Any] = await ingest_file(client, token, h264_aac_mp4)
    url = f"/v1/assets/{asset['asset_id']}"
    first = await client.delete(url, headers=keyed(token, "del"))
    second = await client.delete(url, headers=keyed(token, "del"))
    assert first.status_code == second.status_code == 204
    assert second.headers["idempotent-replayed"] == "true"
    unkeyed = await client.delete(url, headers=bearer(token))
    assert unkeyed.status_code == 404


async def test_twenty_concurrent_identical_requests_create_exactly_one_upload(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    settings: Settings,
) -> None:
    token = make_token(org_a)
    responses = await asyncio.gather(
        *(client.post(INIT, json=BODY, headers=keyed(token, "burst")) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, statuses
    created = [r for r in responses if r.status_code == 201]
    assert len({r.json()["upload_id"] for r in created}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in created) == 1
    for conflict in (r for r in responses if r.status_code == 409):
        assert conflict.json()["code"] == "idempotency_key_in_flight"
    assert await count_uploads(settings, org_a) == 1


async def count_uploads(settings: Settings, org_id: str) -> int:
    database = Database(settings.resolved_database_url)
    try:
        async with SqlUnitOfWorkFactory(database)(org_id) as uow:
            # An unfiltered count: row-level security scopes it on PostgreSQL, and the SQLite
            # file is this test's own copy.
            result = await uow.session.execute(text("SELECT count(*) FROM uploads"))
            return int(result.scalar_one())
    finally:
        await database.dispose()


async def test_an_answer_whose_record_the_database_lost_still_reaches_the_client(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database goes away after the handler answered but before the answer is stored: the
    client keeps its answer (no error after the response started), the claim stays until its
    lease frees it."""
    idempotency = services_of(client.app).idempotency

    async def database_gone(*_: Any) -> None:
        raise DatabaseUnavailable("the database is not available: connection reset")

    monkeypatch.setattr(idempotency, "finish", database_gone)
    token = make_token(org_a)
    with capture_logs() as logs:
        first = await client.post(INIT, json=BODY, headers=keyed(token, "k-lost"))
    assert first.status_code == 201, first.text
    assert [line["event"] for line in logs if line["log_level"] == "warning"] == [
        "idempotency_answer_not_recorded"
    ]
    monkeypatch.undo()
    again = await client.post(INIT, json=BODY, headers=keyed(token, "k-lost"))
    assert again.status_code == 409
    assert again.json()["code"] == "idempotency_key_in_flight"
