"""What the OpenAPI document promises about each route: every problem it can answer (status and
``code``), the ``Idempotency-Key`` header, and the links a client follows from one answer to the
next operation.

Routes say it with ``**documented(...)`` in their decorator; the schema is then checked against
the running app by the fuzz suite (``tests/fuzz``), so a status or code a route answers without
declaring it fails CI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
from litestar.enums import ParamType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Example,
    Link,
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)
from litestar.openapi.spec.base import BaseSchemaObject

from heimdex.domain.errors import DecodeLimitExceeded, HeimdexError
from heimdex.domain.idempotency import MAX_KEY_LENGTH
from heimdex.entrypoints.http.openapi_examples import OPERATIONS, problem_example
from heimdex.entrypoints.http.problems import PROBLEM_JSON, STATUS_BY_ERROR, Problem

# status -> the problem codes a route may answer with it
Problems = Mapping[int, Sequence[str]]

#: every route behind the bearer token (authenticated, then rate-limited per organisation;
#: its database connections held to the organisation's share), and any route at all when
#: something breaks
AUTHENTICATED: Problems = {401: ["unauthenticated"], 429: ["rate_limited", "database_busy"]}
SERVER: Problems = {500: ["internal_error"], 503: ["database_unavailable", "tenancy_unsafe"]}
#: a JSON body that may not validate, or may name another organisation
JSON_BODY: Problems = {400: ["invalid_request"], 403: ["org_mismatch"]}
#: the idempotency middleware on POST, PUT and DELETE under /v1
IDEMPOTENT: Problems = {
    400: ["invalid_idempotency_key"],
    409: ["idempotency_key_in_flight"],
    413: ["request_too_large"],
    422: ["idempotency_key_reused"],
}
#: path or query parameters that may not validate
PARAMETERS: Problems = {400: ["invalid_request"]}
NOT_FOUND: Problems = {404: ["not_found"]}
#: what ``input_guard`` refuses on every documented route: a NUL anywhere, JSON nested too deep
GUARDED_INPUT: Problems = {400: ["nul_character", "json_too_deep"]}

IDEMPOTENCY_KEY = Parameter(
    name="Idempotency-Key",
    param_in=ParamType.HEADER,
    required=False,
    description="Replays the first answer for the same key and request (24 h, per organisation, "
    "method and route); 1-255 printable ASCII characters.",
    # Printable ASCII, without the leading or trailing spaces HTTP strips from header values.
    schema=Schema(
        type=OpenAPIType.STRING,
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern="^[!-~]([ -~]*[!-~])?$",
    ),
)


def _strict_structs() -> dict[str, type[msgspec.Struct]]:
    """Request structs that refuse unknown fields, by their component name."""
    found: dict[str, type[msgspec.Struct]] = {}
    pending = list(msgspec.Struct.__subclasses__())
    while pending:
        struct = pending.pop()
        pending.extend(struct.__subclasses__())
        if (
            struct.__module__.startswith("heimdex.")
            and struct.__struct_config__.forbid_unknown_fields
        ):
            found[struct.__name__] = struct
    return found


def finalize(document: OpenAPI) -> OpenAPI:
    """What Litestar's generator leaves out: a body that refuses unknown fields says so
    (``additionalProperties: false``), so a client — or a fuzzer — knows extras are refused;
    and every operation shows an example request, answer and problem."""
    strict = _strict_structs()
    schemas = document.components.schemas if document.components else None
    for name, component in (schemas or {}).items():
        if name in strict and isinstance(component, Schema):
            component.additional_properties = False
    for path, item in (document.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch", "head"):
            operation = getattr(item, method, None)
            if isinstance(operation, Operation):
                _add_examples(path, operation)
    return document


def _add_examples(path: str, operation: Operation) -> None:
    request, answers = OPERATIONS.get(operation.operation_id or "", (None, {}))
    body = operation.request_body
    if request is not None and isinstance(body, RequestBody):
        _set_example(body.content.get("application/json"), request)
    for status, response in (operation.responses or {}).items():
        if not isinstance(response, OpenAPIResponse) or not response.content:
            continue
        if status in answers:
            for media_type, media in response.content.items():
                if "json" in media_type:
                    _set_example(media, answers[status])
        elif status.isdigit() and PROBLEM_JSON in response.content:
            media = response.content[PROBLEM_JSON]
            media.examples = {
                code: Example(
                    summary=code, value=AsWritten(problem_example(int(status), code, path))
                )
                for code in _codes_of(media.schema)
            }


def _set_example(media: OpenAPIMediaType | None, value: Any) -> None:
    if media is not None:
        media.examples = {
            "example": Example(summary="from the walkthrough", value=AsWritten(value))
        }


@dataclass
class AsWritten(BaseSchemaObject):
    """An example value rendered exactly as written: Litestar drops every ``None`` inside its
    spec objects, which would take the ``null`` fields out of an example answer."""

    value: Any

    def to_schema(self) -> dict[str, Any]:
        return self.value  # type: ignore[no-any-return]


def _codes_of(schema: object) -> list[str]:
    """The ``code`` enum a problem schema was narrowed to (see ``DocumentedOperation``)."""
    for part in getattr(schema, "all_of", None) or []:
        code = (getattr(part, "properties", None) or {}).get("code")
        if isinstance(code, Schema) and code.enum:
            return [str(value) for value in code.enum]
    return []


def signed_url_parameters(method: str) -> list[Parameter]:
    """The query parameters of a URL the server signed (an ``upload_url``, a thumbnail URL)."""
    described = {
        "org": ("the organisation the URL was signed for", Schema(type=OpenAPIType.STRING)),
        "expires": ("when the URL expires (Unix seconds)", Schema(type=OpenAPIType.INTEGER)),
        "signature": (
            f"HMAC of {method}, the path, org and expires",
            Schema(type=OpenAPIType.STRING),
        ),
    }
    return [
        Parameter(
            name=name, param_in=ParamType.QUERY, required=False, description=text, schema=schema
        )
        for name, (text, schema) in described.items()
    ]


# Families that are only ever raised as one of their subclasses: their own code never reaches a
# client, so no response lists it.
_RAISED_ONLY_AS_SUBCLASSES: frozenset[type[HeimdexError]] = frozenset({DecodeLimitExceeded})


def raises(*error_types: type[HeimdexError], family: bool = False) -> Problems:
    """The problems these domain errors become (with every subclass's code when ``family``)."""
    found: dict[int, list[str]] = {}
    pending = list(error_types)
    while pending:
        error_type = pending.pop(0)
        if error_type not in _RAISED_ONLY_AS_SUBCLASSES:
            found.setdefault(_status_of(error_type), []).append(error_type.code)
        if family:
            pending.extend(error_type.__subclasses__())
    return found


def _status_of(error_type: type[HeimdexError]) -> int:
    return next((STATUS_BY_ERROR[c] for c in error_type.__mro__ if c in STATUS_BY_ERROR), 500)


def merge(*groups: Problems) -> dict[int, list[str]]:
    merged: dict[int, list[str]] = {}
    for group in groups:
        for status, codes in group.items():
            known = merged.setdefault(status, [])
            known.extend(code for code in codes if code not in known)
    return merged


@dataclass
class DocumentedOperation(Operation):
    """An operation that narrows each problem response to its codes and carries its links."""

    problem_codes: ClassVar[Mapping[int, Sequence[str]]] = {}
    success_links: ClassVar[Mapping[str, Link]] = {}
    idempotent: ClassVar[bool] = False
    extra_parameters: ClassVar[Sequence[Parameter]] = ()
    body: ClassVar[RequestBody | None] = None
    also_media_types: ClassVar[Sequence[str]] = ()

    def __post_init__(self) -> None:
        responses = self.responses or {}
        for status, codes in self.problem_codes.items():
            response = responses.get(str(status))
            content = getattr(response, "content", None) or {}
            media = content.get(PROBLEM_JSON)
            if isinstance(media, OpenAPIMediaType) and media.schema is not None:
                media.schema = Schema(
                    all_of=[
                        media.schema,
                        Schema(
                            type=OpenAPIType.OBJECT,
                            properties={
                                "status": Schema(type=OpenAPIType.INTEGER, const=status),
                                "code": Schema(type=OpenAPIType.STRING, enum=list(codes)),
                            },
                        ),
                    ]
                )
        for key, response in responses.items():
            if not key.startswith("2") or not isinstance(response, OpenAPIResponse):
                continue
            if self.success_links:
                response.links = dict(self.success_links)
            if self.also_media_types and response.content:
                media = next(iter(response.content.values()))
                for media_type in self.also_media_types:
                    response.content.setdefault(media_type, media)
        extra = [*self.extra_parameters, *([IDEMPOTENCY_KEY] if self.idempotent else [])]
        if extra:
            self.parameters = [*(self.parameters or []), *extra]
        if self.body is not None:
            self.request_body = self.body


def documented(
    *groups: Problems,
    links: Mapping[str, Link] | None = None,
    idempotent: bool = False,
    responses: Mapping[int, ResponseSpec] | None = None,
    parameters: Sequence[Parameter] = (),
    request_body: RequestBody | None = None,
    also_media_types: Sequence[str] = (),
) -> dict[str, Any]:
    """Route-decorator arguments declaring the problems (``status -> codes``), the links from the
    success answer and, for POST/DELETE under /v1, the ``Idempotency-Key`` header; ``responses``
    adds other answers (a second success status), ``parameters`` and ``request_body`` what a
    handler reads from the raw request rather than from its signature."""
    codes = merge(*groups, GUARDED_INPUT, IDEMPOTENT if idempotent else {})
    declared: dict[int, ResponseSpec] = {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            generate_examples=False,
            description="Problem details; `code` is one of "
            + ", ".join(f"`{code}`" for code in problem_list),
        )
        for status, problem_list in sorted(codes.items())
    }
    declared.update(responses or {})
    operation = type(
        "DocumentedOperation",
        (DocumentedOperation,),
        {
            "problem_codes": {s: c for s, c in codes.items() if s not in (responses or {})},
            "success_links": dict(links or {}),
            "idempotent": idempotent,
            "extra_parameters": tuple(parameters),
            "body": request_body,
            "also_media_types": tuple(also_media_types),
        },
    )
    return {"responses": declared, "operation_class": operation}
