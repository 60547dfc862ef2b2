"""``GET /v1/schemas/sidecar/v1``: the published JSON Schema of the sidecar document."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec

from heimdex.schemas import sidecar_schema_v1


@get(
    "/schemas/sidecar/v1",
    tags=["sidecars"],
    summary="The sidecar v1 JSON Schema",
    media_type="application/schema+json",
    responses={
        200: ResponseSpec(
            data_container=dict[str, Any],
            media_type="application/schema+json",
            generate_examples=False,
            description="A JSON Schema (draft 2020-12) document",
        )
    },
    exclude_from_auth=True,  # a published contract, not tenant data
)
async def sidecar_schema() -> Response[bytes]:
    return Response(sidecar_schema_v1(), media_type="application/schema+json")
