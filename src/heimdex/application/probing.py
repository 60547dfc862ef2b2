"""Synchronous probing: describe a stored upload or asset, or a file the server already holds."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from heimdex.domain.errors import NotFound, SourceUriForbidden
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import Principal
from heimdex.domain.ports import Prober, Storage, UnitOfWorkFactory


class ProbeService:
    """Probes with the configured prober. A ``source_uri`` is an identifier: it is looked up
    among the caller's own uploads and the server opens the object it has on record — never the
    URI itself."""

    def __init__(self, uow: UnitOfWorkFactory, storage: Storage, prober: Prober) -> None:
        self._uow = uow
        self._storage = storage
        self._prober = prober

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
        return await self._probe_key(upload.key)

    async def probe_asset(self, principal: Principal, asset_id: UUID) -> MediaInfo:
        async with self._uow(principal.org_id) as uow:
            asset = await uow.assets.get(asset_id)
        if asset is None:
            raise NotFound("no such asset")
        return await self._probe_key(asset.key)

    async def _probe_key(self, key: str) -> MediaInfo:
        async with self._storage.local_path(key) as path:
            return await self._prober.probe(path)

    async def probe_file(self, path: Path) -> MediaInfo:
        """Describe a file the server holds itself (legacy uploads, the CLI)."""
        return await self._prober.probe(path)
