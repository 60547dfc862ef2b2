"""Sidecar jobs over HTTP: request one for an asset, poll it, read what it produced."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Link
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED

from heimdex.application.assets import encode_cursor
from heimdex.application.job_listing import MAX_JOB_PAGE, JobListing
from heimdex.application.job_requests import JobRequests
from heimdex.application.sidecars import SidecarService, ThumbnailListing
from heimdex.application.tenancy import ensure_same_org
from heimdex.domain import errors
from heimdex.domain.model import (
    Job,
    JobError,
    JobFilter,
    JobKind,
    JobStatus,
    Principal,
    StoryboardSpec,
    ThumbnailSpec,
)
from heimdex.entrypoints.http.auth import current_principal
from heimdex.entrypoints.http.openapi import (
    AUTHENTICATED,
    JSON_BODY,
    NOT_FOUND,
    PARAMETERS,
    SERVER,
    documented,
    raises,
)
from heimdex.entrypoints.http.query_values import parse_timestamp

_JOB_LINKS = {
    "getJob": Link(operation_id="getJob", parameters={"job_id": "$response.body#/job_id"}),
    "getAsset": Link(operation_id="getAsset", parameters={"asset_id": "$response.body#/asset_id"}),
    "readSidecar": Link(
        operation_id="readSidecar", parameters={"asset_id": "$response.body#/asset_id"}
    ),
    "listThumbnails": Link(
        operation_id="listThumbnails", parameters={"asset_id": "$response.body#/asset_id"}
    ),
}


class ThumbnailOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    count: Annotated[int, msgspec.Meta(ge=0, le=100)] = 10
    width: Annotated[int, msgspec.Meta(ge=16, le=3840)] = 320
    format: Literal["jpg", "webp"] = "jpg"


class StoryboardOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    width: Annotated[int, msgspec.Meta(ge=16, le=640)] = 160
    format: Literal["jpg", "webp"] = "jpg"


class SidecarRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    org_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    source_uri: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    thumbnails: ThumbnailOptions | None = None
    # ``false``: no storyboard; ``true``, null or left out: the defaults.
    storyboard: bool | StoryboardOptions | None = None
    force: bool = False


class JobLinks(msgspec.Struct, frozen=True, kw_only=True):
    self: str
    asset: str
    sidecar: str
    thumbnails: str


class JobView(msgspec.Struct, frozen=True, kw_only=True):
    job_id: UUID
    kind: str
    status: JobStatus
    asset_id: UUID
    progress: float
    attempts: int
    max_attempts: int
    error: JobError | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    thumbnails: ThumbnailSpec
    storyboard: StoryboardSpec | None
    links: JobLinks


def job_view(job: Job) -> JobView:
    asset = f"/v1/assets/{job.asset_id}"
    return JobView(
        job_id=job.id,
        kind=job.kind.value,
        status=job.status,
        asset_id=job.asset_id,
        progress=job.progress,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        error=job.error,
        next_attempt_at=job.next_attempt_at,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        thumbnails=job.thumbnails,
        storyboard=job.storyboard,
        links=JobLinks(
            self=f"/v1/jobs/{job.id}",
            asset=asset,
            sidecar=f"{asset}/sidecar",
            thumbnails=f"{asset}/thumbnails",
        ),
    )


def _storyboard_spec(option: bool | StoryboardOptions | None) -> StoryboardSpec | None:
    if option is False:
        return None
    chosen = option if isinstance(option, StoryboardOptions) else StoryboardOptions()
    return StoryboardSpec(width=chosen.width, format=chosen.format)


class JobList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[JobView]
    next_cursor: str | None


class JobController(Controller):
    path = "/jobs"
    tags = ["jobs"]

    @get(
        "/",
        operation_id="listJobs",
        **documented(AUTHENTICATED, PARAMETERS, SERVER, raises(errors.TimestampOutOfRange)),
        summary="List jobs",
        description="Newest first. Pass `next_cursor` back as `cursor` for the next page; "
        "`created_after`/`created_before` are exclusive.",
    )
    async def list_jobs(
        self,
        request: Request[Any, Any, Any],
        job_listing: NamedDependency[JobListing],
        status: Annotated[JobStatus | None, QueryParameter()] = None,
        kind: Annotated[JobKind | None, QueryParameter()] = None,
        asset_id: Annotated[UUID | None, QueryParameter()] = None,
        created_after: Annotated[str | None, QueryParameter(format="date-time")] = None,
        created_before: Annotated[str | None, QueryParameter(format="date-time")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_JOB_PAGE)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> JobList:
        filters = JobFilter(
            status=status,
            kind=kind,
            asset_id=asset_id,
            created_after=parse_timestamp("created_after", created_after),
            created_before=parse_timestamp("created_before", created_before),
        )
        page = await job_listing.list(current_principal(request), filters, limit, cursor)
        return JobList(
            items=[job_view(job) for job in page.items],
            next_cursor=encode_cursor(page.next_cursor) if page.next_cursor else None,
        )

    @get(
        "/{job_id:uuid}",
        operation_id="getJob",
        **documented(AUTHENTICATED, PARAMETERS, NOT_FOUND, SERVER, links=_JOB_LINKS),
        summary="Poll a job",
    )
    async def get_job(
        self,
        job_id: FromPath[UUID],
        request: Request[Any, Any, Any],
        jobs: NamedDependency[JobRequests],
    ) -> JobView:
        # The caller from the request (see get_asset): one dependency, no task group.
        return job_view(await jobs.get(current_principal(request), job_id))


class SidecarController(Controller):
    path = "/assets/{asset_id:uuid}"
    tags = ["sidecars"]

    @post(
        "/sidecar",
        status_code=HTTP_202_ACCEPTED,
        operation_id="requestSidecar",
        **documented(
            AUTHENTICATED,
            JSON_BODY,
            NOT_FOUND,
            SERVER,
            raises(errors.SourceUriForbidden, errors.JobQuotaExceeded),
            idempotent=True,
            links=_JOB_LINKS,
        ),
        summary="Generate the sidecar",
        description="Queues a job that makes thumbnails, a storyboard (unless `storyboard: "
        "false`; `{width, format}` to choose its tiles' width and its sheets' format), a poster "
        "and the `heimdex.sidecar/v1` document; "
        "answers the job (202, `Location: /v1/jobs/{job_id}`). While one is queued or running, "
        "that job is answered; once the sidecar is ready, the finished job — unless "
        "`force: true` asks to make it again.",
    )
    async def request_sidecar(
        self,
        asset_id: FromPath[UUID],
        data: JSONBody[SidecarRequest],
        principal: NamedDependency[Principal],
        jobs: NamedDependency[JobRequests],
    ) -> Response[JobView]:
        ensure_same_org(principal, data.org_id)
        options = data.thumbnails or ThumbnailOptions()
        spec = ThumbnailSpec(count=options.count, width=options.width, format=options.format)
        job, _ = await jobs.request_sidecar(
            principal,
            asset_id,
            spec,
            force=data.force,
            source_uri=data.source_uri,
            storyboard=_storyboard_spec(data.storyboard),
        )
        return Response(
            job_view(job),
            status_code=HTTP_202_ACCEPTED,
            headers={"Location": f"/v1/jobs/{job.id}"},
        )

    @get(
        "/sidecar",
        operation_id="readSidecar",
        **documented(
            AUTHENTICATED,
            PARAMETERS,
            SERVER,
            raises(errors.NotFound, errors.SidecarNotReady, errors.StorageError),
            responses={
                200: ResponseSpec(
                    data_container=dict[str, Any],
                    generate_examples=False,
                    description="The `heimdex.sidecar/v1` document",
                )
            },
        ),
        summary="Read the sidecar",
        description="The `heimdex.sidecar/v1` document (its JSON Schema is at "
        "`/v1/schemas/sidecar/v1`); 404 `sidecar_not_ready` until its job succeeded.",
        media_type="application/json",
    )
    async def read_sidecar(
        self,
        asset_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        sidecars: NamedDependency[SidecarService],
    ) -> Response[bytes]:
        return Response(await sidecars.document(principal, asset_id), media_type="application/json")

    @get(
        "/thumbnails",
        operation_id="listThumbnails",
        **documented(
            AUTHENTICATED,
            PARAMETERS,
            SERVER,
            raises(errors.NotFound, errors.SidecarNotReady, errors.StorageError),
        ),
        summary="List thumbnails",
        description="Each with a signed URL that works without a token until it expires; "
        "`summary` says how many were asked for and, when fewer were made, why "
        "(`fewer_frames`: parts of the duration that hold no video frame).",
    )
    async def list_thumbnails(
        self,
        asset_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        sidecars: NamedDependency[SidecarService],
        public_url: NamedDependency[str],
    ) -> ThumbnailListing:
        return await sidecars.thumbnails(principal, asset_id, public_url)
