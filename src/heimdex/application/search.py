"""Search by what frames look like: other assets sharing frames with one (a re-encode, a trim,
a rescale), and the frames nearest a frame of an asset or an uploaded image.

Every answer is exact within ``max_distance`` (``heimdex.domain.frames``: the bands answer up
to ``MAX_DISTANCE``), scoped to the caller's organisation by its unit of work (and, on
PostgreSQL, by row-level security): another organisation's asset is ``NotFound`` and its frames
never appear. Search by text needs a text model: until one plugs in behind the same port, it
answers ``SemanticSearchUnavailable``.
"""

from __future__ import annotations

from collections import defaultdict
from uuid import UUID

import msgspec

from heimdex.application.owned_assets import owned_asset
from heimdex.application.pictures import read_sidecar
from heimdex.application.probe_gate import ProbeSlots
from heimdex.domain.errors import (
    FramesNotReady,
    InvalidInput,
    NotFound,
    SemanticSearchUnavailable,
    TimeOutOfRange,
)
from heimdex.domain.frames import MAX_DISTANCE, FrameFingerprint, FrameMatch, FramePair
from heimdex.domain.model import Asset, Principal
from heimdex.domain.ports import Clock, FrameFingerprinter, Storage, UnitOfWorkFactory
from heimdex.domain.sidecar import SidecarDocument

MAX_LIMIT = 100
#: matched time pairs listed per similar asset, at most
PAIRS_SHOWN = 5
_SAME_TIME = 1e-6


class TimePair(msgspec.Struct, frozen=True, kw_only=True):
    time: float
    other_time: float
    distance: int


class SimilarAsset(msgspec.Struct, frozen=True, kw_only=True):
    asset_id: UUID
    #: how many of the asked asset's frames have a frame of this one within ``max_distance``
    frames_matched: int
    #: the nearest of those matches
    distance: int
    #: a few matched frames: the asked asset's time, this one's, their distance; best first
    matches: list[TimePair]


class SimilarAssets(msgspec.Struct, frozen=True, kw_only=True):
    asset_id: UUID
    #: the asked asset's fingerprinted frames
    frames: int
    items: list[SimilarAsset]


class FrameHit(msgspec.Struct, frozen=True, kw_only=True):
    asset_id: UUID
    time: float
    distance: int
    #: a signed URL of a picture of the frame (its thumbnail, or its storyboard tile as
    #: ``sprite#xywh=x,y,w,h``); null when the asset's sidecar lists neither
    thumbnail_url: str | None


class FrameHits(msgspec.Struct, frozen=True, kw_only=True):
    items: list[FrameHit]


def _check(max_distance: int, limit: int) -> None:
    if not 0 <= max_distance <= MAX_DISTANCE:
        raise InvalidInput(
            f"max_distance must be between 0 and {MAX_DISTANCE}: the search is exact only that far"
        )
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")


def rank_similar(pairs: list[FramePair], limit: int) -> list[SimilarAsset]:
    """Assets by how many of the asked asset's frames they match (most first), then by their
    mean best distance, then by id. Each frame of the asked asset counts once per other asset,
    with its nearest match."""
    best: dict[UUID, dict[float, FramePair]] = defaultdict(dict)
    for pair in pairs:
        per_time = best[pair.other_asset_id]
        kept = per_time.get(pair.time)
        if kept is None or (pair.distance, pair.other_time) < (kept.distance, kept.other_time):
            per_time[pair.time] = pair
    ranked: list[tuple[tuple[int, float, str], SimilarAsset]] = []
    for other, per_time in best.items():
        chosen = sorted(per_time.values(), key=lambda p: (p.distance, p.time, p.other_time))
        mean = sum(p.distance for p in chosen) / len(chosen)
        item = SimilarAsset(
            asset_id=other,
            frames_matched=len(chosen),
            distance=chosen[0].distance,
            matches=[
                TimePair(time=p.time, other_time=p.other_time, distance=p.distance)
                for p in chosen[:PAIRS_SHOWN]
            ],
        )
        ranked.append(((-len(chosen), mean, str(other)), item))
    ranked.sort(key=lambda entry: entry[0])
    return [item for _, item in ranked[:limit]]


