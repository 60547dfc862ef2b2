"""Redis restarted while jobs sit queued: every job still finishes, exactly once.

The job row is the truth and the stream only carries its id. A Redis that keeps its data hands
the queued ids to the worker as usual; one that comes back empty has lost them, and the worker's
sweep hands them over again once they have waited ``HEIMDEX_JOB_REDELIVER_SECONDS``. Either way
a job whose id arrives twice runs once (the claim is conditional).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_walkthrough import commit_upload, poll_job
from tests.fixtures.processes import Heimdex

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
QUEUED = 3


def request_sidecars(client: httpx.Client, assets: list[str]) -> list[str]:
    locations = []
    for asset_id in assets:
        accepted = client.post(f"/v1/assets/{asset_id}/sidecar", json={})
        assert accepted.status_code == 202, accepted.text
        locations.append(accepted.headers["location"])
    return locations


@pytest.mark.parametrize(
    "keep_data", [True, False], ids=["redis-keeps-data", "redis-comes-back-empty"]
)
def test_jobs_queued_across_a_redis_restart_all_finish_once(
    heimdex_deployment: Heimdex, h264_aac_mp4: Path, keep_data: bool
) -> None:
    deployment = heimdex_deployment
    deployment.env["HEIMDEX_JOB_REDELIVER_SECONDS"] = "2"
    queue = deployment.env["HEIMDEX_REDIS_QUEUE_NAME"]
    deployment.serve()  # no worker yet: the jobs stay queued
    token = deployment.token("acme")
    data = h264_aac_mp4.read_bytes()
    with httpx.Client(
        base_url=deployment.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        assets = [commit_upload(client, data, f"clip-{i}.mp4") for i in range(QUEUED)]
        locations = request_sidecars(client, assets)
        assert deployment.redis.stream_length(queue) == QUEUED

        deployment.redis.restart(keep_data=keep_data)
        assert deployment.redis.stream_length(queue) == (QUEUED if keep_data else 0)
        deployment.worker("worker")
        jobs = [poll_job(client, location) for location in locations]

        # A second restart, now with the worker connected to it: it finds its way back (the
        # stream and its consumer group may be gone) and takes new work.
        deployment.redis.restart(keep_data=keep_data)
        later = commit_upload(client, data, "later.mp4")
        jobs += [poll_job(client, location) for location in request_sidecars(client, [later])]
        assets.append(later)

    assert [job["status"] for job in jobs] == ["succeeded"] * len(assets), deployment.logs()
    assert [job["attempts"] for job in jobs] == [1] * len(assets)
    derived = deployment.workdir / "data/storage/derived/acme"
    sidecars = sorted(p.name for p in (derived / "sidecars").iterdir())
    assert sidecars == sorted(f"{asset_id}.json" for asset_id in assets)
    for asset_id in assets:
        sidecar = json.loads((derived / "sidecars" / f"{asset_id}.json").read_text())
        assert sidecar["asset_id"] == asset_id
        assert len(list((derived / asset_id / "thumbs").iterdir())) == 10
    assert list((deployment.workdir / "data").rglob("*.part")) == []
    if not keep_data:  # the lost ids came back through the sweep, not the stream
        assert '"jobs_swept"' in (deployment.workdir / "worker.log").read_text()
