"""How sidecar jobs are run: attempts, leases, back-off, redelivery, per-organisation quota."""

from __future__ import annotations

from datetime import timedelta

import msgspec


class JobPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The tunable rules of jobs, from the settings. The back-off lives here, not on ``Job``:
    it is configuration (``retry_base``, ``retry_cap``); the job is told when to retry
    (``Job.rescheduled``)."""

    max_attempts: int = 3
    lease: timedelta = timedelta(seconds=60)
    retry_base: timedelta = timedelta(seconds=5)
    retry_cap: timedelta = timedelta(minutes=5)
    # A queued job the queue accepted this long ago without a worker claiming it is handed over
    # again (a lost message); shorter than this is left to the queue.
    redeliver_after: timedelta = timedelta(minutes=2)
    # Jobs one organisation may have queued or running at once; 0: no limit. A request over it
    # is told to come back after ``quota_retry_after``.
    max_active_per_org: int = 0
    quota_retry_after: timedelta = timedelta(seconds=5)
    # A worker that cannot reach the database to claim a job or record its outcome tries again
    # after this, doubling up to 5 s, for up to one lease; then the sweep's redelivery takes over.
    database_retry: timedelta = timedelta(seconds=0.5)

    def backoff(self, attempts: int) -> timedelta:
        seconds = self.retry_base.total_seconds() * 2 ** max(attempts - 1, 0)
        return min(timedelta(seconds=seconds), self.retry_cap)
