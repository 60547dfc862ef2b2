"""Limits on clients through real HTTP handling, on SQLite and PostgreSQL: body sizes, the
per-organisation rate limit, the storage and concurrent-jobs quotas."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.adapters.ratelimit.memory import InProcessRateLimiter
from heimdex.bootstrap import build_adapters
from heimdex.domain.model import Job, JobKind, JobStatus
from heimdex.domain.rate_limit import RatePolicy
from heimdex.entrypoints.http.app import create_app
from heimdex.settings import Settings
from tests.fixtures.app import TokenFactory, bearer, ingest_file, init_upload

JSON_LIMIT = 4096
# Generous unless a test asks for less: only the rate-limit tests should meet it.
ROOMY = RatePolicy(rate=1000.0, burst=1000)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limiter_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def rate_policy() -> RatePolicy:
    return ROOMY


@pytest.fixture
def quotas(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Quota settings (``indirect`` parameters); ``storage_clips`` is the storage quota in
    sizes of the test clip."""
    values: dict[str, Any] = dict(getattr(request, "param", {}))
    clips = values.pop("storage_clips", None)
    if clips is not None:
        clip: Path = request.getfixturevalue("h264_aac_mp4")
        values["org_storage_quota_bytes"] = int(clip.stat().st_size * clips)
    return values


@pytest.fixture
def settings_overrides(database_url: str, quotas: dict[str, Any]) -> dict[str, Any]:
    return {
        "database_url": database_url,
        "max_json_body_bytes": JSON_LIMIT,
        "rate_limit_per_second": 1.0,
        **quotas,
    }


@pytest.fixture
def app(settings: Settings, rate_policy: RatePolicy, limiter_clock: ManualClock) -> Litestar:
    """The app as configured, with its in-process limiter on a clock the test moves."""
    adapters = build_adapters(settings)
    assert isinstance(adapters.rate_limiter, InProcessRateLimiter)  # the embedded default's
    return create_app(
        settings=settings,
        adapters=dataclasses.replace(
            adapters, rate_limiter=InProcessRateLimiter(rate_policy, clock=limiter_clock)
        ),
    )


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"]) == (status, code)
    return body


