"""The API's documentation pages, served whole by the service itself.

Litestar's render plugins load their JavaScript and CSS from public CDNs, which leaves the pages
blank on an air-gapped or self-hosted network. Swagger UI's files come from the
``swagger-ui-bundle-v2`` package instead (installed with the service, not copied into this
repository) and are served under ``/docs/assets``; ``/docs`` is the front door, and the document
itself stays at ``/schema/openapi.json`` (and ``.yaml``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from litestar import Request, Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.enums import MediaType
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

DOCS_PATH = "/docs"
ASSETS_PATH = f"{DOCS_PATH}/assets"

#: Swagger UI, with every file it loads served from ``ASSETS_PATH``; also at ``/schema`` and
#: ``/schema/swagger``, where Litestar mounts its render plugins.
SWAGGER = SwaggerRenderPlugin(
    js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
    css_url=f"{ASSETS_PATH}/swagger-ui.css",
    standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
    favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
    path=["/", "/swagger"],
)


@get(DOCS_PATH, include_in_schema=False, media_type=MediaType.HTML, sync_to_thread=False)
def docs_page(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The interactive API reference: Swagger UI over the service's own OpenAPI document."""
    document = request.app.openapi_schema.to_schema()
    return Response(SWAGGER.render(request, document), media_type=MediaType.HTML)


def swagger_ui_directory() -> Path:
    """Where the installed package keeps Swagger UI's distribution (``vendor/swagger-ui-<v>``)."""
    vendor = Path(str(files("swagger_ui_bundle"))) / "vendor"
    found = sorted(vendor.glob("swagger-ui-*"))
    if not found:
        raise RuntimeError(f"swagger-ui-bundle-v2 is installed without Swagger UI in {vendor}")
    return found[-1]


def docs_assets() -> Router:
    """Swagger UI's JavaScript, CSS and icons, from the installed package."""
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[swagger_ui_directory()],
        name="docs_assets",
        # The files change only with the package's version.
        cache_control=CacheControlHeader(max_age=86_400, public=True),
        include_in_schema=False,
    )
