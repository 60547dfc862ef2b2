"""Prometheus metrics through real HTTP handling: ``GET /metrics`` after real requests, uploads,
probes and sidecar jobs (in the API process, the embedded default), and the queue depth across
organisations on SQLite and on PostgreSQL under row-level security."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from heimdex.adapters.metrics.exporter import serve_metrics
from heimdex.adapters.metrics.prometheus import PrometheusMetrics
from heimdex.domain.model import JobKind
from heimdex.entrypoints.http.app import create_app
from heimdex.settings import Settings
from tests.fixtures.app import (
    TEST_SECRET,
    TokenFactory,
    bearer,
    ingest_file,
    init_upload,
    put_upload,
    wait_for_job,
)
from tests.fixtures.db import PostgresCatalogue
from tests.requirements import require_port

# A port nothing listens on: with the Redis backend and no Redis, jobs stay queued in their rows.
NO_REDIS = "redis://127.0.0.1:9/0"
REDIS_URL = "redis://127.0.0.1:6379/0"
AGE = "heimdex_job_queue_oldest_message_age_seconds"
METRICS_TOKEN = "scrape-token-of-at-least-some-length"


@pytest.fixture
def settings_overrides(database_url: str) -> dict[str, Any]:
    """Every test here runs on SQLite and on PostgreSQL (as the runtime role)."""
    return {"database_url": database_url, "sweep_interval_seconds": 0.2}


Samples = list[tuple[str, dict[str, str], float]]


async def scrape(client: AsyncTestClient[Litestar], **headers: str) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> Samples:
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value, 0 when there is none (a labelled series appears at first use)."""
    found = [
        v for n, ls, v in samples if n == name and all(ls.get(k) == x for k, x in labels.items())
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


async def test_requests_are_counted_by_route_template_and_status(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str
) -> None:
    token = make_token(org_a)
    missing_job = uuid.uuid4()
    await client.get("/health")
    await client.get("/health")
    assert (await client.get(f"/v1/jobs/{missing_job}", headers=bearer(token))).status_code == 404
    assert (await client.get(f"/v1/jobs/{missing_job}")).status_code == 401
    assert (await client.get(f"/nowhere/{missing_job}")).status_code == 404
    assert (await client.request("BREW", "/health")).status_code == 405

    samples = await scrape(client)
    requests = "heimdex_http_requests_total"
    assert value(samples, requests, method="GET", route="/health", status="200") == 2
    job_route = "/v1/jobs/{job_id}"
    assert value(samples, requests, method="GET", route=job_route, status="404") == 1
    assert value(samples, requests, method="GET", route=job_route, status="401") == 1
    # No route matched: one series for every unknown path, never one per path.
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 1
    # A made-up method is not a label value of its own either.
    assert value(samples, requests, method="other", route="unmatched", status="405") == 1
    latency = "heimdex_http_request_duration_seconds_count"
    assert value(samples, latency, method="GET", route="/health", status="200") == 2
    assert value(samples, latency, method="GET", route=job_route, status="404") == 1
    assert all(
        str(missing_job) not in label and "nowhere" not in label
        for _, labels, _ in samples
        for label in labels.values()
    )


async def test_uploads_probes_and_commits_are_counted(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, h264_aac_mp4: Path
) -> None:
    token = make_token(org_a)
    size = h264_aac_mp4.stat().st_size
    before = await scrape(client)
    await ingest_file(client, token, h264_aac_mp4)
    after = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("heimdex_upload_bytes_total") == size
    assert grew("heimdex_committed_upload_bytes_total") == size
    assert grew("heimdex_probe_duration_seconds_count", prober="pyav", outcome="ok") == 1
    assert grew("heimdex_probe_duration_seconds_sum", prober="pyav", outcome="ok") > 0
    put_route = "/v1/uploads/{upload_id}"
    assert grew("heimdex_http_requests_total", method="PUT", route=put_route, status="200") == 1


async def test_a_failed_probe_is_counted_with_its_error_code(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, tmp_path: Path
) -> None:
    token = make_token(org_a)
    text = tmp_path / "notes.mp4"
    text.write_bytes(b"this is not a video\n" * 50)
    init = await init_upload(client, token, text)
    assert (await put_upload(client, init, text.read_bytes())).status_code == 200
    commit = await client.post(
        "/v1/ingest/commit", json={"upload_id": init["upload_id"]}, headers=bearer(token)
    )
    assert commit.status_code == 422
    samples = await scrape(client)
    count = "heimdex_probe_duration_seconds_count"
    assert value(samples, count, prober="pyav", outcome="invalid_media") == 1
    assert value(samples, "heimdex_upload_bytes_total") == text.stat().st_size
    assert value(samples, "heimdex_committed_upload_bytes_total") == 0


async def test_a_sidecar_job_is_timed_by_kind_and_outcome_with_its_thumbnails(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, h264_aac_mp4: Path
) -> None:
    token = make_token(org_a)
    asset = await ingest_file(client, token, h264_aac_mp4)
    accepted = await client.post(
        f"/v1/assets/{asset['asset_id']}/sidecar", json={}, headers=bearer(token)
    )
    assert accepted.status_code == 202
    await wait_for_job(client, token, accepted.headers["location"])

    samples = await scrape(client)
    jobs = "heimdex_job_duration_seconds_count"
    assert value(samples, jobs, kind=JobKind.SIDECAR.value, outcome="succeeded") == 1
    assert value(samples, jobs, kind=JobKind.SIDECAR.value, outcome="failed") == 0
    assert value(samples, "heimdex_job_duration_seconds_sum", outcome="succeeded") > 0
    thumbs = "heimdex_thumbnail_duration_seconds_count"
    assert value(samples, thumbs, thumbnailer="pyav", outcome="ok") == 1


async def test_no_label_names_an_organisation_an_asset_or_a_job(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    org_b: str,
    h264_aac_mp4: Path,
) -> None:
    secrets: set[str] = {org_a, org_b}
    for org in (org_a, org_b):
        token = make_token(org)
        asset = await ingest_file(client, token, h264_aac_mp4)
        url = f"/v1/assets/{asset['asset_id']}"
        accepted = await client.post(f"{url}/sidecar", json={}, headers=bearer(token))
        await wait_for_job(client, token, accepted.headers["location"])
        await client.get(f"{url}/thumbnails", headers=bearer(token))
        await client.get(f"{url}/sidecar", headers=bearer(make_token("someone-else")))
        secrets |= {asset["asset_id"], asset["upload_id"], accepted.json()["job_id"]}

    samples = await scrape(client)
    assert value(samples, "heimdex_job_duration_seconds_count", outcome="succeeded") == 2
    labels = {label for _, ls, _ in samples for label in ls.values()}
    leaked = {secret for secret in secrets for label in labels if secret in label}
    assert leaked == set()


async def test_a_metrics_token_guards_the_endpoint(settings: Settings) -> None:
    guarded = create_app(settings=settings.replace_flat(metrics_token=METRICS_TOKEN))
    async with AsyncTestClient(app=guarded) as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get("/metrics", headers=bearer("guess"))
        assert wrong.status_code == 401
        assert wrong.json()["code"] == "unauthenticated"
        not_ascii = {b"Authorization": "Bearer d\xe9j\xe0-vu".encode("latin-1")}
        assert (await client.get("/metrics", headers=not_ascii)).status_code == 401
        samples = await scrape(client, Authorization=f"Bearer {METRICS_TOKEN}")
        assert value(samples, "heimdex_http_requests_total", route="/metrics", status="401") == 3


# -- the queue depth ------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def own_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database only this test uses, so the depth is exactly what the test queued."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, tmp_path / "own.db")
        return f"sqlite+aiosqlite:///{tmp_path}/own.db"
    catalogue: PostgresCatalogue = request.getfixturevalue("private_postgres_catalogue")
    return catalogue.runtime_url  # the runtime role: row-level security applies


async def test_the_queue_depth_counts_queued_jobs_of_every_organisation(
    own_database_url: str,
    data_dir: Path,
    org_a: str,
    org_b: str,
    h264_aac_mp4: Path,
) -> None:
    queued_elsewhere = Settings.from_flat(
        data_dir=data_dir,
        jwt_secret=TEST_SECRET,
        database_url=own_database_url,
        job_queue_backend="redis",  # workers elsewhere, and none running: the jobs wait
        redis_url=NO_REDIS,
    )
    async with AsyncTestClient(app=create_app(settings=queued_elsewhere)) as client:
        samples = await scrape(client)
        assert value(samples, "heimdex_job_queue_depth", status="queued") == 0
        for org, assets in ((org_a, 2), (org_b, 1)):
            # Not the make_token fixture: it would bring the module's database_url along.
            token = jwt.encode({"org_id": org}, TEST_SECRET, algorithm="HS256")
            for _ in range(assets):
                asset = await ingest_file(client, token, h264_aac_mp4)
                accepted = await client.post(
                    f"/v1/assets/{asset['asset_id']}/sidecar", json={}, headers=bearer(token)
                )
                assert accepted.status_code == 202, accepted.text
        samples = await scrape(client)
    assert value(samples, "heimdex_job_queue_depth", status="queued") == 3
    assert value(samples, "heimdex_job_queue_depth", status="running") == 0


# -- a worker's own endpoint ----------------------------------------------------------------------
def fetch(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)  # noqa: S310 - a URL of the test's own server
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("token", [None, METRICS_TOKEN])
async def test_a_worker_serves_its_metrics_on_a_port_of_its_own(token: str | None) -> None:
    metrics = PrometheusMetrics()
    metrics.job_finished(JobKind.SIDECAR, "retry", 1.5)
    server = serve_metrics(metrics, "127.0.0.1", 0, token)
    try:
        url = f"http://127.0.0.1:{server.port}"
        status, text = await anyio.to_thread.run_sync(fetch, f"{url}/metrics", token)
        assert status == 200
        samples = parse(text)
        count = "heimdex_job_duration_seconds_count"
        assert value(samples, count, kind="sidecar", outcome="retry") == 1
        assert value(samples, "process_cpu_seconds_total") > 0
        # The API reads the queue's age when scraped; a worker never does, so it says nothing
        # rather than a 0 that would look like an empty queue.
        assert not [name for name, _, _ in samples if name == AGE]
        assert (await anyio.to_thread.run_sync(fetch, f"{url}/elsewhere", token))[0] == 404
        if token:
            assert (await anyio.to_thread.run_sync(fetch, f"{url}/metrics", None))[0] == 401
            assert (await anyio.to_thread.run_sync(fetch, f"{url}/metrics", "guess"))[0] == 401
    finally:
        server.close()


# -- the oldest queued message's age --------------------------------------------------------------
async def test_the_oldest_message_age_grows_while_no_worker_takes_jobs(
    data_dir: Path, sqlite_url: str, org_a: str, h264_aac_mp4: Path
) -> None:
    require_port("127.0.0.1", 6379, "Redis")
    stream = f"heimdex:test:{uuid.uuid4().hex[:10]}"
    no_workers = Settings.from_flat(
        data_dir=data_dir,
        jwt_secret=TEST_SECRET,
        database_url=sqlite_url,
        job_queue_backend="redis",
        redis_url=REDIS_URL,
        redis_queue_name=stream,
    )
    try:
        async with AsyncTestClient(app=create_app(settings=no_workers)) as client:
            assert value(await scrape(client), AGE) == 0  # nothing queued yet
            token = jwt.encode({"org_id": org_a}, TEST_SECRET, algorithm="HS256")
            asset = await ingest_file(client, token, h264_aac_mp4)
            accepted = await client.post(
                f"/v1/assets/{asset['asset_id']}/sidecar", json={}, headers=bearer(token)
            )
            assert accepted.status_code == 202, accepted.text
            await anyio.sleep(1.2)
            first = value(await scrape(client), AGE)
            await anyio.sleep(0.5)
            second = value(await scrape(client), AGE)
        assert 1.0 <= first < 30
        assert second >= first + 0.4
    finally:
        redis = Redis.from_url(REDIS_URL)
        await redis.delete(stream)
        await redis.aclose()


async def test_without_an_answer_from_redis_the_age_is_left_out(
    data_dir: Path, sqlite_url: str
) -> None:
    unreachable = Settings.from_flat(
        data_dir=data_dir,
        jwt_secret=TEST_SECRET,
        database_url=sqlite_url,
        job_queue_backend="redis",
        redis_url=NO_REDIS,
    )
    async with AsyncTestClient(app=create_app(settings=unreachable)) as client:
        samples = await scrape(client)
    assert not [name for name, _, _ in samples if name == AGE]
    assert value(samples, "heimdex_job_queue_depth", status="queued") == 0  # the rest is there
