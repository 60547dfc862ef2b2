"""The Litestar application factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Response, Router
from litestar.enums import MediaType, ScopeType
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute
from litestar.types import Receive, Scope, Send

from heimdex import __version__
from heimdex.application.sweeping import sweep_forever
from heimdex.bootstrap import Services, build
from heimdex.entrypoints.http.api_docs import SWAGGER, docs_assets, docs_page
from heimdex.entrypoints.http.assets import AssetController
from heimdex.entrypoints.http.auth import BearerAuthMiddleware
from heimdex.entrypoints.http.deps import DEPENDENCIES
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] == ScopeType.HTTP:
            services: Services = self.state.services
            await log_request(
                with_security_headers(super().__call__),
                scope,
                receive,
                send,
                services.metrics.request_finished,
            )
        else:
            await super().__call__(scope, receive, send)


def create_app(
    services: Services | None = None,
    settings: Settings | None = None,
    *,
    warm_decoders: bool = False,
) -> Litestar:
    """Build the app. Given ``services`` the caller owns them; otherwise they are built from
    ``settings`` (or the environment) and closed when the app shuts down. ``warm_decoders``
    starts the decode processes in the background as the app starts (``heimdex serve``), so
    the first commit or job does not wait seconds for them."""
    owned = services is None
    if services is None:
        services = build(settings or load_settings())

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
            DefineMiddleware(BearerAuthMiddleware),
            InputGuardMiddleware,
            RateLimitMiddleware,
            IdempotencyMiddleware,
        ],
        security=[{"bearer": []}],
    )
    # Signed URLs and published contracts: no bearer token, so neither auth nor idempotency.
    public = Router(
        path="/v1", route_handlers=[FileController, sidecar_schema, webhook_event_schema]
    )
    uploads = Router(
        path="/v1",
        route_handlers=[UploadController],
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
    app = HeimdexApp(
        route_handlers=[liveness, metrics, docs_page, docs_assets(), v1, public, uploads, *legacy],
        dependencies=DEPENDENCIES,
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
    app.state.services = services
    finalize_openapi(app.openapi_schema)
    _answer_options_with_every_method(app)
    return app


def _answer_options_with_every_method(app: Litestar) -> None:
    """Litestar makes a path's OPTIONS handler when the first handler for the path registers,
    and it keeps listing that route's methods after the next handler rebuilt the route (``GET``
    and ``DELETE /v1/assets/{id}`` answered ``Allow: DELETE, OPTIONS``): answer every method of
    the route as it finally is."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        handler, _ = route.route_handler_map["OPTIONS"]
        if handler.include_in_schema is not False:  # one of ours, not Litestar's default
            continue
        allow = ", ".join(sorted(route.methods))

        def options_handler(scope: Scope, allow: str = allow) -> Response[None]:
            return Response(
                content=None, status_code=204, headers={"Allow": allow}, media_type=MediaType.TEXT
            )

        handler._fn = options_handler  # type: ignore[assignment]


def create_app_from_environment() -> Litestar:
    """Factory for ASGI servers (``uvicorn --factory heimdex.entrypoints.http.app:...``)."""
    settings = load_settings()
    configure_logging(settings.log.level, settings.log.format)
    return create_app(settings=settings)
