"""The Litestar application factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, Router
from litestar.enums import MediaType, ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Receive, Scope, Send

from heimdex import __version__
from heimdex.application.sweeping import sweep_forever
from heimdex.bootstrap import Adapters, Services, build_adapters, build_services
from heimdex.entrypoints.http.api_docs import SWAGGER, docs_assets, docs_page
from heimdex.entrypoints.http.assets import AssetController
from heimdex.entrypoints.http.auth import BearerAuthMiddleware
from heimdex.entrypoints.http.deps import dependencies
from heimdex.entrypoints.http.files import FileController
from heimdex.entrypoints.http.health import AdminHealthController, liveness
from heimdex.entrypoints.http.idempotency import IdempotencyMiddleware
from heimdex.entrypoints.http.ingest import IngestController
from heimdex.entrypoints.http.input_guard import GuardedRequest, InputGuardMiddleware
from heimdex.entrypoints.http.jobs import JobController, SidecarController
from heimdex.entrypoints.http.legacy import legacy_metadata
from heimdex.entrypoints.http.metrics import metrics
from heimdex.entrypoints.http.openapi import finalize as finalize_openapi
from heimdex.entrypoints.http.pictures import PictureController
from heimdex.entrypoints.http.problems import EXCEPTION_HANDLERS
from heimdex.entrypoints.http.rate_limit import RateLimitMiddleware
from heimdex.entrypoints.http.request_log import log_request
from heimdex.entrypoints.http.schemas import sidecar_schema
from heimdex.entrypoints.http.search import SearchController
from heimdex.entrypoints.http.security_headers import with_security_headers
from heimdex.entrypoints.http.tus import tus_controller, tus_options_headers
from heimdex.entrypoints.http.uploads import UploadController
from heimdex.entrypoints.http.webhooks import WebhookController, webhook_event_schema
from heimdex.logs import configure_logging, get_logger
from heimdex.settings import Settings, load_settings

log = get_logger(__name__)

# Multipart framing around the legacy upload's file part.
_MULTIPART_OVERHEAD = 1024 * 1024


class HeimdexApp(Litestar):
    """Litestar with the request log, metrics and security headers wrapped around everything,
    routing errors included."""

    #: the services the app was built on, set by :func:`create_app` (its handlers and
    #: middleware get theirs as dependencies and arguments; a test reads them here)
    services: Services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] == ScopeType.HTTP:
            await log_request(
                with_security_headers(super().__call__),
                scope,
                receive,
                send,
                self.services.metrics.request_finished,
            )
        else:
            await super().__call__(scope, receive, send)


def given(middleware: Callable[..., ASGIApp], **parts: Any) -> Callable[[ASGIApp], ASGIApp]:
    """``middleware`` built with the parts it uses (``parts``), as a factory Litestar calls with
    the app it wraps. A function: Litestar deep-copies a router with its middleware, and a
    function is copied as itself, so the parts stay the process's own."""

    def build(app: ASGIApp) -> ASGIApp:
        return middleware(app, **parts)

    return build


