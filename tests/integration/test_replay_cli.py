"""``heimdex replay`` on the embedded default: a dry run prints, ``--yes`` requeues (jobs back to
``queued``, deliveries due again with their ``webhook-id``), and a second run finds nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.migrations import upgrade
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.domain.model import JobError, JobStatus
from heimdex.domain.webhooks import DeliveryStatus
from heimdex.entrypoints.cli import main
from tests.builders import make_job
from tests.contract.test_repositories import stored_asset
from tests.contract.test_webhook_repositories import make_delivery, make_endpoint

NOW = datetime.now(UTC)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("HEIMDEX_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    return data


async def seed(url: str) -> dict[str, uuid.UUID]:
    database = Database(url)
    uow = SqlUnitOfWorkFactory(database)
    try:
        asset = await stored_asset(uow, "acme")
        failed = make_job(
            asset,
            status=JobStatus.FAILED,
            error=JobError(code="thumbnail_timeout", message="slow"),
            updated_at=NOW - timedelta(hours=1),
        )
        other_code = make_job(
            asset,
            status=JobStatus.FAILED,
            error=JobError(code="invalid_media", message="no"),
            updated_at=NOW - timedelta(hours=1),
        )
        done = make_job(asset, status=JobStatus.SUCCEEDED, error=None)
        stuck = make_job(
            asset,
            status=JobStatus.RUNNING,
            error=None,
            lease_owner="a-worker-that-died",
            lease_expires_at=NOW - timedelta(hours=2),
            updated_at=NOW - timedelta(hours=2),
        )
        endpoint = make_endpoint("acme")
        delivery = make_delivery(
            endpoint,
            status=DeliveryStatus.FAILED,
            attempts=8,
            next_attempt_at=None,
            last_error_code="thumbnail_timeout",
            updated_at=NOW - timedelta(hours=1),
        )
        async with uow("acme") as work:
            for job in (failed, other_code, done, stuck):
                await work.jobs.add(job)
            await work.webhooks.add(endpoint)
            await work.deliveries.add(delivery)
            await work.commit()
        return {
            "job": failed.id,
            "other": other_code.id,
            "delivery": delivery.id,
            "stuck": stuck.id,
            "done": done.id,
        }
    finally:
        await database.dispose()


async def state(url: str, ids: dict[str, uuid.UUID]) -> tuple[str, str, str, int]:
    database = Database(url)
    try:
        async with SqlUnitOfWorkFactory(database)("acme") as work:
            job = await work.jobs.get(ids["job"])
            other = await work.jobs.get(ids["other"])
            delivery = await work.deliveries.get(ids["delivery"])
        assert job is not None
        assert other is not None
        assert delivery is not None
        return job.status.value, other.status.value, delivery.status.value, job.attempts
    finally:
        await database.dispose()


def test_replay_dry_run_then_yes_then_nothing_left(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{(data_dir / 'heimdex.db').resolve()}"
    upgrade(url, "head", None)
    ids = asyncio.run(seed(url))
    selection = ["--org", "acme", "--error-code", "thumbnail_timeout"]

    assert main(["replay", *selection]) == 0
    out = capsys.readouterr().out
    assert f"would requeue job {ids['job']} (org acme)" in out
    assert f"would requeue delivery {ids['delivery']} (org acme)" in out
    assert str(ids["other"]) not in out
    assert "dry run: 1 jobs and 1 deliveries" in out
    assert asyncio.run(state(url, ids)) == ("failed", "failed", "failed", 0)

    assert main(["replay", *selection, "--yes"]) == 0
    assert "requeued 1 jobs and 1 deliveries" in capsys.readouterr().out
    job, other, delivery, attempts = asyncio.run(state(url, ids))
    assert (job, other, delivery, attempts) == ("queued", "failed", "pending", 0)

    assert main(["replay", *selection, "--yes"]) == 0  # idempotent
    assert "requeued 0 jobs and 0 deliveries" in capsys.readouterr().out


def test_replay_refuses_a_bad_date(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--since", "yesterday"]) == 2
    assert "--since" in capsys.readouterr().err


def test_replay_picks_up_a_job_stuck_under_a_dead_lease(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{(data_dir / 'heimdex.db').resolve()}"
    upgrade(url, "head", None)
    ids = asyncio.run(seed(url))
    assert main(["replay", "--org", "acme", "--what", "jobs", "--stuck-after", "60"]) == 0
    out = capsys.readouterr().out
    assert f"would requeue job {ids['stuck']}" in out
    assert str(ids["done"]) not in out  # a succeeded job is never replayed
    assert "delivery" not in out.split("dry run")[0]
    assert main(["replay", "--org", "acme", "--what", "jobs", "--yes"]) == 0
    assert "requeued 3 jobs and 0 deliveries" in capsys.readouterr().out
