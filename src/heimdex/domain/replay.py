"""What ``heimdex replay`` selects: failed or stuck jobs (deliveries: ``DeliveryFilter``)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from heimdex.domain.model import JobKind


class JobReplayFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Failed jobs, and jobs stuck since ``stuck_before`` (queued and untouched, or running
    under a lease that ran out), narrowed by organisation, kind, error code and time."""

    stuck_before: datetime
    org_id: str | None = None
    kind: JobKind | None = None
    error_code: str | None = None
    since: datetime | None = None
    until: datetime | None = None