def create_app(
    services: Services | None = None,
    settings: Settings | None = None,
    *,
    adapters: Adapters | None = None,
    warm_decoders: bool = False,
) -> Litestar:
    """Build the app. Given ``services`` the caller owns them; otherwise they are built from
    ``settings`` (or the environment) on ``adapters`` (by default built from the same settings)
    and closed when the app shuts down. ``warm_decoders`` starts the decode processes in the
    background as the app starts (``heimdex serve``), so the first commit or job does not wait
    seconds for them."""
    owned = services is None
    if services is None:
        settings = settings or load_settings()
        services = build_services(settings, adapters or build_adapters(settings))

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        if services.settings.uses_development_secret:
            log.warning(
                "insecure_jwt_secret",
                message="HEIMDEX_JWT_SECRET is the development default 'change-me': anyone can "
                "mint tokens. Set a secret of 32+ bytes before exposing this server.",
            )
        if owned:
            await services.startup()
        # The API always probes; it makes thumbnails only when it runs the jobs itself.
        warming = (
            asyncio.create_task(
                services.warm_decoders(
                    probing=True,
                    thumbnails=services.settings.jobs.queue_backend == "immediate",
                )
            )
            if warm_decoders
            else None
        )
        # In-process jobs: this process also sweeps the database (outbox, retries, dead leases,
        # abandoned uploads); with Redis the workers do. Its own scratch files it always sweeps.
        immediate = services.settings.jobs.queue_backend == "immediate"
        sweeper = asyncio.create_task(
            sweep_forever(
                services.settings.jobs.sweep_interval_seconds,
                *(services.sweeps() if immediate else services.own_sweeps()),
            )
        )
        try:
            yield
        finally:
            for task in (sweeper, warming):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if owned:
                await services.aclose()

    v1 = Router(
        path="/v1",
        route_handlers=[
            AdminHealthController,
            IngestController,
            AssetController,
            SidecarController,
            PictureController,
            JobController,
            WebhookController,
            SearchController,
        ],
        # Order matters: a client without a token learns only that (401), not what else is
        # wrong; no NUL gets as far as a stored key; the idempotency key and the rate limit are
        # the authenticated organisation's; a replayed answer still counts against the rate.
        middleware=[
            given(BearerAuthMiddleware, tokens=services.tokens),
            InputGuardMiddleware,
            given(RateLimitMiddleware, limiter=services.rate_limiter),
            given(IdempotencyMiddleware, idempotency=services.idempotency),
        ],
        security=[{"bearer": []}],
    )
    # Signed URLs and published contracts: no bearer token, so neither auth nor idempotency.
    public = Router(
        path="/v1", route_handlers=[FileController, sidecar_schema, webhook_event_schema]
    )
    uploads = Router(
        path="/v1",
        # A tus PATCH may carry the whole file: its cap is the largest resumable upload's.
        route_handlers=[UploadController, tus_controller(services.settings)],
        middleware=[InputGuardMiddleware],
        # Room for the declared length, so our own check answers first and precisely.
        request_max_body_size=services.settings.uploads.max_size_bytes + 1,
    )
    # Off, the legacy route does not exist at all: it answers 404 and the document omits it.
    legacy = (
        [
            Router(
                path="/",
                route_handlers=[legacy_metadata],
                middleware=[InputGuardMiddleware],
                request_max_body_size=services.settings.uploads.max_size_bytes
                + _MULTIPART_OVERHEAD,
            )
        ]
        if services.settings.enable_legacy
        else []
    )
    # Litestar answers OPTIONS for each path itself; this hook corrects its Allow (see below),
    # reading the routes once they are all registered.
    allowed: dict[str, str] = {}
    app = HeimdexApp(
        route_handlers=[liveness, metrics, docs_page, docs_assets(), v1, public, uploads, *legacy],
        dependencies=dependencies(services),
        before_request=answer_options_with_every_method(
            allowed, {"/v1/uploads": tus_options_headers(services.settings)}
        ),
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        # Every JSON body is depth-checked and refused with a NUL before a handler sees it.
        request_class=GuardedRequest,
        # Every route's body cap: JSON documents are small. The upload PUT and the legacy
        # upload set their own above.
        request_max_body_size=services.settings.limits.max_json_body_bytes,
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="Heimdex",
            version=__version__,
            description="Video ingest: direct uploads, probing, thumbnails and JSON sidecars.",
            path="/schema",
            render_plugins=[SWAGGER],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
                    # The URLs the server hands out (upload_url, thumbnail URLs) carry their own
                    # signature, with `org` and `expires`, in the query string.
                    "signedUrl": SecurityScheme(
                        type="apiKey", name="signature", security_scheme_in="query"
                    ),
                }
            ),
        ),
        debug=False,
        logging_config=None,  # heimdex.logs configures logging; Litestar's default would replace it
    )
    app.services = services
    allowed.update(allowed_methods(app))
    finalize_openapi(app.openapi_schema)
    return app


def allowed_methods(app: Litestar) -> dict[str, str]:
    """Each path template's ``Allow``: every method of its route as it finally is."""
    methods: dict[str, set[str]] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            methods.setdefault(route.path_format, set()).update(route.methods)
    return {path: ", ".join(sorted(names)) for path, names in methods.items()}


def answer_options_with_every_method(
    allowed: Mapping[str, str], extra: Mapping[str, Mapping[str, str]]
) -> Callable[[Request[Any, Any, Any]], Response[None] | None]:
    """Litestar makes a path's OPTIONS handler when the first handler for the path registers,
    and it keeps listing that route's methods after the next handler rebuilt the route (``GET``
    and ``DELETE /v1/assets/{id}`` answered ``Allow: DELETE, OPTIONS``): a ``before_request``
    hook answers Litestar's own OPTIONS handler with every method of the route as it finally is
    (``allowed``, by path template), plus the ``extra`` headers of the paths under a prefix
    (the tus routes tell what tus this server speaks)."""

    def answer(request: Request[Any, Any, Any]) -> Response[None] | None:
        if request.method != "OPTIONS" or request.route_handler.include_in_schema is not False:
            return None  # not OPTIONS, or an OPTIONS handler of ours rather than Litestar's
        template = request.scope.get("path_template", "")
        allow = allowed.get(template)
        if allow is None:
            return None
        headers = {"Allow": allow}
        for prefix, more in extra.items():
            if template.startswith(prefix):
                headers.update(more)
        return Response(content=None, status_code=204, headers=headers, media_type=MediaType.TEXT)

    return answer


def create_app_from_environment() -> Litestar:
    """Factory for ASGI servers (``uvicorn --factory heimdex.entrypoints.http.app:...``)."""
    settings = load_settings()
    configure_logging(settings.log.level, settings.log.format)
    return create_app(settings=settings)
