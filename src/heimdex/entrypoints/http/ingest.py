"""``/v1/ingest``: upload slots, commits, synchronous probes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, Response, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Link
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from heimdex.application.ingest import IngestService, UploadRequest
from heimdex.application.probing import ProbeService
from heimdex.application.tenancy import ensure_same_org
from heimdex.domain import errors
from heimdex.domain.errors import InvalidInput
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import Principal
from heimdex.entrypoints.http.assets import ASSET_LINKS, AssetView, asset_view
from heimdex.entrypoints.http.openapi import (
    AUTHENTICATED,
    JSON_BODY,
    SERVER,
    documented,
    raises,
)

OrgId = Annotated[str, msgspec.Meta(max_length=128)] | None
# msgspec searches for the pattern, where "$" also matches before a final "\n": the length
# bound makes it a whole match.
Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-fA-F]{64}$", min_length=64, max_length=64)]


class InitRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    source_name: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    content_length: Annotated[int, msgspec.Meta(ge=1)]
    content_type: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    sha256: Sha256 | None = None
    org_id: OrgId = None
    #: a tus upload URL (PATCHes, resumable) instead of one PUT
    resumable: bool = False


class InitResponse(msgspec.Struct, frozen=True, kw_only=True):
    upload_id: UUID
    upload_url: str
    method: str
    headers: dict[str, str]
    expires_at: datetime
    source_uri: str
    source_name: str


class CommitRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    upload_id: UUID
    source_uri: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    org_id: OrgId = None


class ProbeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    source_uri: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    asset_id: UUID | None = None
    org_id: OrgId = None


# Probing and committing read the object and run the prober: in one of the organisation's probe
# slots (429 probe_busy with Retry-After when none comes free), on a decode worker (503
# decoders_busy when none does), within the metadata budget (422 metadata_too_large).
_PROBING = raises(errors.InvalidMedia, errors.NotFound, errors.SourceUriForbidden, family=True)
_STORAGE = raises(
    errors.StorageError, errors.ProberUnavailable, errors.ProbeBusy, errors.DecodersBusy
)


class IngestController(Controller):
    path = "/ingest"
    tags = ["ingest"]

    @post(
        "/init",
        status_code=HTTP_201_CREATED,
        operation_id="initUpload",
        **documented(
            AUTHENTICATED,
            JSON_BODY,
            SERVER,
            raises(
                errors.UploadTooLarge,
                errors.UnsupportedMediaType,
                errors.StorageQuotaExceeded,
                errors.TooManyResumableUploads,
                errors.StorageError,
            ),
            idempotent=True,
            links={
                "receiveUpload": Link(
                    operation_id="receiveUpload",
                    parameters={"upload_id": "$response.body#/upload_id"},
                ),
                "commitUpload": Link(
                    operation_id="commitUpload",
                    request_body={"upload_id": "$response.body#/upload_id"},
                ),
                "probeUpload": Link(
                    operation_id="probeMedia",
                    request_body={"source_uri": "$response.body#/source_uri"},
                ),
            },
        ),
        summary="Ask for an upload slot",
        description="Validates the declared file (size against HEIMDEX_MAX_UPLOAD_SIZE_BYTES, "
        "type video/* or audio/*) and answers where to send the bytes: `upload_url` with "
        "`method` and `headers`, valid until `expires_at`. The name is reduced to a safe one. "
        "With `resumable: true`, `upload_url` is a tus upload URL (`PATCH`, see "
        "`/v1/uploads`), sized against HEIMDEX_UPLOAD_RESUMABLE_MAX_SIZE_BYTES.",
    )
    async def init(
        self,
        data: JSONBody[InitRequest],
        principal: NamedDependency[Principal],
        ingest: NamedDependency[IngestService],
        public_url: NamedDependency[str],
    ) -> InitResponse:
        ensure_same_org(principal, data.org_id)
        issued = await ingest.init_upload(
            principal,
            UploadRequest(
                source_name=data.source_name,
                content_length=data.content_length,
                content_type=data.content_type,
                sha256=data.sha256,
                resumable=data.resumable,
            ),
            public_url,
        )
        upload = issued.upload
        return InitResponse(
            upload_id=upload.id,
            upload_url=issued.target.url,
            method=issued.target.method,
            headers=issued.target.headers,
            expires_at=upload.expires_at,
            source_uri=upload.source_uri,
            source_name=upload.source_name,
        )

    @post(
        "/commit",
        operation_id="commitUpload",
        **documented(
            AUTHENTICATED,
            JSON_BODY,
            SERVER,
            _PROBING,
            _STORAGE,
            raises(
                errors.UploadNotReceived,
                errors.UploadInProgress,
                errors.UploadExpired,
                errors.LengthMismatch,
                errors.ChecksumMismatch,
            ),
            idempotent=True,
            links=ASSET_LINKS,
            responses={
                HTTP_200_OK: ResponseSpec(
                    data_container=AssetView, description="Committed before: the same asset"
                )
            },
        ),
        summary="Make an uploaded file an asset",
        description="Verifies the stored object (present, size, sha256), probes it and answers "
        "the asset: 201 the first time, 200 with the same asset when committed again. "
        "Simultaneous commits of one upload probe it once; the others answer its asset. The "
        "probe takes one of the organisation's probe slots (HEIMDEX_PROBE_MAX_PER_ORG): when "
        "none frees up within HEIMDEX_PROBE_WAIT_SECONDS the answer is 429 `probe_busy` with "
        "`Retry-After`. A file with more metadata than HEIMDEX_DECODE_MAX_METADATA_ENTRIES/"
        "_BYTES answers 422 `metadata_too_large` before it is parsed.",
    )
    async def commit(
        self,
        data: JSONBody[CommitRequest],
        principal: NamedDependency[Principal],
        ingest: NamedDependency[IngestService],
    ) -> Response[AssetView]:
        ensure_same_org(principal, data.org_id)
        asset, created = await ingest.commit_upload(principal, data.upload_id, data.source_uri)
        return Response(
            asset_view(asset),
            status_code=HTTP_201_CREATED if created else HTTP_200_OK,
            headers={"Location": f"/v1/assets/{asset.id}"},
        )

    @post(
        "/probe",
        status_code=HTTP_200_OK,
        operation_id="probeMedia",
        **documented(AUTHENTICATED, JSON_BODY, SERVER, _PROBING, _STORAGE, idempotent=True),
        summary="Probe an upload or asset",
        description="Describes the media of one of your uploads (`source_uri`, exactly as init "
        "issued it) or assets (`asset_id`). Any other `source_uri` answers 422 "
        "`source_uri_forbidden` before anything is opened. An asset answers the description "
        "stored when it was committed (no new probe). Probing an upload takes one of the "
        "organisation's probe slots (HEIMDEX_PROBE_MAX_PER_ORG): when none frees up within "
        "HEIMDEX_PROBE_WAIT_SECONDS the answer is 429 `probe_busy` with `Retry-After`. A file "
        "with more metadata than HEIMDEX_DECODE_MAX_METADATA_ENTRIES/_BYTES answers 422 "
        "`metadata_too_large` before it is parsed.",
    )
    async def probe(
        self,
        data: JSONBody[ProbeRequest],
        principal: NamedDependency[Principal],
        probing: NamedDependency[ProbeService],
    ) -> MediaInfo:
        ensure_same_org(principal, data.org_id)
        if (data.source_uri is None) == (data.asset_id is None):
            raise InvalidInput("give exactly one of source_uri and asset_id")
        if data.asset_id is not None:
            return await probing.probe_asset(principal, data.asset_id)
        assert data.source_uri is not None
        return await probing.probe_source(principal, data.source_uri)
