"""Every error as RFC 9457 problem details with a stable ``code``: mapped here, in one place."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import Scope

from heimdex.domain import errors
from heimdex.logs import get_logger

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"

STATUS_BY_ERROR: dict[type[errors.HeimdexError], int] = {
    errors.InvalidInput: 400,
    errors.MultipartUnsupported: 422,
    errors.Unauthenticated: 401,
    errors.OrgMismatch: 403,
    errors.InsufficientScope: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.NoVideo: 409,
    errors.TimeOutOfRange: 422,
    errors.Gone: 410,
    errors.AssetGone: 410,
    errors.LengthMismatch: 400,
    errors.ChecksumMismatch: 422,
    errors.ChunkChecksumMismatch: 460,  # tus's own status for it
    errors.TusVersionUnsupported: 412,
    errors.ChunkContentTypeInvalid: 415,
    errors.IdempotencyKeyReused: 422,
    errors.UploadTooLarge: 413,
    errors.ImageTooLarge: 413,
    errors.InvalidImage: 422,
    errors.SemanticSearchUnavailable: 501,
    errors.LimitExceeded: 429,
    errors.ProbeBusy: 429,
    errors.DatabaseBusy: 429,
    errors.StorageQuotaExceeded: 403,
    errors.UnsupportedMediaType: 415,
    errors.InvalidMedia: 422,
    errors.SourceUriForbidden: 422,
    errors.InvalidStorageKey: 422,
    errors.ProberUnavailable: 503,
    errors.ThumbnailerUnavailable: 503,
    errors.DecodersBusy: 503,
    errors.StorageError: 503,
    errors.QueueUnavailable: 503,
    errors.QueueMisconfigured: 503,
    errors.DatabaseUnavailable: 503,
    errors.TenancyUnsafe: 503,
    errors.WebhookUrlForbidden: 422,
}

# A 503 for a transient error (``HeimdexError.transient``: a database or Redis restarting, a
# store's hiccup) says when to try again. Misconfiguration (a missing prober, unsafe tenancy)
# does not: trying again will not help.
RETRY_AFTER_SECONDS = 5

CODE_BY_STATUS: dict[int, str] = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    501: "not_implemented",
    503: "service_unavailable",
}


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem document, extended with ``code`` and ``request_id``."""

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None


def status_for(exc: BaseException) -> int:
    if isinstance(exc, errors.HeimdexError):
        for cls in type(exc).__mro__:
            if cls in STATUS_BY_ERROR:
                return STATUS_BY_ERROR[cls]
        return HTTP_500_INTERNAL_SERVER_ERROR
    if isinstance(exc, HTTPException):
        return exc.status_code
    return HTTP_500_INTERNAL_SERVER_ERROR


def problem_response(
    request: Request[Any, Any, Any],
    *,
    status: int,
    code: str,
    title: str,
    detail: str | None,
    headers: dict[str, str] | None = None,
    extra_errors: list[dict[str, Any]] | None = None,
) -> Response[Problem]:
    state = request.scope.get("state", {})
    request_id = state.get("request_id")
    if state.get("tus") and status == 412:  # a tus route's: name the version it speaks
        headers = {**(headers or {}), "Tus-Version": "1.0.0"}
    body = Problem(
        type=f"urn:heimdex:problem:{code}",
        title=title,
        status=status,
        code=code,
        detail=detail,
        instance=request.url.path,
        request_id=request_id,
        errors=extra_errors,
    )
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _auth_headers(status: int) -> dict[str, str] | None:
    return {"WWW-Authenticate": 'Bearer realm="heimdex"'} if status == 401 else None


def retry_after_headers() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_SECONDS)}


def _error_headers(status: int, exc: errors.HeimdexError) -> dict[str, str] | None:
    if status == 503 and exc.transient:
        return retry_after_headers()
    return _auth_headers(status)


def handle_domain_error(
    request: Request[Any, Any, Any], exc: errors.HeimdexError
) -> Response[Problem]:
    status = status_for(exc)
    if status >= 500:
        log.error("service_error", code=exc.code, detail=exc.message)
    return problem_response(
        request,
        status=status,
        code=exc.code,
        title=exc.title,
        detail=exc.message,
        headers=_error_headers(status, exc),
    )


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    status = exc.status_code
    extra = exc.extra if isinstance(exc.extra, list) else None
    code = "invalid_request" if isinstance(exc, ValidationException) else None
    headers = dict(exc.headers or {}) | (_auth_headers(status) or {})
    return problem_response(
        request,
        status=status,
        code=code or CODE_BY_STATUS.get(status, f"http_{status}"),
        title=_title(status),
        detail=exc.detail,
        headers=headers or None,
        extra_errors=extra,
    )


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.exception("unhandled_error", error_type=type(exc).__name__)
    return problem_response(
        request,
        status=HTTP_500_INTERNAL_SERVER_ERROR,
        code="internal_error",
        title="Internal server error",
        detail="The server failed to handle the request; the request id identifies it in the logs.",
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def handle_limit_exceeded(
    request: Request[Any, Any, Any], exc: errors.LimitExceeded
) -> Response[Problem]:
    """A limit: the problem, ``Retry-After`` (whole seconds) when waiting helps, and the rate
    limiter's ``RateLimit-*`` headers when it answered them."""
    response = handle_domain_error(request, exc)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    for name, value in exc.extra.get("headers", {}).items():
        response.headers[name] = value
    return response


def request_body_limit(scope: Scope) -> int | None:
    """The body size the matched route accepts (``request_max_body_size`` on its layers)."""
    resolve = getattr(scope.get("route_handler"), "resolve_request_max_body_size", None)
    limit = resolve() if resolve is not None else None
    return limit if isinstance(limit, int) else None


def handle_request_too_large(
    request: Request[Any, Any, Any], exc: RequestEntityTooLarge
) -> Response[Problem]:
    """Litestar's 413 for a body over the route's ``request_max_body_size``, as our problem."""
    limit = request_body_limit(request.scope)
    detail = (
        f"the request body is larger than this route accepts ({limit} bytes)"
        if limit
        else "the request body is larger than this route accepts"
    )
    return problem_response(
        request,
        status=413,
        code="request_too_large",
        title="The request body is too large",
        detail=detail,
    )


EXCEPTION_HANDLERS = {
    errors.LimitExceeded: handle_limit_exceeded,
    RequestEntityTooLarge: handle_request_too_large,
    errors.HeimdexError: handle_domain_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
