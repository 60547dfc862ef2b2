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
from heimdex.domain.ports import PartETag
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
    #: presigned S3 UploadPart URLs (``parts``) instead of one PUT; completed by commit
    multipart: bool = False


class PartView(msgspec.Struct, frozen=True, kw_only=True):
    #: PUT exactly ``size`` bytes (the file's next ones) to ``url``; keep the answer's ETag
    part_number: int
    url: str
    size: int


class InitResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    upload_id: UUID
    upload_url: str
    method: str
    headers: dict[str, str]
    expires_at: datetime
    source_uri: str
    source_name: str
    #: a multipart slot's parts, in order (``upload_url`` is the first one's)
    parts: list[PartView] | None = None


PartNumber = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
#: an S3 ETag is a quoted MD5, with "-N" for a multipart object: far below this
_MAX_ETAG = 128
#: the largest commit a schema allows (10,000 parts with the longest ETags, and a source URI)
#: fits this; every other JSON route keeps HEIMDEX_MAX_JSON_BODY_BYTES
COMMIT_MAX_BODY_BYTES = 2 << 20


class CommitPart(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    part_number: PartNumber
    #: printable ASCII, as S3 ETags are (and so the largest commit has a known size)
    etag: Annotated[
        str, msgspec.Meta(min_length=1, max_length=_MAX_ETAG, pattern=r"^[\x21-\x7e]+$")
    ]

    def __post_init__(self) -> None:
        # The pattern's "$" matches before a final newline too (Python's re, as msgspec uses).
        if self.etag.endswith("\n"):
            raise ValueError("etag must be printable ASCII, without spaces")


class CommitRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    upload_id: UUID
    source_uri: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    org_id: OrgId = None
    #: a multipart slot's parts with the ETags their PUTs answered; omitted: the stored ones
    parts: Annotated[list[CommitPart], msgspec.Meta(min_length=1, max_length=10_000)] | None = None


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
                errors.MultipartUnsupported,
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
        "`/v1/uploads`), sized against HEIMDEX_UPLOAD_RESUMABLE_MAX_SIZE_BYTES. With "
        "`multipart: true` (S3 storage only, not with `resumable`; else 422 "
        "`multipart_unsupported`), `parts` lists presigned S3 UploadPart URLs: `PUT` each "
        "part's `size` bytes (in order of the file) to its `url`, keep each answer's `ETag`, "
        "and commit (with the ETags as `parts`, or without: the stored parts are listed).",
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
                multipart=data.multipart,
            ),
            public_url,
        )
        upload = issued.upload
        parts = None
        if issued.parts is not None:
            parts = [
                PartView(part_number=p.part_number, url=p.url, size=p.size) for p in issued.parts
            ]
        return InitResponse(
            upload_id=upload.id,
            upload_url=issued.target.url,
            method=issued.target.method,
            headers=issued.target.headers,
            expires_at=upload.expires_at,
            source_uri=upload.source_uri,
            source_name=upload.source_name,
            parts=parts,
        )

    @post(
        "/commit",
        operation_id="commitUpload",
        request_max_body_size=COMMIT_MAX_BODY_BYTES,
        **documented(
            AUTHENTICATED,
            JSON_BODY,
            SERVER,
            _PROBING,
            _STORAGE,
            raises(
                errors.UploadNotReceived,
                errors.UploadPartsMissing,
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
        parts = None
        if data.parts is not None:
            parts = [PartETag(part_number=p.part_number, etag=p.etag) for p in data.parts]
        asset, created = await ingest.commit_upload(
            principal, data.upload_id, data.source_uri, parts
        )
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
