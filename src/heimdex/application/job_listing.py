"""``GET /v1/jobs``: an organisation's jobs, newest first, filtered, in cursor pages."""

from __future__ import annotations

from heimdex.application.assets import listing_window
from heimdex.application.catalogue_reads import UnitOfWorkReads
from heimdex.domain.errors import InvalidInput
from heimdex.domain.model import JobFilter, JobPage, Principal
from heimdex.domain.ports import CatalogueReads, UnitOfWorkFactory

MAX_JOB_PAGE = 200


class JobListing:
    """The caller's jobs only; the cursor is the asset listing's (opaque, keyset)."""

    def __init__(self, uow: UnitOfWorkFactory, reads: CatalogueReads | None = None) -> None:
        self._reads: CatalogueReads = reads or UnitOfWorkReads(uow)

    async def list(
        self, principal: Principal, filters: JobFilter, limit: int, cursor: str | None
    ) -> JobPage:
        if not 1 <= limit <= MAX_JOB_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_JOB_PAGE}")
        filters, after = listing_window(filters, cursor)
        return await self._reads.jobs(principal.org_id, filters, limit=limit, after=after)
