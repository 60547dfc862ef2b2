"""Synchronous probing: describe a stored upload or asset, or a file the server already holds."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from heimdex.application.probe_gate import ProbeSlots, SingleFlight
from heimdex.domain.errors import NotFound, SourceUriForbidden
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import Principal
from heimdex.domain.ports import Prober, Storage, UnitOfWorkFactory

# Legacy requests carry no organisation: they share one set of probe slots.
LEGACY_SLOTS = "(legacy)"


class ProbeService:
    """Probes with the configured prober. A ``source_uri`` is an identifier: it is looked up
    among the caller's own uploads and the server opens the object it has on record — never the
    URI itself. An asset answers the description stored when it was committed, never a new
    probe. Each probe holds one of the organisation's ``slots``, and simultaneous probes of one
    upload run once."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        storage: Storage,
        prober: Prober,
        slots: ProbeSlots | None = None,
    ) -> None:
        self._uow = uow
        self._storage = storage
        self._prober = prober
        self._slots = slots if slots is not None else ProbeSlots(per_org=0, wait_seconds=0)
        self._flights: SingleFlight[MediaInfo] = SingleFlight()

    async def probe_source(self, principal: Principal, source_uri: str) -> MediaInfo:
        """Describe the upload (or its asset) that init issued ``source_uri`` for.

        Anything else — another organisation's upload, a path, another scheme — raises
        ``SourceUriForbidden`` before any file or process is touched.
        """
        async with self._uow(principal.org_id) as uow:
            upload = await uow.uploads.get_by_source_uri(source_uri)
        if upload is None:
            raise SourceUriForbidden(
                "source_uri must be one issued by /v1/ingest/init for your organisation"
            )
        media, _ = await self._flights.run(
            (principal.org_id, upload.key), lambda: self._probe_key(principal.org_id, upload.key)
        )
        return media

    async def probe_asset(self, principal: Principal, asset_id: UUID) -> MediaInfo:
        """The description the asset was committed with: its bytes were verified and probed
        then and never change, so probing them again would only spend CPU."""
        async with self._uow(principal.org_id) as uow:
            asset = await uow.assets.get(asset_id)
        if asset is None:
            raise NotFound("no such asset")
        return asset.media

    async def _probe_key(self, org_id: str, key: str) -> MediaInfo:
        async with self._slots.hold(org_id), self._storage.local_path(key) as path:
            return await self._prober.probe(path)

    async def probe_file(self, path: Path, org_id: str = LEGACY_SLOTS) -> MediaInfo:
        """Describe a file the server holds itself (legacy uploads, the CLI)."""
        async with self._slots.hold(org_id):
            return await self._prober.probe(path)
