"""``/v1/webhooks``: endpoints per organisation, secrets shown once, the SSRF guard at
registration, and ``GET /v1/jobs``. On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.fixtures.app import TokenFactory, bearer, ingest_file, wait_for_job


@pytest.fixture
def settings_overrides(database_url: str) -> dict[str, Any]:
    return {"database_url": database_url, "sweep_interval_seconds": 0.2}


async def create(
    client: AsyncTestClient[Litestar], token: str, url: str, **extra: Any
) -> dict[str, Any]:
    response = await client.post("/v1/webhooks", json={"url": url, **extra}, headers=bearer(token))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_endpoint_lifecycle_and_secret_shown_only_at_creation_and_rotation(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, org_b: str
) -> None:
    token, other = make_token(org_a), make_token(org_b)
    created = await create(
        client, token, "https://hooks.example.com/heimdex", events=["asset.ready"]
    )
    assert created["secret"].startswith("whsec_")
    assert created["events"] == ["asset.ready"]
    assert created["enabled"] is True
    url = f"/v1/webhooks/{created['webhook_id']}"
    read = (await client.get(url, headers=bearer(token))).json()
    assert "secret" not in read
    listed = (await client.get("/v1/webhooks", headers=bearer(token))).json()
    assert [w["webhook_id"] for w in listed["items"]] == [created["webhook_id"]]
    assert "secret" not in listed["items"][0]

    # Another organisation sees nothing and can change nothing.
    for method in ("get", "delete"):
        response = await getattr(client, method)(url, headers=bearer(other))
        assert response.status_code == 404
    patched_by_other = await client.patch(url, json={"enabled": False}, headers=bearer(other))
    assert patched_by_other.status_code == 404
    rotated_by_other = await client.post(f"{url}/rotate-secret", headers=bearer(other))
    assert rotated_by_other.status_code == 404
    assert (await client.get("/v1/webhooks", headers=bearer(other))).json()["items"] == []

    patched = await client.patch(
        url, json={"enabled": False, "events": ["job.failed", "job.failed"]}, headers=bearer(token)
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["enabled"] is False
    assert patched.json()["events"] == ["job.failed"]

    rotated = await client.post(f"{url}/rotate-secret", headers=bearer(token))
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != created["secret"]

    deliveries = await client.get(f"{url}/deliveries", headers=bearer(token))
    assert deliveries.json() == {"items": [], "next_cursor": None}
    assert (await client.delete(url, headers=bearer(token))).status_code == 204
    assert (await client.get(url, headers=bearer(token))).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://2130706433/hook",
        "http://0177.0.0.1/hook",
        "http://0x7f.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fd00:ec2::254]/",
        "https://[::ffff:10.0.0.1]/",
        "https://0.0.0.0/",
        "https://localhost/",
        "https://192.168.0.10/",
        "ftp://hooks.example.com/",
    ],
)
async def test_forbidden_urls_are_refused_at_registration(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, url: str
) -> None:
    token = make_token(org_a)
    response = await client.post("/v1/webhooks", json={"url": url}, headers=bearer(token))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "webhook_url_forbidden"
    webhook = await create(client, token, "https://hooks.example.com/")
    patched = await client.patch(
        f"/v1/webhooks/{webhook['webhook_id']}", json={"url": url}, headers=bearer(token)
    )
    assert patched.status_code == 422
    assert patched.json()["code"] == "webhook_url_forbidden"


async def test_unknown_event_types_and_fields_are_refused(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    token = make_token(org_a)
    for body in (
        {"url": "https://hooks.example.com/", "events": ["asset.exploded"]},
        {"url": "https://hooks.example.com/", "secret": "mine"},
    ):
        response = await client.post("/v1/webhooks", json=body, headers=bearer(token))
        assert response.status_code == 400, response.text


async def test_jobs_are_listed_newest_first_with_filters_and_a_cursor(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    org_b: str,
    h264_aac_mp4: Path,
) -> None:
    token = make_token(org_a)
    jobs = []
    for _ in range(3):
        asset = await ingest_file(client, token, h264_aac_mp4)
        accepted = await client.post(
            f"/v1/assets/{asset['asset_id']}/sidecar", json={}, headers=bearer(token)
        )
        jobs.append(await wait_for_job(client, token, accepted.headers["location"]))
    first = (await client.get("/v1/jobs?limit=2", headers=bearer(token))).json()
    assert first["next_cursor"]
    rest = (
        await client.get(f"/v1/jobs?limit=2&cursor={first['next_cursor']}", headers=bearer(token))
    ).json()
    listed = [j["job_id"] for j in first["items"] + rest["items"]]
    assert listed == [j["job_id"] for j in reversed(jobs)]
    one = (
        await client.get(
            f"/v1/jobs?asset_id={jobs[0]['asset_id']}&status=succeeded&kind=sidecar",
            headers=bearer(token),
        )
    ).json()
    assert [j["job_id"] for j in one["items"]] == [jobs[0]["job_id"]]
    failed = (await client.get("/v1/jobs?status=failed", headers=bearer(token))).json()
    assert failed["items"] == []
    after = jobs[1]["created_at"]
    newer = (
        await client.get("/v1/jobs", params={"created_after": after}, headers=bearer(token))
    ).json()
    assert [j["job_id"] for j in newer["items"]] == [jobs[2]["job_id"]]
    assert (await client.get("/v1/jobs", headers=bearer(make_token(org_b)))).json()["items"] == []
    bad = await client.get("/v1/jobs?cursor=nonsense", headers=bearer(token))
    assert bad.status_code == 400
