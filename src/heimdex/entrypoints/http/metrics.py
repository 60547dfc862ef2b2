"""``GET /metrics``: the process's Prometheus metrics, for a scraper rather than for tenants.

Open by default, like most exporters: it is meant to be reached on the private network only
(keep it off the public ingress). With ``HEIMDEX_METRICS_TOKEN`` set it answers only a request
with ``Authorization: Bearer <token>`` (Prometheus' ``authorization`` scrape setting). No label
carries an organisation, asset or job id, so even an open endpoint tells no tenant's business.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

import anyio
from litestar import Request, Response, get
from litestar.di import NamedDependency

from heimdex.application.job_runner import JobRunner
from heimdex.application.webhook_delivery import WebhookDeliverer
from heimdex.domain.bearer import bearer_matches
from heimdex.domain.errors import HeimdexError, Unauthenticated
from heimdex.domain.model import JobStatus
from heimdex.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")

# The queue depth and the oldest message's age are read at scrape time; a slow or absent database
# or Redis must not hold the scrape (Prometheus gives up after 10 s by default), so after this
# the series is left out instead.
QUEUE_DEPTH_TIMEOUT_SECONDS = 2.0


# Runtime-checkable: Litestar checks a dependency's value against the handler's annotation.
@runtime_checkable
class MetricsExport(Protocol):
    """The process's metrics registry as the endpoint uses it: gauges set at scrape time, then
    everything rendered in the Prometheus text format."""

    content_type: str

    def set_job_queue_depth(self, counts: Mapping[JobStatus, int] | None) -> None: ...

    def set_oldest_message_age(self, seconds: float | None) -> None: ...

    def set_webhook_backlog(self, pending: int | None, oldest_age: float) -> None: ...

    def render(self) -> bytes: ...


@get("/metrics", exclude_from_auth=True, include_in_schema=False)
async def metrics(
    request: Request[Any, Any, Any],
    metrics: NamedDependency[MetricsExport],
    job_runner: NamedDependency[JobRunner],
    deliverer: NamedDependency[WebhookDeliverer],
    metrics_token: NamedDependency[str | None],
) -> Response[bytes]:
    if metrics_token and not bearer_matches(request.headers.get("authorization"), metrics_token):
        raise Unauthenticated("send the metrics token as Authorization: Bearer <token>")
    metrics.set_job_queue_depth(
        await _read_in_time(job_runner.queue_depth, "queue_depth_unavailable", "the database")
    )
    metrics.set_oldest_message_age(
        await _read_in_time(job_runner.oldest_message_age, "queue_age_unavailable", "the queue")
    )
    backlog = await _read_in_time(deliverer.backlog, "webhook_backlog_unavailable", "the database")
    metrics.set_webhook_backlog(
        None if backlog is None else backlog[0], 0.0 if backlog is None else backlog[1]
    )
    return Response(
        content=metrics.render(),
        media_type=metrics.content_type,
        headers={"Cache-Control": "no-store"},
    )


async def _read_in_time(read: Callable[[], Awaitable[T]], event: str, source: str) -> T | None:
    """``read()``, or ``None`` (logged as ``event``) when ``source`` fails or is too slow."""
    try:
        with anyio.move_on_after(QUEUE_DEPTH_TIMEOUT_SECONDS):
            return await read()
        # Past the block without returning: the deadline cancelled the read.
        log.warning(event, error=f"{source} did not answer in time")
    except (HeimdexError, OSError) as exc:
        log.warning(event, error=str(exc))
    return None