# -- body sizes --------------------------------------------------------------------------------
async def test_a_json_body_over_the_limit_is_413_request_too_large(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    token = make_token(org_a)
    big = {"source_name": "x" * JSON_LIMIT, "content_length": 1, "content_type": "video/mp4"}
    refused = await client.post("/v1/ingest/init", json=big, headers=bearer(token))
    body = assert_problem(refused, 413, "request_too_large")
    assert str(JSON_LIMIT) in body["detail"]
    # The same through the idempotency middleware, which reads the body first.
    keyed = await client.post(
        "/v1/ingest/init", json=big, headers={**bearer(token), "Idempotency-Key": "k-1"}
    )
    assert_problem(keyed, 413, "request_too_large")

    small = await client.post(
        "/v1/ingest/init",
        json={"source_name": "a.mp4", "content_length": 1, "content_type": "video/mp4"},
        headers=bearer(token),
    )
    assert small.status_code == 201, small.text


async def test_the_upload_put_keeps_its_own_limit(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, h264_aac_mp4: Path
) -> None:
    assert h264_aac_mp4.stat().st_size > JSON_LIMIT
    asset = await ingest_file(client, make_token(org_a), h264_aac_mp4)
    assert asset["size_bytes"] == h264_aac_mp4.stat().st_size


# -- rate limits -------------------------------------------------------------------------------
@pytest.mark.parametrize("rate_policy", [RatePolicy(rate=0.5, burst=3)])
async def test_a_burst_over_the_rate_is_429_with_retry_after_for_that_org_only(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    org_b: str,
    limiter_clock: ManualClock,
) -> None:
    token_a, token_b = make_token(org_a), make_token(org_b)
    remaining = []
    for _ in range(3):
        allowed = await client.get("/v1/assets", headers=bearer(token_a))
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["ratelimit-limit"] == "3"
        remaining.append(allowed.headers["ratelimit-remaining"])
    assert remaining == ["2", "1", "0"]

    refused = await client.get("/v1/assets", headers=bearer(token_a))
    assert_problem(refused, 429, "rate_limited")
    assert refused.headers["retry-after"] == "2"  # one token at 0.5 a second
    assert refused.headers["ratelimit-remaining"] == "0"
    # Every /v1 route with a token counts, writes too; a refused request never reaches it.
    post = await client.post("/v1/ingest/init", json={}, headers=bearer(token_a))
    assert_problem(post, 429, "rate_limited")

    other = await client.get("/v1/assets", headers=bearer(token_b))
    assert other.status_code == 200
    assert other.headers["ratelimit-remaining"] == "2"
    for _ in range(5):  # liveness is never limited
        assert (await client.get("/health")).status_code == 200

    limiter_clock.now += 2.0
    recovered = await client.get("/v1/assets", headers=bearer(token_a))
    assert recovered.status_code == 200
    assert recovered.headers["ratelimit-remaining"] == "0"
    assert (await client.get("/v1/assets", headers=bearer(token_a))).status_code == 429


@pytest.mark.parametrize("rate_policy", [RatePolicy(rate=0.5, burst=3)])
async def test_requests_without_a_token_or_bearer_route_spend_no_tokens(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    for _ in range(5):
        assert (await client.get("/v1/assets")).status_code == 401
        assert (await client.get("/v1/schemas/sidecar/v1")).status_code == 200
        # OPTIONS skips authentication: it must not meet the limiter as an anonymous 401.
        assert (await client.options("/v1/assets")).status_code == 204
    token = make_token(org_a)
    for _ in range(3):
        assert (await client.get("/v1/assets", headers=bearer(token))).status_code == 200


# -- quotas ------------------------------------------------------------------------------------
@pytest.mark.parametrize("quotas", [{"storage_clips": 1.5}], indirect=True)
async def test_the_storage_quota_is_403_storage_quota_exceeded(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    org_b: str,
    h264_aac_mp4: Path,
    settings: Settings,
) -> None:
    size = h264_aac_mp4.stat().st_size
    quota = settings.limits.org_storage_quota_bytes
    assert size < quota < 2 * size
    token_a = make_token(org_a)
    asset = await ingest_file(client, token_a, h264_aac_mp4)
    body = {"source_name": "b.mp4", "content_length": size, "content_type": "video/mp4"}
    refused = await client.post("/v1/ingest/init", json=body, headers=bearer(token_a))
    problem = assert_problem(refused, 403, "storage_quota_exceeded")
    assert f"{size} of {quota}" in problem["detail"]
    assert "retry-after" not in refused.headers
    # Another organisation has a quota of its own.
    await init_upload(client, make_token(org_b), h264_aac_mp4)
    # Deleting the asset makes room again.
    deleted = await client.delete(f"/v1/assets/{asset['asset_id']}", headers=bearer(token_a))
    assert deleted.status_code == 204
    again = await client.post("/v1/ingest/init", json=body, headers=bearer(token_a))
    assert again.status_code == 201, again.text


@pytest.mark.parametrize("quotas", [{"org_max_active_jobs": 1}], indirect=True)
async def test_the_job_quota_is_429_job_quota_exceeded_with_retry_after(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    h264_aac_mp4: Path,
    settings: Settings,
) -> None:
    token = make_token(org_a)
    first = await ingest_file(client, token, h264_aac_mp4)
    second = await ingest_file(client, token, h264_aac_mp4)
    # A job of the first asset running under a live lease (a worker busy with it), written
    # through the organisation's unit of work on a connection of the test's own (the app's
    # pool belongs to the test client's event loop).
    database = Database(settings.resolved_database_url)
    uow = SqlUnitOfWorkFactory(database)
    try:
        now = datetime.now(UTC)
        running = Job(
            id=uuid.uuid4(),
            org_id=org_a,
            asset_id=uuid.UUID(first["asset_id"]),
            kind=JobKind.SIDECAR,
            status=JobStatus.RUNNING,
            progress=0.0,
            attempts=1,
            max_attempts=3,
            lease_expires_at=now + timedelta(hours=1),
            next_attempt_at=None,
            error=None,
            created_at=now,
            updated_at=now,
            lease_owner="elsewhere",
        )
        async with uow(org_a) as work:
            await work.jobs.add(running)
            await work.commit()

        refused = await client.post(
            f"/v1/assets/{second['asset_id']}/sidecar", json={}, headers=bearer(token)
        )
        assert_problem(refused, 429, "job_quota_exceeded")
        assert refused.headers["retry-after"] == "5"
        # The running job's own asset still answers that job.
        same = await client.post(
            f"/v1/assets/{first['asset_id']}/sidecar", json={}, headers=bearer(token)
        )
        assert same.status_code == 202
        assert same.json()["job_id"] == str(running.id)

        async with uow(org_a) as work:
            await work.jobs.save(msgspec.structs.replace(running, status=JobStatus.SUCCEEDED))
            await work.commit()
        accepted = await client.post(
            f"/v1/assets/{second['asset_id']}/sidecar", json={}, headers=bearer(token)
        )
        assert accepted.status_code == 202, accepted.text
    finally:
        await database.dispose()
