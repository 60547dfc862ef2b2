"""Where clients reach this API: ``HEIMDEX_PUBLIC_URL`` when set (behind a proxy), else the
request's own base URL."""

from __future__ import annotations

from typing import Any

from litestar import Request

from heimdex.entrypoints.http.deps import services_from


def public_base_url(request: Request[Any, Any, Any]) -> str:
    configured = services_from(request.app.state).settings.public_url
    return (configured or str(request.base_url)).rstrip("/")
