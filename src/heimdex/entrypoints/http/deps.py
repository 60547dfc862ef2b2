"""Dependency providers: handlers receive use cases and the caller, never look them up.

:func:`dependencies` is the one place the HTTP edge takes what it uses from the process's
``Services``; a handler names what it needs by parameter name (``ingest``, ``principal``…).
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import Provide

from heimdex.bootstrap import Services
from heimdex.domain.model import Principal
from heimdex.entrypoints.http.auth import TokenDecoder, current_principal
from heimdex.entrypoints.http.legacy import BodySpool
from heimdex.entrypoints.http.metrics import MetricsExport


def _value(value: object) -> Provide:
    """A provider of ``value``, built once with the app."""

    def provide() -> Any:
        return value

    return Provide(provide, sync_to_thread=False)


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    return current_principal(request)


def _public_url(configured: str | None) -> Provide:
    """Where clients reach this API: ``HEIMDEX_PUBLIC_URL`` when set (behind a proxy), else the
    request's own base URL."""

    def provide(request: Request[Any, Any, Any]) -> str:
        return (configured or str(request.base_url)).rstrip("/")

    return Provide(provide, sync_to_thread=False)


def dependencies(services: Services) -> dict[str, Provide]:
    """What handlers may ask for, taken from ``services`` once, when the app is built."""
    # Typed here so that mypy checks the adapters against what the handlers use.
    tokens: TokenDecoder = services.tokens
    request_bodies: BodySpool = services.request_bodies
    metrics: MetricsExport = services.metrics
    settings = services.settings
    return {
        "principal": Provide(provide_principal),
        "public_url": _public_url(settings.public_url),
        "probing": _value(services.probing),
        "ingest": _value(services.ingest),
        "resumable_uploads": _value(services.resumable),
        "assets": _value(services.assets),
        "jobs": _value(services.jobs),
        "sidecars": _value(services.sidecars),
        "health": _value(services.health),
        "pictures": _value(services.pictures),
        "webhooks": _value(services.webhooks),
        "job_listing": _value(services.job_listing),
        "search": _value(services.search),
        "signed_urls": _value(services.signed_urls),
        "tokens": _value(tokens),
        # the legacy upload: where its body is spooled, and how large its file may be
        "request_bodies": _value(request_bodies),
        "max_upload_bytes": _value(settings.uploads.max_size_bytes),
        # GET /metrics: the registry, what it reads at scrape time, its token if any
        "metrics": _value(metrics),
        "job_runner": _value(services.job_runner),
        "deliverer": _value(services.deliverer),
        "metrics_token": _value(settings.metrics.token),
    }
