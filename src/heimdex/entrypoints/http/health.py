"""Liveness (``GET /health``, no auth) and the admin health report."""

from __future__ import annotations

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec

from heimdex import __version__
from heimdex.application.health import HealthReport, HealthService
from heimdex.domain import errors
from heimdex.entrypoints.http.auth import require_scope
from heimdex.entrypoints.http.openapi import AUTHENTICATED, SERVER, documented, raises
from heimdex.entrypoints.http.problems import retry_after_headers


class Liveness(msgspec.Struct, frozen=True):
    status: str
    version: str


@get("/health", tags=["health"], summary="Liveness", exclude_from_auth=True)
async def liveness() -> Liveness:
    """Answers 200 while the process serves requests; checks no dependency."""
    return Liveness(status="ok", version=__version__)


class AdminHealthController(Controller):
    path = "/admin/health"
    tags = ["admin"]
    guards = [require_scope("admin")]

    @get(
        "/",
        operation_id="adminHealth",
        **documented(
            AUTHENTICATED,
            SERVER,
            raises(errors.InsufficientScope),
            responses={
                503: ResponseSpec(data_container=HealthReport, description="A check failed")
            },
        ),
        summary="Dependency health",
        description="Database, storage, prober and queue, each with its latency. Needs the "
        "`admin` scope. 503 when any check fails; each failed check says whether it is "
        "`transient` (a dependency restarting) and, when all of them are, `Retry-After` says "
        "when to ask again. A misconfiguration gets no `Retry-After`: it needs fixing.",
    )
    async def report(self, health: NamedDependency[HealthService]) -> Response[HealthReport]:
        report = await health.report()
        if report.ok:
            return Response(report, status_code=200)
        headers = retry_after_headers() if report.transient else None
        return Response(report, status_code=503, headers=headers)
