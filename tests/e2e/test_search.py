"""Search by frames against real processes: the same three clips on the embedded default
(`heimdex serve` alone: SQLite, in-process jobs) and on PostgreSQL + Redis + a `heimdex worker`
get the same answers — the copy finds its original, the unrelated clip is found by nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_walkthrough import commit_upload, poll_job
from tests.fixtures.processes import Heimdex
from tests.integration.test_http_search import (  # noqa: F401 - the session's clips
    copy_mp4,
    frame_png,
    original_mp4,
    unrelated_mp4,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def answers(deployment: Heimdex, clips: dict[str, Path]) -> dict[str, Any]:
    """Each clip ingested with its sidecar; the searches' answers with asset ids replaced by
    the clips' names, so two deployments' answers compare."""
    token = deployment.token("acme")
    with httpx.Client(
        base_url=deployment.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        ids: dict[str, str] = {}
        for name, path in clips.items():
            asset_id = commit_upload(client, path.read_bytes(), f"{name}.mp4")
            accepted = client.post(f"/v1/assets/{asset_id}/sidecar", json={})
            assert accepted.status_code == 202, accepted.text
            job = poll_job(client, accepted.headers["location"])
            assert job["status"] == "succeeded", (job["error"], deployment.logs()[-3000:])
            ids[asset_id] = name
        by_id = {value: key for key, value in ids.items()}

        def named(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{**item, "asset_id": ids[item["asset_id"]]} for item in items]

        similar = client.get(f"/v1/assets/{by_id['copy']}/similar").json()
        by_time = client.post(
            "/v1/search/frames", json={"asset_id": by_id["copy"], "time": 3.0}
        ).json()
        # A frame of the original the job fingerprinted (its fifth thumbnail's), decoded here.
        shown = client.get(f"/v1/assets/{by_id['original']}/thumbnails").json()["items"][4]
        by_image = client.post(
            "/v1/search/frames",
            content=frame_png(clips["original"], shown["time"], 240),
            headers={"Content-Type": "image/png"},
        ).json()
    for hit in by_time["items"] + by_image["items"]:
        hit.pop("thumbnail_url")  # signed for its own deployment
    return {
        "image_time": shown["time"],
        "similar": named(similar["items"]),
        "by_time": named(by_time["items"]),
        "by_image": named(by_image["items"]),
    }


def test_the_same_answers_on_the_embedded_default_and_on_postgres_redis_and_a_worker(
    heimdex_deployment: Heimdex,
    tmp_path: Path,
    original_mp4: Path,  # noqa: F811
    copy_mp4: Path,  # noqa: F811
    unrelated_mp4: Path,  # noqa: F811
) -> None:
    clips = {"original": original_mp4, "copy": copy_mp4, "unrelated": unrelated_mp4}
    heimdex_deployment.serve()
    heimdex_deployment.worker("worker")
    distributed = answers(heimdex_deployment, clips)

    embedded = Heimdex(tmp_path / "embedded", "unused", heimdex_deployment.redis)
    embedded.workdir.mkdir()
    for name in ("HEIMDEX_DATABASE_URL", "HEIMDEX_REDIS_URL", "HEIMDEX_JOB_QUEUE_BACKEND"):
        embedded.env.pop(name)
    try:
        embedded.serve()
        alone = answers(embedded, clips)
    finally:
        embedded.stop_all()

    assert distributed == alone
    assert [item["asset_id"] for item in alone["similar"]] == ["original"]
    assert alone["similar"][0]["frames_matched"] >= 4
    assert alone["by_time"][0]["asset_id"] == "original"
    assert abs(alone["by_time"][0]["time"] - 3.0) < 1.0
    near = {
        hit["asset_id"] for hit in alone["by_image"] if abs(hit["time"] - alone["image_time"]) < 1.0
    }
    assert "original" in near  # its scene (the copy's frames are at times of its own)
    assert "unrelated" not in {hit["asset_id"] for hit in alone["by_image"]}
