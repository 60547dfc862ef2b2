"""The README walkthrough against real processes: `heimdex serve` with the Redis backend and
PostgreSQL, a separate `heimdex worker`, HTTP calls a client would make."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from heimdex.schemas import sidecar_schema_v1
from tests.fixtures.processes import Heimdex

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def poll_job(client: httpx.Client, url: str, seconds: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(url).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job not finished within {seconds} s: {job}")


def commit_upload(client: httpx.Client, data: bytes, name: str = "clip.mp4") -> str:
    """init → PUT to the signed URL → commit, as a client does; answers the asset id."""
    slot = client.post(
        "/v1/ingest/init",
        json={"source_name": name, "content_type": "video/mp4", "content_length": len(data)},
    ).json()
    httpx.put(slot["upload_url"], content=data, headers=slot["headers"]).raise_for_status()
    commit = client.post("/v1/ingest/commit", json={"upload_id": slot["upload_id"]})
    assert commit.status_code == 201, commit.text
    asset_id: str = commit.json()["asset_id"]
    return asset_id


def test_walkthrough_on_postgres_redis_and_a_worker(
    heimdex_deployment: Heimdex, h264_aac_mp4: Path
) -> None:
    deployment = heimdex_deployment
    deployment.serve()
    deployment.worker("worker")
    token = deployment.token("acme")
    data = h264_aac_mp4.read_bytes()
    with httpx.Client(
        base_url=deployment.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        init = client.post(
            "/v1/ingest/init",
            json={
                "source_name": "clip.mp4",
                "content_type": "video/mp4",
                "content_length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            },
        )
        assert init.status_code == 201, init.text
        slot = init.json()
        put = httpx.put(slot["upload_url"], content=data, headers=slot["headers"])
        assert put.status_code == 200, put.text
        commit = client.post("/v1/ingest/commit", json={"upload_id": slot["upload_id"]})
        assert commit.status_code == 201, commit.text
        asset_id = commit.json()["asset_id"]
        probe = client.post("/v1/ingest/probe", json={"source_uri": slot["source_uri"]})
        assert probe.json()["streams"][0]["codec"] == "h264"

        accepted = client.post(f"/v1/assets/{asset_id}/sidecar", json={})
        assert accepted.status_code == 202, accepted.text
        job = poll_job(client, accepted.headers["location"])
        assert job["status"] == "succeeded", (job["error"], deployment.logs()[-3000:])

        sidecar = client.get(f"/v1/assets/{asset_id}/sidecar")
        assert sidecar.status_code == 200
        jsonschema.validate(sidecar.json(), json.loads(sidecar_schema_v1()))
        thumbnails = client.get(f"/v1/assets/{asset_id}/thumbnails").json()["items"]
        assert len(thumbnails) == 10
        image = httpx.get(thumbnails[0]["url"])  # signed: no token
        assert image.status_code == 200
        assert image.content[:3] == b"\xff\xd8\xff"
        assert client.get(f"/v1/assets/{asset_id}").json()["status"] == "ready"


def test_a_job_accepted_while_redis_is_down_runs_once_it_is_back(
    heimdex_deployment: Heimdex, h264_aac_mp4: Path
) -> None:
    deployment = heimdex_deployment
    deployment.serve()
    deployment.worker("worker")
    token = deployment.token("acme")
    data = h264_aac_mp4.read_bytes()
    with httpx.Client(
        base_url=deployment.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        slot = client.post(
            "/v1/ingest/init",
            json={"source_name": "c.mp4", "content_type": "video/mp4", "content_length": len(data)},
        ).json()
        httpx.put(slot["upload_url"], content=data, headers=slot["headers"]).raise_for_status()
        asset_id = client.post("/v1/ingest/commit", json={"upload_id": slot["upload_id"]}).json()[
            "asset_id"
        ]

        deployment.redis.stop()
        accepted = client.post(f"/v1/assets/{asset_id}/sidecar", json={})
        assert accepted.status_code == 202  # the job row is the outbox
        assert client.get(accepted.headers["location"]).json()["status"] == "queued"
        deployment.redis.start()
        job = poll_job(client, accepted.headers["location"])
        assert job["status"] == "succeeded", (job["error"], deployment.logs()[-3000:])
