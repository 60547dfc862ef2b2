"""The job's state machine on its own: each transition's result, and the ones refused."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from heimdex.application.job_policy import JobPolicy
from heimdex.domain.errors import Conflict, InvalidJobTransition
from heimdex.domain.model import Job, JobError, JobKind, JobStatus, ThumbnailSpec

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
BOOM = JobError(code="storage_error", message="disk full")


def new_job(max_attempts: int = 3) -> Job:
    return Job.created(
        org_id="org-a",
        asset_id=uuid.uuid4(),
        kind=JobKind.SIDECAR,
        thumbnails=ThumbnailSpec(count=4),
        storyboard=None,
        max_attempts=max_attempts,
        now=T0,
    )


def running(max_attempts: int = 3) -> Job:
    return new_job(max_attempts).claimed("worker-a", T0, T0 + LEASE)


def test_a_created_job_is_queued_due_at_once_and_not_yet_handed_over() -> None:
    job = new_job()
    assert job.status is JobStatus.QUEUED
    assert (job.attempts, job.max_attempts, job.progress) == (0, 3, 0.0)
    assert job.next_attempt_at is None
    assert job.enqueued_at is None
    assert job.error is None
    assert job.created_at == job.updated_at == T0
    assert job.thumbnails == ThumbnailSpec(count=4)
    assert job.is_active
    assert job.is_claimable(T0)
    assert new_job().id != job.id


def test_claiming_takes_a_lease_and_counts_an_attempt() -> None:
    later = T0 + timedelta(seconds=3)
    job = new_job().claimed("worker-a", later, later + LEASE)
    assert job.status is JobStatus.RUNNING
    assert job.attempts == 1
    assert (job.lease_owner, job.lease_expires_at) == ("worker-a", later + LEASE)
    assert job.started_at == job.updated_at == later
    assert not job.is_claimable(later)


def test_a_running_job_is_claimed_again_only_once_its_lease_ran_out() -> None:
    job = running()
    assert not job.is_claimable(T0 + LEASE)  # the lease still holds at its last instant
    with pytest.raises(InvalidJobTransition):
        job.claimed("worker-b", T0 + LEASE, T0 + 2 * LEASE)
    again = job.claimed("worker-b", T0 + LEASE * 2, T0 + LEASE * 3)
    assert (again.attempts, again.lease_owner) == (2, "worker-b")
    assert again.started_at == T0  # when the job first started


def test_a_queued_job_is_claimable_only_once_its_back_off_ran_out() -> None:
    waiting = running().rescheduled(BOOM, T0, T0 + timedelta(seconds=5))
    assert not waiting.is_claimable(T0 + timedelta(seconds=4))
    with pytest.raises(InvalidJobTransition):
        waiting.claimed("worker-a", T0 + timedelta(seconds=4), T0 + LEASE)
    assert waiting.claimed("worker-a", T0 + timedelta(seconds=5), T0 + LEASE).attempts == 2


def test_success_finishes_the_job_and_clears_any_earlier_error() -> None:
    retried = (
        running()
        .rescheduled(BOOM, T0, T0)
        .claimed("worker-a", T0 + timedelta(seconds=1), T0 + LEASE)
    )
    done = retried.succeeded(T0 + timedelta(seconds=9))
    assert done.status is JobStatus.SUCCEEDED
    assert done.progress == 1.0
    assert done.error is None
    assert done.lease_expires_at is None
    assert done.next_attempt_at is None
    assert done.finished_at == done.updated_at == T0 + timedelta(seconds=9)
    assert not done.is_active
    assert not done.is_claimable(T0 + timedelta(days=1))


def test_a_rescheduled_job_is_queued_again_unleased_and_to_be_handed_over() -> None:
    job = msgspec.structs.replace(running(), enqueued_at=T0)
    retry_at = T0 + timedelta(seconds=10)
    again = job.rescheduled(BOOM, T0 + timedelta(seconds=1), retry_at)
    assert again.status is JobStatus.QUEUED
    assert again.error == BOOM
    assert again.lease_owner is None
    assert again.lease_expires_at is None
    assert again.next_attempt_at == retry_at
    assert again.enqueued_at is None  # the sweep hands it over once it is due
    assert again.attempts == 1
    assert again.finished_at is None


def test_the_last_attempt_cannot_be_rescheduled_only_failed() -> None:
    job = running(max_attempts=1)
    assert not job.has_attempts_left
    with pytest.raises(InvalidJobTransition):
        job.rescheduled(BOOM, T0, T0)
    failed = job.failed(BOOM, T0 + timedelta(seconds=2))
    assert failed.status is JobStatus.FAILED
    assert failed.error == BOOM
    assert failed.lease_expires_at is None
    assert failed.next_attempt_at is None
    assert failed.finished_at == T0 + timedelta(seconds=2)


def test_an_interrupted_run_is_due_again_at_once_whatever_its_attempts() -> None:
    job = running(max_attempts=1)
    back = job.interrupted(T0 + timedelta(seconds=2))
    assert back.status is JobStatus.QUEUED
    assert back.error == JobError(code="interrupted", message="the worker stopped during the job")
    assert back.next_attempt_at == T0 + timedelta(seconds=2)
    assert back.lease_owner is None
    assert back.enqueued_at is None
    assert back.is_claimable(T0 + timedelta(seconds=2))


@pytest.mark.parametrize(
    "finish",
    [
        lambda job: job.succeeded(T0),
        lambda job: job.failed(BOOM, T0),
        lambda job: job.rescheduled(BOOM, T0, T0),
        lambda job: job.interrupted(T0),
    ],
    ids=["succeeded", "failed", "rescheduled", "interrupted"],
)
def test_only_a_running_job_can_finish_a_run(finish: Callable[[Job], Job]) -> None:
    done = running().succeeded(T0)
    failed = running().failed(BOOM, T0)
    for job in (new_job(), done, failed):
        with pytest.raises(InvalidJobTransition) as refused:
            finish(job)
        assert isinstance(refused.value, Conflict)
        assert refused.value.code == "invalid_job_transition"
        assert job.status.value in refused.value.message


def test_a_finished_job_is_never_claimable() -> None:
    for job in (running().succeeded(T0), running().failed(BOOM, T0)):
        with pytest.raises(InvalidJobTransition):
            job.claimed("worker-a", T0 + timedelta(days=1), T0 + timedelta(days=2))


def test_back_off_doubles_per_attempt_up_to_its_cap() -> None:
    policy = JobPolicy(retry_base=timedelta(seconds=5), retry_cap=timedelta(seconds=30))
    assert [policy.backoff(n).total_seconds() for n in range(1, 6)] == [5, 10, 20, 30, 30]
    assert policy.backoff(0) == timedelta(seconds=5)
