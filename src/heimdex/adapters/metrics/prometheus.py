"""``PrometheusMetrics``: the ``Metrics`` port, the HTTP request metrics and the job queue depth on
one prometheus_client registry per process, and its text exposition for ``/metrics``.

A registry of its own (not prometheus_client's global one) so that every ``Services`` — each
test's app, each worker process — counts only what it did itself.

Label values are bounded on purpose: methods outside a fixed set become ``other``, a request
no route matched is ``unmatched``, routes are templates (``/v1/jobs/{job_id}``), never
paths. Nothing here ever takes an organisation, asset or job id.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from heimdex.domain.model import JobKind, JobStatus
from heimdex.domain.ports import JobOutcome

# Seconds. Requests are mostly milliseconds (uploads and synchronous probes take longer);
# probes are sub-second in-process; thumbnails and whole jobs run for seconds to minutes.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
THUMBNAIL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
WEBHOOK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

UNMATCHED_ROUTE = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
QUEUE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


class PrometheusMetrics:
    """Implements ``Metrics``; also records HTTP requests and the queue depth for the
    entrypoints, and renders the registry for a scraper."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # CPU, memory, open files, GC: what any process should tell its scraper.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._requests = Counter(
            "heimdex_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._request_seconds = Histogram(
            "heimdex_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer.",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self._job_seconds = Histogram(
            "heimdex_job_duration_seconds",
            "One run of a job, from its claim to its recorded outcome.",
            ["kind", "outcome"],
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )
        self._queue_depth = Gauge(
            "heimdex_job_queue_depth",
            "Jobs queued or running across every organisation, read from the database.",
            ["status"],
            registry=self.registry,
        )
        # Registered once first read (the API's scrape): a worker's own endpoint, which never
        # reads it, must not export a 0 that looks like an empty queue.
        self._oldest_message_age = Gauge(
            "heimdex_job_queue_oldest_message_age_seconds",
            "How long the oldest job message the queue still holds has waited (0: none). "
            "Growing means no worker is taking jobs: alert on it.",
            registry=None,
        )
        self._oldest_message_age_known = False
        self._probe_seconds = Histogram(
            "heimdex_probe_duration_seconds",
            "One probe of a media file, by prober and outcome (ok or the error code).",
            ["prober", "outcome"],
            buckets=PROBE_BUCKETS,
            registry=self.registry,
        )
        self._thumbnail_seconds = Histogram(
            "heimdex_thumbnail_duration_seconds",
            "Making one file's thumbnails, by thumbnailer and outcome (ok or the error code).",
            ["thumbnailer", "outcome"],
            buckets=THUMBNAIL_BUCKETS,
            registry=self.registry,
        )
        self._upload_bytes = Counter(
            "heimdex_upload_bytes",
            "Bytes of uploads the API received and stored itself (PUT /v1/uploads/{upload_id}).",
            registry=self.registry,
        )
        self._committed_bytes = Counter(
            "heimdex_committed_upload_bytes",
            "Bytes of uploads committed as assets, however they reached storage (S3 included).",
            registry=self.registry,
        )

        self._webhook_seconds = Histogram(
            "heimdex_webhook_delivery_duration_seconds",
            "One webhook delivery attempt, by event type and outcome (succeeded, retry, failed).",
            ["event_type", "outcome"],
            buckets=WEBHOOK_BUCKETS,
            registry=self.registry,
        )
        self._webhook_attempts = Counter(
            "heimdex_webhook_deliveries",
            "Webhook delivery attempts, by event type and outcome (succeeded, retry, failed).",
            ["event_type", "outcome"],
            registry=self.registry,
        )
        self._webhook_pending = Gauge(
            "heimdex_webhook_pending_deliveries",
            "Webhook deliveries waiting to be sent (or retried), across every organisation.",
            registry=self.registry,
        )
        self._webhook_oldest = Gauge(
            "heimdex_webhook_oldest_pending_age_seconds",
            "How long the oldest pending webhook delivery has existed (0: none).",
            registry=self.registry,
        )

    # -- the Metrics port -------------------------------------------------------------------
    def webhook_attempted(self, event_type: str, outcome: str, seconds: float) -> None:
        self._webhook_attempts.labels(event_type=event_type, outcome=outcome).inc()
        self._webhook_seconds.labels(event_type=event_type, outcome=outcome).observe(seconds)

    def set_webhook_backlog(self, pending: int | None, oldest_age: float) -> None:
        """The pending deliveries as just counted; ``None`` (the count failed) reads as 0
        pending with no age rather than a stale figure."""
        self._webhook_pending.set(pending or 0)
        self._webhook_oldest.set(oldest_age if pending else 0.0)

    def job_finished(self, kind: JobKind, outcome: JobOutcome, seconds: float) -> None:
        self._job_seconds.labels(kind=kind.value, outcome=outcome).observe(seconds)

    def upload_received(self, size_bytes: int) -> None:
        self._upload_bytes.inc(size_bytes)

    def upload_committed(self, size_bytes: int) -> None:
        self._committed_bytes.inc(size_bytes)

    def probe_finished(self, prober: str, outcome: str, seconds: float) -> None:
        self._probe_seconds.labels(prober=prober, outcome=outcome).observe(seconds)

    def thumbnails_finished(self, thumbnailer: str, outcome: str, seconds: float) -> None:
        self._thumbnail_seconds.labels(thumbnailer=thumbnailer, outcome=outcome).observe(seconds)

    # -- for the entrypoints ----------------------------------------------------------------
    def request_finished(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """One HTTP request answered; ``route`` is the matched route's template, ``None`` when
        no route matched (a 404 for an unknown path must not mint a series per path)."""
        labels = {
            "method": method if method in _METHODS else "other",
            "route": route or UNMATCHED_ROUTE,
            "status": str(status),
        }
        self._requests.labels(**labels).inc()
        self._request_seconds.labels(**labels).observe(seconds)

    def set_job_queue_depth(self, counts: Mapping[JobStatus, int] | None) -> None:
        """The queue depth as just counted; ``None`` (the count failed) drops the series, so a
        stale number never passes for a current one."""
        if counts is None:
            self._queue_depth.clear()
            return
        for status in QUEUE_STATUSES:
            self._queue_depth.labels(status=status.value).set(counts.get(status, 0))

    def set_oldest_message_age(self, seconds: float | None) -> None:
        """The oldest queued message's age as just read; ``None`` (the queue did not answer)
        leaves the series out of the next scrape, so a stale age never passes for a current
        one."""
        if seconds is None:
            if self._oldest_message_age_known:
                self.registry.unregister(self._oldest_message_age)
                self._oldest_message_age_known = False
            return
        if not self._oldest_message_age_known:
            self.registry.register(self._oldest_message_age)
            self._oldest_message_age_known = True
        self._oldest_message_age.set(seconds)

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
