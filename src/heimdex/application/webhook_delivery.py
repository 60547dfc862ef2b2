"""Delivering webhook events: the outbox's deliveries go out from whichever process sweeps.

At least once, with the same ``webhook-id`` every attempt. A delivery is claimed under a lease
(one conditional update) before it is sent, so two processes never send it at once and one
whose process died mid-send is claimed again once the lease runs out. Each delivery runs in a
task of its own, at most ``concurrency`` at once and ``per_endpoint`` to any one endpoint, so a
receiver that hangs holds its own slots only — never the sweep, the jobs, or anyone else's
deliveries. Failures retry on the Standard Webhooks schedule (``domain/webhooks.py``); a 410
disables the endpoint, and so does failing with no success for ``disable_after``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from uuid import UUID

import msgspec

from heimdex.domain.errors import HeimdexError
from heimdex.domain.ports import (
    Clock,
    Metrics,
    UnitOfWorkFactory,
    WebhookDirectory,
    WebhookResponse,
    WebhookSender,
)
from heimdex.domain.webhooks import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    signature_header,
)
from heimdex.logs import get_logger

log = get_logger(__name__)
USER_AGENT = "Heimdex-Webhooks/1"


class DeliveryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    concurrency: int = 16
    per_endpoint: int = 2
    timeout: timedelta = timedelta(seconds=10)
    #: an endpoint failing with no success for this long is disabled
    disable_after: timedelta = timedelta(days=5)

    @property
    def lease(self) -> timedelta:
        # Longer than any attempt may take, so a live sender never loses its claim.
        return self.timeout * 3 + timedelta(seconds=5)


class WebhookDeliverer:
    """Sends due deliveries in background tasks; ``sweep()`` only claims and starts them."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        directory: WebhookDirectory,
        sender: WebhookSender,
        clock: Clock,
        metrics: Metrics,
        policy: DeliveryPolicy,
    ) -> None:
        self._uow = uow
        self._directory = directory
        self._sender = sender
        self._clock = clock
        self._metrics = metrics
        self._policy = policy
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_endpoint: dict[UUID, int] = {}
        #: set once this process sweeps deliveries: only then does ``wake()`` do anything
        self._delivering = False
        self._sweep_task: asyncio.Task[None] | None = None
        self._sweep_again = False
        self._backlog = False
        self.worker_id = f"deliverer-{uuid.uuid4().hex[:12]}"

    # -- scheduling -------------------------------------------------------------------------
    def wake(self) -> None:
        """An event was just committed: sweep now rather than at the next interval. Does
        nothing in a process that does not deliver (an API beside Redis-fed workers)."""
        if not self._delivering:
            return
        if self._sweep_task is not None and not self._sweep_task.done():
            self._sweep_again = True  # coalesced: one more sweep when this one ends
            return
        self._sweep_task = asyncio.get_running_loop().create_task(self._sweep_soon())

    async def _sweep_soon(self) -> None:
        while True:
            self._sweep_again = False
            try:
                await self.sweep()
            except (HeimdexError, OSError) as exc:  # the periodic sweep will try again
                log.warning("webhook_sweep_failed", error=str(exc))
            if not self._sweep_again:
                return

    async def sweep(self) -> int:
        """Claim-and-send every due delivery there is room for; answers how many started.
        Returns at once: the sending happens in tasks of its own."""
        self._delivering = True
        room = self._policy.concurrency - len(self._tasks)
        if room <= 0:
            return 0
        due = await self._directory.due(
            self._clock.now(), self._policy.per_endpoint, room * self._policy.per_endpoint
        )
        # A full answer, or one that had to skip busy endpoints, may leave more due.
        self._backlog = len(due) >= room * self._policy.per_endpoint
        started = 0
        for delivery_id, org_id, endpoint_id in due:
            if len(self._tasks) >= self._policy.concurrency:
                break
            if self._per_endpoint.get(endpoint_id, 0) >= self._policy.per_endpoint:
                self._backlog = True
                continue  # that endpoint has its share in flight; others go first
            self._per_endpoint[endpoint_id] = self._per_endpoint.get(endpoint_id, 0) + 1
            task = asyncio.get_running_loop().create_task(
                self._deliver(delivery_id, org_id, endpoint_id)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def aclose(self) -> None:
        """Stop sending: what was in flight is claimed again after its lease, same id."""
        tasks = [*self._tasks, *([self._sweep_task] if self._sweep_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def backlog(self) -> tuple[int, float]:
        """Pending deliveries across every organisation, and the oldest one's age in seconds."""
        count, oldest = await self._directory.pending()
        age = 0.0 if oldest is None else (self._clock.now() - oldest).total_seconds()
        return count, max(age, 0.0)

    # -- one delivery -----------------------------------------------------------------------
    async def _deliver(self, delivery_id: UUID, org_id: str, endpoint_id: UUID) -> None:
        try:
            await self._claim_and_send(delivery_id, org_id)
        except (HeimdexError, OSError) as exc:
            # Not recorded: the lease runs out and the delivery is claimed again, same id.
            log.warning(
                "webhook_delivery_interrupted", delivery_id=str(delivery_id), error=str(exc)
            )
        except Exception:
            log.exception("webhook_delivery_crashed", delivery_id=str(delivery_id))
        finally:
            left = self._per_endpoint.get(endpoint_id, 1) - 1
            if left > 0:
                self._per_endpoint[endpoint_id] = left
            else:
                self._per_endpoint.pop(endpoint_id, None)
            if self._backlog:
                self.wake()  # a slot is free and more were due: take the next one now

    async def _claim_and_send(self, delivery_id: UUID, org_id: str) -> None:
        now = self._clock.now()
        async with self._uow(org_id) as uow:
            delivery = await uow.deliveries.claim(
                delivery_id, self.worker_id, now, now + self._policy.lease
            )
            endpoint = None
            if delivery is not None:
                endpoint = await uow.webhooks.get(delivery.endpoint_id)
            await uow.commit()
        if delivery is None:
            return  # another process has it, or it was retried/finished meanwhile
        if endpoint is None or not endpoint.enabled:
            failed = delivery.attempt_failed(
                now,
                code="endpoint_disabled",
                status_code=None,
                error="the endpoint is disabled",
                final=True,
            )
            await self._record(failed, None)
            return
        timestamp = int(now.timestamp())
        body = delivery.payload
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                endpoint.signing_secrets(now), delivery.event_id, timestamp, body
            ),
        }
        started = time.perf_counter()
        response = await self._sender.send(endpoint.url, headers, body.encode())
        seconds = time.perf_counter() - started
        outcome = self._outcome(delivery, response)
        await self._record(outcome, response)
        label = (
            "succeeded"
            if outcome.status is DeliveryStatus.SUCCEEDED
            else ("failed" if outcome.status is DeliveryStatus.FAILED else "retry")
        )
        self._metrics.webhook_attempted(delivery.event_type.value, label, seconds)
        fields = {
            "event_id": delivery.event_id,
            "event_type": delivery.event_type.value,
            "endpoint_id": str(endpoint.id),
            "delivery_id": str(delivery.id),
            "org_id": delivery.org_id,
            "attempt": delivery.attempts,
            "status_code": response.status_code,
            "seconds": round(seconds, 3),
        }
        if response.error_code is None:
            log.info("webhook_delivered", **fields)
        else:
            (log.warning if label == "retry" else log.error)(
                "webhook_attempt_failed" if label == "retry" else "webhook_delivery_failed",
                code=response.error_code,
                next_attempt_at=outcome.next_attempt_at.isoformat()
                if outcome.next_attempt_at
                else None,
                **fields,
            )

    def _outcome(self, delivery: WebhookDelivery, response: WebhookResponse) -> WebhookDelivery:
        now = self._clock.now()
        if response.error_code is None and response.status_code is not None:
            return delivery.succeeded(now, response.status_code)
        # Retrying cannot help: the receiver said it is gone, or the URL may not be reached.
        final = response.status_code == 410 or response.error_code == "webhook_url_forbidden"
        return delivery.attempt_failed(
            now,
            code=response.error_code or "http_error",
            status_code=response.status_code,
            error=response.detail,
            final=final,
        )

    async def _record(self, delivery: WebhookDelivery, response: WebhookResponse | None) -> None:
        now = self._clock.now()
        async with self._uow(delivery.org_id) as uow:
            if not await uow.deliveries.finish(delivery, self.worker_id):
                return  # our lease ran out and another took it: its outcome stands
            endpoint = await uow.webhooks.get(delivery.endpoint_id)
            if endpoint is not None and response is not None:
                changed = self._endpoint_after(endpoint, delivery, response, now)
                if changed is not endpoint:
                    await uow.webhooks.save(changed)
            await uow.commit()

    def _endpoint_after(
        self,
        endpoint: WebhookEndpoint,
        delivery: WebhookDelivery,
        response: WebhookResponse,
        now: object,
    ) -> WebhookEndpoint:
        """The endpoint's health after this attempt: a success clears its failing streak, a
        410 disables it, and so does failing with no success for ``disable_after``."""
        if delivery.status is DeliveryStatus.SUCCEEDED:
            if endpoint.failing_since is None:
                return endpoint
            return msgspec.structs.replace(endpoint, failing_since=None)
        moment = delivery.updated_at
        if response.status_code == 410:
            log.warning("webhook_endpoint_disabled", endpoint_id=str(endpoint.id), reason="410")
            return msgspec.structs.replace(
                endpoint,
                enabled=False,
                disabled_reason="the receiver answered 410 Gone",
                updated_at=moment,
            )
        failing_since = endpoint.failing_since or moment
        if moment - failing_since >= self._policy.disable_after:
            log.warning("webhook_endpoint_disabled", endpoint_id=str(endpoint.id), reason="failing")
            return msgspec.structs.replace(
                endpoint,
                enabled=False,
                failing_since=failing_since,
                disabled_reason=f"every delivery failed since {failing_since.isoformat()}",
                updated_at=moment,
            )
        if endpoint.failing_since is None:
            return msgspec.structs.replace(endpoint, failing_since=failing_since)
        return endpoint
