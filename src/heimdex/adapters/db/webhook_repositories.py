"""SQL repositories of webhook endpoints and deliveries (the outbox), on SQLite and PostgreSQL.

The same rules as ``repositories.py``: bound to one organisation, ``org_id = :org`` in every
statement (row-level security repeats it on PostgreSQL), domain structs in and out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import Table, and_, delete, insert, or_, select, update
from sqlalchemy.engine import RowMapping

from heimdex.adapters.db.repositories import _OrgRepository
from heimdex.adapters.db.tables import metadata
from heimdex.domain.errors import InvalidInput, NotFound
from heimdex.domain.model import PageCursor
from heimdex.domain.ports import DeliveryPage
from heimdex.domain.webhooks import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
    WebhookSecret,
)

ENDPOINTS: Table = metadata.tables["webhook_endpoints"]
DELIVERIES: Table = metadata.tables["webhook_deliveries"]


def _endpoint_values(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "org_id": endpoint.org_id,
        "url": endpoint.url,
        "events": [event.value for event in endpoint.events],
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "secrets": msgspec.to_builtins(endpoint.secrets),
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": endpoint.failing_since,
    }


def _endpoint_from_row(row: RowMapping) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row["id"],
        org_id=row["org_id"],
        url=row["url"],
        events=tuple(WebhookEventType(event) for event in row["events"]),
        description=row["description"],
        enabled=bool(row["enabled"]),
        secrets=msgspec.convert(row["secrets"], tuple[WebhookSecret, ...]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        disabled_reason=row["disabled_reason"],
        failing_since=row["failing_since"],
    )


class SqlWebhookEndpointRepository(_OrgRepository):
    """Webhook endpoints of the unit of work's organisation."""

    async def add(self, endpoint: WebhookEndpoint) -> None:
        self._own(endpoint.org_id, "the endpoint")
        await self._insert_unique(
            insert(ENDPOINTS).values(_endpoint_values(endpoint)), "the endpoint exists"
        )

    async def get(self, endpoint_id: UUID) -> WebhookEndpoint | None:
        result = await self._execute(
            select(ENDPOINTS).where(
                ENDPOINTS.c.org_id == self._org_id, ENDPOINTS.c.id == endpoint_id
            )
        )
        row = result.mappings().first()
        return None if row is None else _endpoint_from_row(row)

    async def list_all(self) -> list[WebhookEndpoint]:
        result = await self._execute(
            select(ENDPOINTS)
            .where(ENDPOINTS.c.org_id == self._org_id)
            .order_by(ENDPOINTS.c.created_at, ENDPOINTS.c.id)
        )
        return [_endpoint_from_row(row) for row in result.mappings()]

    async def subscribed(self, event_type: WebhookEventType) -> list[WebhookEndpoint]:
        # Few endpoints per organisation: the event filter is applied here, not in JSON SQL
        # that SQLite and PostgreSQL spell differently.
        result = await self._execute(
            select(ENDPOINTS)
            .where(ENDPOINTS.c.org_id == self._org_id, ENDPOINTS.c.enabled.is_(True))
            .order_by(ENDPOINTS.c.created_at, ENDPOINTS.c.id)
        )
        endpoints = [_endpoint_from_row(row) for row in result.mappings()]
        return [endpoint for endpoint in endpoints if endpoint.wants(event_type)]

    async def save(self, endpoint: WebhookEndpoint) -> None:
        self._own(endpoint.org_id, "the endpoint")
        values = _endpoint_values(endpoint)
        del values["id"], values["org_id"]
        changed = await self._change(
            update(ENDPOINTS)
            .where(ENDPOINTS.c.org_id == self._org_id, ENDPOINTS.c.id == endpoint.id)
            .values(values)
        )
        if changed == 0:
            raise NotFound("no such webhook endpoint")

    async def delete(self, endpoint_id: UUID) -> bool:
        # Explicitly, not only by the foreign key's cascade: SQLite enforces it only with
        # PRAGMA foreign_keys on.
        await self._change(
            delete(DELIVERIES).where(
                DELIVERIES.c.org_id == self._org_id, DELIVERIES.c.endpoint_id == endpoint_id
            )
        )
        changed = await self._change(
            delete(ENDPOINTS).where(
                ENDPOINTS.c.org_id == self._org_id, ENDPOINTS.c.id == endpoint_id
            )
        )
        return changed == 1


def _delivery_values(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "org_id": delivery.org_id,
        "endpoint_id": delivery.endpoint_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type.value,
        "payload": delivery.payload,
        "status": delivery.status.value,
        "attempts": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at,
        "lease_owner": delivery.lease_owner,
        "lease_expires_at": delivery.lease_expires_at,
        "last_attempt_at": delivery.last_attempt_at,
        "last_status_code": delivery.last_status_code,
        "last_error_code": delivery.last_error_code,
        "last_error": delivery.last_error,
        "created_at": delivery.created_at,
        "updated_at": delivery.updated_at,
        "delivered_at": delivery.delivered_at,
    }


# What never changes after a delivery is written: its identity, event and body.
_FIXED = ("id", "org_id", "endpoint_id", "event_id", "event_type", "payload", "created_at")


