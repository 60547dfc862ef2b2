"""``GET /v1/jobs``: an organisation's jobs, newest first, filtered, in cursor pages."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from heimdex.application.assets import decode_cursor
from heimdex.domain.errors import InvalidInput
from heimdex.domain.model import JobFilter, JobPage, Principal
from heimdex.domain.ports import UnitOfWorkFactory

MAX_JOB_PAGE = 200


def _as_utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class JobListing:
    """The caller's jobs only; the cursor is the asset listing's (opaque, keyset)."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def list(
        self, principal: Principal, filters: JobFilter, limit: int, cursor: str | None
    ) -> JobPage:
        if not 1 <= limit <= MAX_JOB_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_JOB_PAGE}")
        after = decode_cursor(cursor) if cursor else None
        filters = msgspec.structs.replace(
            filters,
            created_after=_as_utc(filters.created_after),
            created_before=_as_utc(filters.created_before),
        )
        async with self._uow(principal.org_id) as uow:
            return await uow.jobs.list(filters, limit=limit, after=after)
