"""``GET /v1/jobs``: an organisation's jobs, newest first, filtered, in cursor pages."""

from __future__ import annotations

from heimdex.application.assets import listing_window
from heimdex.domain.errors import InvalidInput
from heimdex.domain.model import JobFilter, JobPage, Principal
from heimdex.domain.ports import UnitOfWorkFactory

MAX_JOB_PAGE = 200


class JobListing:
    """The caller's jobs only; the cursor is the asset listing's (opaque, keyset)."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def list(
        self, principal: Principal, filters: JobFilter, limit: int, cursor: str | None
    ) -> JobPage:
        if not 1 <= limit <= MAX_JOB_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_JOB_PAGE}")
        filters, after = listing_window(filters, cursor)
        async with self._uow(principal.org_id) as uow:
            return await uow.jobs.list(filters, limit=limit, after=after)
