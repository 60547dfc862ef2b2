"""Dependency providers: handlers receive use cases and the caller, never look them up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from heimdex.application.search import SearchService
from heimdex.bootstrap import Services
from heimdex.domain.model import Principal
from heimdex.entrypoints.http.auth import current_principal

T = TypeVar("T")


def services_from(state: State) -> Services:
    services: Services = state.services
    return services


def _use_case(pick: Callable[[Services], T]) -> Provide:
    """A provider of the use case ``pick`` takes from the process's ``Services``."""

    def provide(state: State) -> T:
        return pick(services_from(state))

    return Provide(provide, sync_to_thread=False)


def provide_search(state: State) -> SearchService:
    search = services_from(state).search
    if search is None:  # every process ``build`` makes has one
        raise RuntimeError("this process was built without the search service")
    return search


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    return current_principal(request)


DEPENDENCIES = {
    "probing": _use_case(lambda services: services.probing),
    "ingest": _use_case(lambda services: services.ingest),
    "assets": _use_case(lambda services: services.assets),
    "jobs": _use_case(lambda services: services.jobs),
    "sidecars": _use_case(lambda services: services.sidecars),
    "health": _use_case(lambda services: services.health),
    "pictures": _use_case(lambda services: services.pictures),
    "principal": Provide(provide_principal),
    "webhooks": _use_case(lambda services: services.webhooks),
    "job_listing": _use_case(lambda services: services.job_listing),
    "search": Provide(provide_search, sync_to_thread=False),
}