class SearchService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        fingerprinter: FrameFingerprinter,
        storage: Storage,
        clock: Clock,
        url_ttl_seconds: int,
        image_slots: ProbeSlots | None = None,
    ) -> None:
        """``image_slots`` caps each organisation's search images decoding at once, so one
        organisation's images never hold the search images' whole pool."""
        self._uow = uow
        self._fingerprinter = fingerprinter
        self._image_slots = image_slots or ProbeSlots(per_org=0, wait_seconds=0)
        self._storage = storage
        self._clock = clock
        self._url_ttl = url_ttl_seconds

    async def similar_assets(
        self, principal: Principal, asset_id: UUID, *, max_distance: int, limit: int
    ) -> SimilarAssets:
        """The organisation's other assets that share frames with ``asset_id``, ranked."""
        _check(max_distance, limit)
        frames = await self._frames_of(principal, asset_id)
        async with self._uow(principal.org_id) as unit:
            pairs = await unit.frames.shared(asset_id, max_distance=max_distance)
        return SimilarAssets(
            asset_id=asset_id, frames=len(frames), items=rank_similar(pairs, limit)
        )

    async def frames_like_asset_frame(
        self,
        principal: Principal,
        asset_id: UUID,
        time: float,
        *,
        max_distance: int,
        limit: int,
        base_url: str,
    ) -> FrameHits:
        """The frames nearest the asset's frame at ``time`` (its fingerprinted frame nearest
        that time: a storyboard tile or thumbnail), that frame itself left out."""
        _check(max_distance, limit)
        asset = await owned_asset(self._uow, principal, asset_id)
        duration = asset.media.duration
        if time < 0 or (duration is not None and time > duration):
            raise TimeOutOfRange(
                f"time {time:g} is outside the video (0 to {duration or 0:g} seconds)"
            )
        frames = await self._frames_of(principal, asset_id)
        frame = min(frames, key=lambda f: (abs(f.time - time), f.time))
        async with self._uow(principal.org_id) as unit:
            found = await unit.frames.nearest(
                frame.fingerprint, max_distance=max_distance, limit=limit + 1
            )
        found = [
            m
            for m in found
            if not (m.asset_id == asset_id and abs(m.time - frame.time) < _SAME_TIME)
        ]
        return await self._hits(principal, found[:limit], base_url)

    async def frames_like_image(
        self, principal: Principal, data: bytes, *, max_distance: int, limit: int, base_url: str
    ) -> FrameHits:
        """The frames nearest an image (JPEG, PNG or WebP), decoded in the decode pool."""
        _check(max_distance, limit)
        async with self._image_slots.hold(principal.org_id):
            fingerprint = await self._fingerprinter.fingerprint(data)
        async with self._uow(principal.org_id) as unit:
            found = await unit.frames.nearest(fingerprint, max_distance=max_distance, limit=limit)
        return await self._hits(principal, found, base_url)

    async def frames_like_text(self, principal: Principal, text: str) -> FrameHits:
        raise SemanticSearchUnavailable(
            "search by text needs a text model, which this server does not have yet; search "
            "by a frame (asset_id and time) or by an image"
        )

    async def _frames_of(self, principal: Principal, asset_id: UUID) -> list[FrameFingerprint]:
        async with self._uow(principal.org_id) as unit:
            asset = await unit.assets.get(asset_id)
            if asset is None:
                raise NotFound("no such asset")
            frames = await unit.frames.of_asset(asset_id)
        if not frames:
            raise FramesNotReady(
                "the asset has no fingerprinted frames: its sidecar job has not run since "
                "fingerprints were added (POST /v1/assets/{asset_id}/sidecar, or heimdex "
                "reindex), or it has no frame that is not dark or flat"
            )
        return frames

    async def _hits(
        self, principal: Principal, found: list[FrameMatch], base_url: str
    ) -> FrameHits:
        expires = int(self._clock.now().timestamp()) + self._url_ttl
        documents: dict[UUID, SidecarDocument | None] = {}
        items = []
        for match in found:
            if match.asset_id not in documents:
                documents[match.asset_id] = await self._sidecar(principal, match.asset_id)
            document = documents[match.asset_id]
            url = None
            if document is not None:
                url = await self._picture_url(document, match.time, base_url, expires)
            items.append(
                FrameHit(
                    asset_id=match.asset_id,
                    time=match.time,
                    distance=match.distance,
                    thumbnail_url=url,
                )
            )
        return FrameHits(items=items)

    async def _sidecar(self, principal: Principal, asset_id: UUID) -> SidecarDocument | None:
        async with self._uow(principal.org_id) as unit:
            asset: Asset | None = await unit.assets.get(asset_id)
        return None if asset is None else await read_sidecar(self._storage, asset)

    async def _picture_url(
        self, document: SidecarDocument, time: float, base_url: str, expires: int
    ) -> str | None:
        """The thumbnail of the frame at ``time``, else its storyboard tile, else the
        thumbnail nearest it."""
        for thumbnail in document.thumbnails:
            if abs(thumbnail.time - time) < _SAME_TIME:
                return await self._storage.download_url(thumbnail.key, base_url, expires)
        board = document.storyboard
        if board is not None:
            for tile in board.tiles:
                if abs(tile.time - time) < _SAME_TIME and tile.sprite < len(board.sprites):
                    sprite = await self._storage.download_url(
                        board.sprites[tile.sprite].key, base_url, expires
                    )
                    return f"{sprite}#xywh={tile.x},{tile.y},{tile.w},{tile.h}"
        if document.thumbnails:
            nearest = min(document.thumbnails, key=lambda t: abs(t.time - time))
            return await self._storage.download_url(nearest.key, base_url, expires)
        return None
