"""The README walkthrough against real processes: `heimdex serve` with the Redis backend and
PostgreSQL, a separate `heimdex worker`, HTTP calls a client would make — on local storage, and
once on S3 (a moto server on loopback) where the client PUTs straight to the bucket."""

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
from tests.fixtures.s3 import MotoServer

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
    walked = walk_through(heimdex_deployment, h264_aac_mp4)
    delete_asset(heimdex_deployment, walked)


def test_walkthrough_on_s3_storage(
    heimdex_deployment: Heimdex, h264_aac_mp4: Path, moto_server: MotoServer, s3_bucket: str
) -> None:
    heimdex_deployment.env.update(moto_server.deployment_env(s3_bucket))
    walked = walk_through(heimdex_deployment, h264_aac_mp4)
    slot = walked["slot"]
    # The bytes went to the bucket, not through the API, under the layout's key.
    assert slot["upload_url"].startswith(f"{moto_server.endpoint_url}/{s3_bucket}/uploads/acme/")
    assert slot["source_uri"].startswith(f"s3://{s3_bucket}/uploads/acme/")
    keys = {
        item["Key"]
        for item in moto_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    }
    assert any(k.startswith("derived/acme/sidecars/") for k in keys)
    assert sum(1 for k in keys if "/thumbs/" in k) == 10
    assert sum(1 for k in keys if "/storyboard/sprite-" in k) == 1
    assert sum(1 for k in keys if "/poster/" in k) == 1  # the chosen one replaced the first
    assert not (heimdex_deployment.workdir / "data" / "storage").exists()
    delete_asset(heimdex_deployment, walked)
    assert moto_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", []) == []
    commit_refuses_bytes_the_store_let_through(heimdex_deployment, h264_aac_mp4.read_bytes())


def commit_refuses_bytes_the_store_let_through(deployment: Heimdex, data: bytes) -> None:
    """Other bytes of the declared length, PUT with the signed checksum header: AWS S3 refuses
    them, moto (like MinIO) stores them — and commit, re-hashing, still refuses them."""
    token = deployment.token("acme")
    with httpx.Client(
        base_url=deployment.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        slot = client.post(
            "/v1/ingest/init",
            json={
                "source_name": "other.mp4",
                "content_type": "video/mp4",
                "content_length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            },
        ).json()
        forged = bytes(reversed(data))
        put = httpx.put(slot["upload_url"], content=forged, headers=slot["headers"])
        if put.status_code != 200:  # the store checked the checksum itself
            assert put.status_code == 400, put.text
            return
        commit = client.post("/v1/ingest/commit", json={"upload_id": slot["upload_id"]})
        assert commit.status_code == 422, commit.text
        assert commit.json()["code"] == "checksum_mismatch"


def walk_through(deployment: Heimdex, clip: Path) -> dict[str, Any]:
    """The README's walkthrough up to the DELETE; answers the slot init issued, the asset id
    and a thumbnail's signed URL."""
    deployment.serve()
    deployment.worker("worker")
    token = deployment.token("acme")
    data = clip.read_bytes()
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
        # The worker made the storyboard and the poster; the API makes a chosen poster.
        vtt = client.get(f"/v1/assets/{asset_id}/storyboard.vtt")
        assert vtt.status_code == 200
        assert vtt.headers["content-type"].startswith("text/vtt")
        sprite_url = vtt.text.split("\n")[3].split("#xywh=")[0]
        assert httpx.get(sprite_url).content[:3] == b"\xff\xd8\xff"  # signed: no token
        poster = client.get(f"/v1/assets/{asset_id}/poster").json()
        assert poster["chosen_by"] == "auto"
        chosen = client.put(f"/v1/assets/{asset_id}/poster", json={"time": 1.5})
        assert chosen.status_code == 200, chosen.text
        assert chosen.json()["chosen_by"] == "user"
        assert httpx.get(chosen.json()["url"]).content[:3] == b"\xff\xd8\xff"
        assert client.get(f"/v1/assets/{asset_id}").json()["status"] == "ready"
        health = client.get(
            "/v1/admin/health",
            headers={"Authorization": f"Bearer {deployment.token('acme', 'admin')}"},
        )
        assert health.status_code == 200, health.text
        assert {c["name"]: c["ok"] for c in health.json()["checks"]}["storage"] is True
    return {"slot": slot, "asset_id": asset_id, "thumbnail_url": thumbnails[0]["url"]}


def delete_asset(deployment: Heimdex, walked: dict[str, Any]) -> None:
    """The walkthrough's DELETE: the asset, its source and every derived file go."""
    token = deployment.token("acme")
    gone = httpx.delete(
        f"{deployment.base_url}/v1/assets/{walked['asset_id']}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert gone.status_code == 204, gone.text
    assert httpx.get(walked["thumbnail_url"]).status_code in (403, 404)


def test_a_job_accepted_while_redis_is_down_runs_once_it_is_back(
    heimdex_deployment: Heimdex, h264_aac_mp4: Path
) -> None:
    deployment = heimdex_deployment
    deployment.serve()
    worker = deployment.worker("worker")
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
    # The same worker process ran it: it lost its connection and found its way back.
    assert worker.poll() is None
    worker_log = (deployment.workdir / "worker.log").read_text()
    assert '"queue_connection_lost"' in worker_log
    assert "restarted with pid" not in worker_log
