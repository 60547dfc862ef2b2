"""Dependency providers: handlers receive use cases and the caller, never look them up."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from heimdex.application.assets import AssetService
from heimdex.application.health import HealthService
from heimdex.application.ingest import IngestService
from heimdex.application.job_requests import JobRequests
from heimdex.application.probing import ProbeService
from heimdex.application.sidecars import SidecarService
from heimdex.bootstrap import Services
from heimdex.domain.model import Principal
from heimdex.entrypoints.http.auth import current_principal


def services_from(state: State) -> Services:
    services: Services = state.services
    return services


async def provide_probing(state: State) -> ProbeService:
    return services_from(state).probing


async def provide_ingest(state: State) -> IngestService:
    return services_from(state).ingest


async def provide_assets(state: State) -> AssetService:
    return services_from(state).assets


async def provide_jobs(state: State) -> JobRequests:
    return services_from(state).jobs


async def provide_sidecars(state: State) -> SidecarService:
    return services_from(state).sidecars


async def provide_health(state: State) -> HealthService:
    return services_from(state).health


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    return current_principal(request)


DEPENDENCIES = {
    "probing": Provide(provide_probing),
    "ingest": Provide(provide_ingest),
    "assets": Provide(provide_assets),
    "jobs": Provide(provide_jobs),
    "sidecars": Provide(provide_sidecars),
    "health": Provide(provide_health),
    "principal": Provide(provide_principal),
}
