"""Webhook endpoints of an organisation: register, read, change, delete, rotate the secret, and
look at (or retry) their deliveries. Every call is scoped to the caller's organisation: another's
endpoint is simply not found."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from uuid import UUID

import msgspec

from heimdex.application.assets import decode_cursor
from heimdex.domain.errors import InvalidInput, NotFound
from heimdex.domain.model import Principal
from heimdex.domain.ports import Clock, DeliveryPage, UnitOfWorkFactory
from heimdex.domain.webhook_urls import check_registration
from heimdex.domain.webhooks import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
    WebhookSecret,
    new_secret,
)
from heimdex.logs import get_logger

log = get_logger(__name__)
MAX_DELIVERY_PAGE = 200
MAX_ENDPOINTS_PER_ORG = 50


class WebhookPolicy(msgspec.Struct, frozen=True, kw_only=True):
    #: http:// URLs too (development); production wants https
    allow_http: bool = True
    #: loopback, private, link-local… addresses too (tests, compose)
    allow_private: bool = False
    secret_grace: timedelta = timedelta(days=1)


class EndpointChange(msgspec.Struct, frozen=True, kw_only=True):
    """What ``PATCH`` may change; ``None`` leaves a field as it is."""

    url: str | None = None
    events: Sequence[WebhookEventType] | None = None
    enabled: bool | None = None
    description: str | None = None


class WebhookService:
    """Endpoints and deliveries of the caller's organisation."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, policy: WebhookPolicy) -> None:
        self._uow = uow
        self._clock = clock
        self._policy = policy

    def _check_url(self, url: str) -> None:
        check_registration(
            url, allow_http=self._policy.allow_http, allow_private=self._policy.allow_private
        )

    async def create(
        self,
        principal: Principal,
        url: str,
        events: Sequence[WebhookEventType] = (),
        description: str | None = None,
    ) -> tuple[WebhookEndpoint, str]:
        """Register an endpoint; answers it and its signing secret (shown only now).
        Raises ``WebhookUrlForbidden`` for a URL it may never send to."""
        self._check_url(url)
        now = self._clock.now()
        secret = new_secret()
        endpoint = WebhookEndpoint(
            id=uuid.uuid4(),
            org_id=principal.org_id,
            url=url,
            events=tuple(dict.fromkeys(events)),
            description=description,
            enabled=True,
            secrets=(WebhookSecret(value=secret, created_at=now),),
            created_at=now,
            updated_at=now,
        )
        async with self._uow(principal.org_id) as uow:
            await uow.lock_org()  # the count and the add, one request at a time
            if len(await uow.webhooks.list_all()) >= MAX_ENDPOINTS_PER_ORG:
                raise InvalidInput(
                    f"an organisation may register at most {MAX_ENDPOINTS_PER_ORG} endpoints"
                )
            await uow.webhooks.add(endpoint)
            await uow.commit()
        log.info("webhook_endpoint_created", endpoint_id=str(endpoint.id))
        return endpoint, secret

    async def list(self, principal: Principal) -> list[WebhookEndpoint]:
        async with self._uow(principal.org_id) as uow:
            return await uow.webhooks.list_all()

    async def get(self, principal: Principal, endpoint_id: UUID) -> WebhookEndpoint:
        async with self._uow(principal.org_id) as uow:
            endpoint = await uow.webhooks.get(endpoint_id)
        if endpoint is None:
            raise NotFound("no such webhook endpoint")
        return endpoint

    async def update(
        self, principal: Principal, endpoint_id: UUID, change: EndpointChange
    ) -> WebhookEndpoint:
        if change.url is not None:
            self._check_url(change.url)
        now = self._clock.now()
        async with self._uow(principal.org_id) as uow:
            endpoint = await uow.webhooks.get(endpoint_id)
            if endpoint is None:
                raise NotFound("no such webhook endpoint")
            updated = msgspec.structs.replace(
                endpoint,
                url=endpoint.url if change.url is None else change.url,
                events=endpoint.events
                if change.events is None
                else tuple(dict.fromkeys(change.events)),
                description=endpoint.description
                if change.description is None
                else change.description,
                updated_at=now,
            )
            if change.enabled is not None:
                # Enabling again starts afresh: the failures that disabled it are history.
                updated = msgspec.structs.replace(
                    updated,
                    enabled=change.enabled,
                    disabled_reason=None,
                    failing_since=None if change.enabled else updated.failing_since,
                )
            await uow.webhooks.save(updated)
            await uow.commit()
        return updated

    async def delete(self, principal: Principal, endpoint_id: UUID) -> None:
        async with self._uow(principal.org_id) as uow:
            if not await uow.webhooks.delete(endpoint_id):
                raise NotFound("no such webhook endpoint")
            await uow.commit()
        log.info("webhook_endpoint_deleted", endpoint_id=str(endpoint_id))

    async def rotate_secret(
        self, principal: Principal, endpoint_id: UUID
    ) -> tuple[WebhookEndpoint, str]:
        """A new signing secret (shown only now); the old one keeps signing beside it for the
        grace period, so receivers can switch without losing an event."""
        now = self._clock.now()
        async with self._uow(principal.org_id) as uow:
            endpoint = await uow.webhooks.get(endpoint_id)
            if endpoint is None:
                raise NotFound("no such webhook endpoint")
            rotated, secret = endpoint.rotated(now, self._policy.secret_grace)
            await uow.webhooks.save(rotated)
            await uow.commit()
        log.info("webhook_secret_rotated", endpoint_id=str(endpoint_id))
        return rotated, secret

    async def deliveries(
        self,
        principal: Principal,
        endpoint_id: UUID,
        status: DeliveryStatus | None,
        limit: int,
        cursor: str | None,
    ) -> DeliveryPage:
        if not 1 <= limit <= MAX_DELIVERY_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_DELIVERY_PAGE}")
        after = decode_cursor(cursor) if cursor else None
        async with self._uow(principal.org_id) as uow:
            if await uow.webhooks.get(endpoint_id) is None:
                raise NotFound("no such webhook endpoint")
            return await uow.deliveries.list_for_endpoint(
                endpoint_id, status=status, limit=limit, after=after
            )

    async def retry(
        self, principal: Principal, endpoint_id: UUID, delivery_id: UUID
    ) -> WebhookDelivery:
        """Send the delivery again now, with the same ``webhook-id`` and a fresh schedule. A
        delivery that already succeeded is answered as it is."""
        now = self._clock.now()
        async with self._uow(principal.org_id) as uow:
            delivery = await uow.deliveries.get(delivery_id)
            if delivery is None or delivery.endpoint_id != endpoint_id:
                raise NotFound("no such delivery")
            if delivery.status is DeliveryStatus.SUCCEEDED:
                return delivery
            again = await uow.deliveries.requeue(delivery_id, now)
            await uow.commit()
        log.info(
            "webhook_delivery_requeued", delivery_id=str(delivery_id), event_id=delivery.event_id
        )
        return again or delivery