def _changing_values(delivery: WebhookDelivery) -> dict[str, Any]:
    """The columns an attempt or a requeue changes (the body is not rewritten each time)."""
    values = _delivery_values(delivery)
    for name in _FIXED:
        del values[name]
    return values


def _delivery_from_row(row: RowMapping) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"],
        org_id=row["org_id"],
        endpoint_id=row["endpoint_id"],
        event_id=row["event_id"],
        event_type=WebhookEventType(row["event_type"]),
        payload=row["payload"],
        status=DeliveryStatus(row["status"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        last_attempt_at=row["last_attempt_at"],
        last_status_code=row["last_status_code"],
        last_error_code=row["last_error_code"],
        last_error=row["last_error"],
        delivered_at=row["delivered_at"],
    )


class SqlWebhookDeliveryRepository(_OrgRepository):
    """Deliveries of the unit of work's organisation. ``added`` tells the unit of work that
    this transaction wrote to the outbox, so a deliverer in this process can be woken."""

    added = False

    async def add(self, delivery: WebhookDelivery) -> None:
        self._own(delivery.org_id, "the delivery")
        await self._execute(insert(DELIVERIES).values(_delivery_values(delivery)))
        self.added = True

    async def get(self, delivery_id: UUID) -> WebhookDelivery | None:
        result = await self._execute(
            select(DELIVERIES).where(
                DELIVERIES.c.org_id == self._org_id, DELIVERIES.c.id == delivery_id
            )
        )
        row = result.mappings().first()
        return None if row is None else _delivery_from_row(row)

    async def list_for_endpoint(
        self,
        endpoint_id: UUID,
        *,
        status: DeliveryStatus | None,
        limit: int,
        after: PageCursor | None,
    ) -> DeliveryPage:
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        conditions = [DELIVERIES.c.org_id == self._org_id, DELIVERIES.c.endpoint_id == endpoint_id]
        if status is not None:
            conditions.append(DELIVERIES.c.status == status.value)
        if after is not None:
            conditions.append(
                or_(
                    DELIVERIES.c.created_at < after.created_at,
                    and_(DELIVERIES.c.created_at == after.created_at, DELIVERIES.c.id < after.id),
                )
            )
        result = await self._execute(
            select(DELIVERIES)
            .where(*conditions)
            .order_by(DELIVERIES.c.created_at.desc(), DELIVERIES.c.id.desc())
            .limit(limit + 1)
        )
        items = [_delivery_from_row(row) for row in result.mappings()]
        if len(items) <= limit:
            return DeliveryPage(items=items, next_cursor=None)
        items = items[:limit]
        return DeliveryPage(
            items=items, next_cursor=PageCursor(created_at=items[-1].created_at, id=items[-1].id)
        )

    async def claim(
        self, delivery_id: UUID, owner: str, now: datetime, lease_until: datetime
    ) -> WebhookDelivery | None:
        claimed = await self.claim_many([delivery_id], owner, now, lease_until)
        return claimed[0] if claimed else None

    async def claim_many(
        self, delivery_ids: Sequence[UUID], owner: str, now: datetime, lease_until: datetime
    ) -> list[WebhookDelivery]:
        if not delivery_ids:
            return []
        # One conditional UPDATE … RETURNING (PostgreSQL, SQLite 3.35+): of two claimers the
        # second re-checks the condition against the first's committed rows and gets none.
        claimable = and_(
            DELIVERIES.c.status == DeliveryStatus.PENDING.value,
            DELIVERIES.c.next_attempt_at <= now,
            or_(DELIVERIES.c.lease_expires_at.is_(None), DELIVERIES.c.lease_expires_at < now),
        )
        result = await self._execute(
            update(DELIVERIES)
            .where(
                DELIVERIES.c.org_id == self._org_id,
                DELIVERIES.c.id.in_(list(delivery_ids)),
                claimable,
            )
            .values(
                attempts=DELIVERIES.c.attempts + 1,
                lease_owner=owner,
                lease_expires_at=lease_until,
                updated_at=now,
            )
            .returning(*DELIVERIES.c)
        )
        return [_delivery_from_row(row) for row in result.mappings()]

    async def finish(self, delivery: WebhookDelivery, owner: str) -> bool:
        self._own(delivery.org_id, "the delivery")
        values = _changing_values(delivery)
        changed = await self._change(
            update(DELIVERIES)
            .where(
                DELIVERIES.c.org_id == self._org_id,
                DELIVERIES.c.id == delivery.id,
                DELIVERIES.c.status == DeliveryStatus.PENDING.value,
                DELIVERIES.c.lease_owner == owner,
            )
            .values(values)
        )
        return changed == 1

    async def requeue(self, delivery_id: UUID, now: datetime) -> WebhookDelivery | None:
        current = await self.get(delivery_id)
        if current is None or current.status is DeliveryStatus.SUCCEEDED:
            return None
        again = current.requeued(now)
        values = _changing_values(again)
        changed = await self._change(
            update(DELIVERIES)
            .where(
                DELIVERIES.c.org_id == self._org_id,
                DELIVERIES.c.id == delivery_id,
                DELIVERIES.c.status != DeliveryStatus.SUCCEEDED.value,
            )
            .values(values)
        )
        if not changed:
            return None
        self.added = True  # due now: wake a deliverer in this process
        return again
