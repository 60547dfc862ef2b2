"""Delivering webhook events: the outbox's deliveries go out from whichever process sweeps.

At least once, with the same ``webhook-id`` every attempt. A delivery is claimed under a lease
(one conditional update) before it is sent, so two processes never send it at once and one
whose process died mid-send is claimed again once the lease runs out. Each delivery runs in a
task of its own, at most ``concurrency`` at once, ``per_endpoint`` to any one endpoint and
``per_org`` for any one organisation, so a receiver that hangs holds its own slots only — never
the sweep, the jobs, or anyone else's deliveries — and an organisation with many slow endpoints
leaves the other slots to everyone else. Free slots go to the organisations with the fewest
deliveries in flight first. Failures retry on the Standard Webhooks schedule
(``domain/webhooks.py``); a 410 disables the endpoint, and so does failing with no success for
``disable_after``.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from datetime import datetime, timedelta
from typing import TypeVar
from uuid import UUID

import msgspec

from heimdex.domain.errors import HeimdexError
from heimdex.domain.ports import (
    Clock,
    Metrics,
    UnitOfWork,
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
_Key = TypeVar("_Key")
USER_AGENT = "Heimdex-Webhooks/1"


#: an attempt's outcome waiting to be recorded: the delivery as it ends, the answer, the
#: endpoint as it was claimed, and what its task waits on
_Outcome = tuple[
    WebhookDelivery, WebhookResponse | None, WebhookEndpoint | None, "asyncio.Future[None]"
]


class DeliveryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    concurrency: int = 16
    per_endpoint: int = 2
    #: deliveries in flight for any one organisation, whatever its number of endpoints
    per_org: int = 4
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
        self._per_org: dict[str, int] = {}
        #: set once this process sweeps deliveries: only then does ``wake()`` do anything
        self._delivering = False
        #: set by ``aclose``: a delivery cancelled then must not start a sweep nobody awaits
        self._closing = False
        self._sweep_task: asyncio.Task[None] | None = None
        self._sweep_again = False
        self._backlog = False
        #: deliveries claimed and not yet recorded (their tasks)
        self._sending = 0
        self._outcomes: list[_Outcome] = []
        self._recorder: asyncio.Task[None] | None = None
        self.worker_id = f"deliverer-{uuid.uuid4().hex[:12]}"

    # -- scheduling -------------------------------------------------------------------------
    def wake(self) -> None:
        """An event was just committed: sweep now rather than at the next interval. Does
        nothing in a process that does not deliver (an API beside Redis-fed workers)."""
        if not self._delivering or self._closing:
            return
        if self._sweep_task is not None and not self._sweep_task.done():
            self._sweep_again = True  # coalesced: one more sweep when this one ends
            return
        # In a context of its own: the request or job that committed the event is not the
        # delivery's (its log lines would otherwise carry that request's id).
        self._sweep_task = asyncio.get_running_loop().create_task(
            self._sweep_soon(), context=contextvars.Context()
        )

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
        room = self._policy.concurrency - self._sending
        if room <= 0:
            return 0
        policy = self._policy
        due = await self._directory.due(
            self._clock.now(), policy.per_endpoint, policy.per_org, room * policy.per_endpoint
        )
        # A full answer, or an endpoint or organisation answered up to its cap, may leave more
        # due: then each delivery that ends sweeps again at once rather than at the next interval.
        per_endpoint: dict[UUID, int] = {}
        per_org: dict[str, int] = {}
        for _, org_id, endpoint_id in due:
            per_endpoint[endpoint_id] = per_endpoint.get(endpoint_id, 0) + 1
            per_org[org_id] = per_org.get(org_id, 0) + 1
        self._backlog = (
            len(due) >= room * policy.per_endpoint
            or any(count >= policy.per_endpoint for count in per_endpoint.values())
            or any(count >= policy.per_org for count in per_org.values())
        )
        # Turns: an organisation's n-th candidate goes after every organisation's (n-1)-th,
        # counting what each already has in flight, so a free slot goes to whoever has fewest.
        turns: dict[str, int] = {}
        ranked: list[tuple[int, int, UUID, str, UUID]] = []
        for position, (delivery_id, org_id, endpoint_id) in enumerate(due):
            turns[org_id] = turns.get(org_id, self._per_org.get(org_id, 0)) + 1
            ranked.append((turns[org_id], position, delivery_id, org_id, endpoint_id))
        ranked.sort()
        chosen: dict[str, list[tuple[UUID, UUID]]] = {}
        taken = 0
        for _, _, delivery_id, org_id, endpoint_id in ranked:
            if self._sending + taken >= policy.concurrency:
                break
            if (
                self._per_endpoint.get(endpoint_id, 0) >= policy.per_endpoint
                or self._per_org.get(org_id, 0) >= policy.per_org
            ):
                self._backlog = True
                continue  # that endpoint or organisation has its share in flight
            self._per_endpoint[endpoint_id] = self._per_endpoint.get(endpoint_id, 0) + 1
            self._per_org[org_id] = self._per_org.get(org_id, 0) + 1
            chosen.setdefault(org_id, []).append((delivery_id, endpoint_id))
            taken += 1
        started = 0
        for org_id, items in chosen.items():
            started += await self._claim_and_start(org_id, items)
        return started

    async def _claim_and_start(self, org_id: str, items: list[tuple[UUID, UUID]]) -> int:
        """Claim the organisation's chosen deliveries in one statement and start a task for
        each one claimed; the slots of the others (taken meanwhile) are given back."""
        now = self._clock.now()
        claimed: list[WebhookDelivery] = []
        endpoints: dict[UUID, WebhookEndpoint] = {}
        try:
            async with self._uow(org_id) as uow:
                claimed = await uow.deliveries.claim_many(
                    [delivery_id for delivery_id, _ in items],
                    self.worker_id,
                    now,
                    now + self._policy.lease,
                )
                if claimed:
                    endpoints = {e.id: e for e in await uow.webhooks.list_all()}
                await uow.commit()
        finally:
            got = {delivery.id for delivery in claimed}
            for delivery_id, endpoint_id in items:
                if delivery_id not in got:
                    self._release(org_id, endpoint_id)
        for delivery in claimed:
            self._sending += 1
            task = asyncio.get_running_loop().create_task(
                self._deliver(delivery, endpoints.get(delivery.endpoint_id), now)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claimed)

    def _release(self, org_id: str, endpoint_id: UUID) -> None:
        _give_back(self._per_endpoint, endpoint_id)
        _give_back(self._per_org, org_id)

    async def aclose(self) -> None:
        """Stop sending: what was in flight is claimed again after its lease, same id."""
        self._closing = True
        tasks = [
            *self._tasks,
            *(task for task in (self._sweep_task, self._recorder) if task is not None),
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def backlog(self) -> tuple[int, float]:
        """Pending deliveries across every organisation, and the oldest one's age in seconds."""
        count, oldest = await self._directory.pending()
        age = 0.0 if oldest is None else (self._clock.now() - oldest).total_seconds()
        return count, max(age, 0.0)

    # -- one delivery -----------------------------------------------------------------------
    async def _deliver(
        self, delivery: WebhookDelivery, endpoint: WebhookEndpoint | None, now: datetime
    ) -> None:
        try:
            await self._send(delivery, endpoint, now)
        except (HeimdexError, OSError) as exc:
            # Not recorded: the lease runs out and the delivery is claimed again, same id.
            log.warning(
                "webhook_delivery_interrupted", delivery_id=str(delivery.id), error=str(exc)
            )
        except Exception:
            log.exception("webhook_delivery_crashed", delivery_id=str(delivery.id))
        finally:
            self._release(delivery.org_id, delivery.endpoint_id)
            self._sending -= 1
            # More were due: sweep again now rather than at the next interval — once a quarter
            # of the slots are free (this task still holds one), so one query fills several.
            free = self._policy.concurrency - self._sending
            if self._backlog and free >= max(1, self._policy.concurrency // 4):
                self.wake()

    async def _send(
        self, delivery: WebhookDelivery, endpoint: WebhookEndpoint | None, now: datetime
    ) -> None:
        if endpoint is None or not endpoint.enabled:
            failed = delivery.attempt_failed(
                now,
                code="endpoint_disabled",
                status_code=None,
                error="the endpoint is disabled",
                final=True,
            )
            await self._record(failed, None, endpoint)
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
        await self._record(outcome, response, endpoint)
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

    async def _record(
        self,
        delivery: WebhookDelivery,
        response: WebhookResponse | None,
        claimed_with: WebhookEndpoint | None,
    ) -> None:
        """Record the attempt's outcome; returns once it is committed. Outcomes that arrive
        while a commit is under way are recorded together in the next one (one transaction
        per organisation), so a busy deliverer spends one commit on many deliveries."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outcomes.append((delivery, response, claimed_with, done))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.get_running_loop().create_task(self._record_all())
        await done

    async def _record_all(self) -> None:
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            by_org: dict[str, list[_Outcome]] = {}
            for outcome in batch:
                by_org.setdefault(outcome[0].org_id, []).append(outcome)
            for org_id, outcomes in by_org.items():
                try:
                    async with self._uow(org_id) as uow:
                        for delivery, response, claimed_with, _ in outcomes:
                            await self._record_one(uow, delivery, response, claimed_with)
                        await uow.commit()
                except Exception as exc:  # each waiting delivery logs it; its lease runs out
                    for *_, done in outcomes:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for *_, done in outcomes:
                    if not done.done():
                        done.set_result(None)

    async def _record_one(
        self,
        uow: UnitOfWork,
        delivery: WebhookDelivery,
        response: WebhookResponse | None,
        claimed_with: WebhookEndpoint | None,
    ) -> None:
        if not await uow.deliveries.finish(delivery, self.worker_id):
            return  # our lease ran out and another took it: its outcome stands
        healthy = claimed_with is not None and claimed_with.failing_since is None
        if response is None or (delivery.status is DeliveryStatus.SUCCEEDED and healthy):
            return
        # Only a failure, or a success after failures, changes the endpoint: read it afresh
        # in this transaction so a concurrent change to it is not undone.
        endpoint = await uow.webhooks.get(delivery.endpoint_id)
        if endpoint is not None:
            changed = self._endpoint_after(endpoint, delivery, response, self._clock.now())
            if changed is not endpoint:
                await uow.webhooks.save(changed)

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


def _give_back(counts: dict[_Key, int], key: _Key) -> None:
    left = counts.get(key, 1) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
