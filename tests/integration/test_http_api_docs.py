"""The API documentation pages work with no network beyond the service itself."""

from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from litestar import Litestar
from litestar.testing import AsyncTestClient

from heimdex.entrypoints.http.app import create_app
from heimdex.settings import Settings

DOC_PAGES = ["/docs", "/schema", "/schema/swagger"]

_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


def _references(page: str) -> list[str]:
    return _REFERENCE.findall(page)


@pytest.mark.parametrize("path", DOC_PAGES)
async def test_doc_pages_load_every_file_from_the_service(
    client: AsyncTestClient[Litestar], path: str
) -> None:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in page.text
    references = _references(page.text)
    assert len(references) >= 4, references  # the bundle, the preset, the CSS, the icon
    for reference in references:
        # Nothing from a CDN: every script, style sheet and icon is a path on this server.
        assert reference.startswith("/"), reference
        assert not reference.startswith("//"), reference
        asset = await client.get(reference)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 100, reference
    assert not re.search(r"https?://", page.text.split("spec:")[0]), "an absolute URL in <head>"


async def test_doc_assets_have_their_content_types(client: AsyncTestClient[Litestar]) -> None:
    script = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    style = await client.get("/docs/assets/swagger-ui.css")
    assert style.headers["content-type"].startswith("text/css")
    missing = await client.get("/docs/assets/no-such-file.js")
    assert missing.status_code == 404


@pytest.mark.parametrize("path", ["/schema/redoc", "/schema/rapidoc", "/schema/elements"])
async def test_no_page_that_would_load_a_cdn_is_served(
    client: AsyncTestClient[Litestar], path: str
) -> None:
    assert (await client.get(path)).status_code == 404


async def _document(settings: Settings, **overrides: Any) -> dict[str, Any]:
    app = create_app(settings=settings.replace_flat(**overrides))
    async with AsyncTestClient(app=app) as client:
        response = await client.get("/schema/openapi.json")
        assert response.status_code == 200
        document: dict[str, Any] = response.json()
        return document


async def test_the_legacy_route_is_documented_only_when_it_is_on(settings: Settings) -> None:
    off = await _document(settings, enable_legacy=False)
    assert "/metadata" not in off["paths"]
    on = await _document(settings, enable_legacy=True)
    assert "/metadata" in on["paths"]


async def test_the_legacy_route_does_not_exist_when_off(
    client: AsyncTestClient[Litestar],
) -> None:
    response = await client.post("/metadata", content=b"x")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


_METHODS = ("get", "put", "post", "delete", "patch", "head")


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in _METHODS
    ]


def _check(document: dict[str, Any], schema: dict[str, Any], value: Any, where: str) -> None:
    # The example's schema with the document's components beside it, so `#/components/...`
    # references resolve.
    rooted = {**schema, "components": document["components"]}
    errors = list(Draft202012Validator(rooted).iter_errors(value))
    assert not errors, f"{where}: {errors[0].message} at {list(errors[0].absolute_path)}"


async def test_every_operation_has_examples_that_match_its_schemas(settings: Settings) -> None:
    document = await _document(settings, enable_legacy=True)
    operations = _operations(document)
    assert len(operations) >= 15
    for method, path, operation in operations:
        where = f"{method} {path}"
        found = 0
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            assert body.get("examples"), f"{where}: no request example"
        for status, response in operation["responses"].items():
            for media_type, media in (response.get("content") or {}).items():
                if "json" not in media_type or "schema" not in media:
                    continue
                examples = media.get("examples") or {}
                binary = media["schema"].get("type") == "string"  # a file, not a document
                if (status.startswith("2") and not binary) or "problem" in media_type:
                    assert examples, f"{where} {status} {media_type}: no example"
                for example in examples.values():
                    _check(document, media["schema"], example["value"], f"{where} {status}")
                    found += 1
        for media in (operation.get("requestBody") or {}).get("content", {}).values():
            for example in (media.get("examples") or {}).values():
                _check(document, media["schema"], example["value"], f"{where} request")
                found += 1
        assert found, f"{where}: no example at all"


async def test_the_sidecar_examples_are_valid_sidecars(
    settings: Settings, client: AsyncTestClient[Litestar]
) -> None:
    document = await _document(settings)
    sidecar_schema = (await client.get("/v1/schemas/sidecar/v1")).json()
    answer = document["paths"]["/v1/assets/{asset_id}/sidecar"]["get"]["responses"]["200"]
    for example in answer["content"]["application/json"]["examples"].values():
        errors = list(Draft202012Validator(sidecar_schema).iter_errors(example["value"]))
        assert not errors, errors[0].message
