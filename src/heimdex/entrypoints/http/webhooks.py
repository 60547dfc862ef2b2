"""``/v1/webhooks``: where an organisation's events go, their secrets and their deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Link
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from heimdex.application.assets import encode_cursor
from heimdex.application.webhooks import (
    MAX_DELIVERY_PAGE,
    EndpointChange,
    WebhookService,
)
from heimdex.domain import errors
from heimdex.domain.model import Principal
from heimdex.domain.webhook_urls import MAX_URL_LENGTH
from heimdex.domain.webhooks import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
)
from heimdex.entrypoints.http.openapi import (
    AUTHENTICATED,
    JSON_BODY,
    NOT_FOUND,
    PARAMETERS,
    SERVER,
    documented,
    raises,
)
from heimdex.schemas import SCHEMA_MEDIA_TYPE, webhook_events_schema_v1

_ENDPOINT_ID = {"webhook_id": "$response.body#/webhook_id"}
_LINKS = {
    "getWebhook": Link(operation_id="getWebhook", parameters=_ENDPOINT_ID),
    "updateWebhook": Link(operation_id="updateWebhook", parameters=_ENDPOINT_ID),
    "deleteWebhook": Link(operation_id="deleteWebhook", parameters=_ENDPOINT_ID),
    "rotateWebhookSecret": Link(operation_id="rotateWebhookSecret", parameters=_ENDPOINT_ID),
    "listWebhookDeliveries": Link(operation_id="listWebhookDeliveries", parameters=_ENDPOINT_ID),
}
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL_LENGTH)]
Description = Annotated[str, msgspec.Meta(max_length=255)]
Events = Annotated[list[WebhookEventType], msgspec.Meta(max_length=len(WebhookEventType))]


class WebhookCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: Url
    #: the event types to send; empty or absent: every type
    events: Events | None = None
    description: Description | None = None


class WebhookUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: Url | None = None
    events: Events | None = None
    enabled: bool | None = None
    description: Description | None = None


class WebhookView(msgspec.Struct, frozen=True, kw_only=True):
    webhook_id: UUID
    url: str
    events: list[WebhookEventType]
    description: str | None
    enabled: bool
    #: why Heimdex disabled it (410 Gone, failing for days)
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookView, frozen=True, kw_only=True):
    #: the signing secret (``whsec_…``), shown only in this answer
    secret: str


class WebhookList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[WebhookView]


class DeliveryView(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: UUID
    webhook_id: UUID
    #: the ``webhook-id`` header: the same on every attempt
    event_id: str
    event_type: WebhookEventType
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error_code: str | None
    #: the receiver's answer or the error, at most 1 KB
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveryList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[DeliveryView]
    next_cursor: str | None


def webhook_view(endpoint: WebhookEndpoint) -> WebhookView:
    return WebhookView(
        webhook_id=endpoint.id,
        url=endpoint.url,
        events=list(endpoint.events),
        description=endpoint.description,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def with_secret(endpoint: WebhookEndpoint, secret: str) -> WebhookWithSecret:
    return WebhookWithSecret(**msgspec.structs.asdict(webhook_view(endpoint)), secret=secret)


def delivery_view(delivery: WebhookDelivery) -> DeliveryView:
    return DeliveryView(
        delivery_id=delivery.id,
        webhook_id=delivery.endpoint_id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=delivery.status,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        last_attempt_at=delivery.last_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error_code=delivery.last_error_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        delivered_at=delivery.delivered_at,
    )


class WebhookController(Controller):
    path = "/webhooks"
    tags = ["webhooks"]

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        operation_id="createWebhook",
        **documented(
            AUTHENTICATED,
            JSON_BODY,
            SERVER,
            raises(errors.WebhookUrlForbidden),
            idempotent=True,
            links=_LINKS,
        ),
        summary="Register a webhook endpoint",
        description="Events are POSTed to `url` signed the Standard Webhooks way "
        "(`webhook-id`, `webhook-timestamp`, `webhook-signature`). The answer holds the signing "
        "`secret`, shown only this once. `https` is required in production; addresses on "
        "private networks are refused (422 `webhook_url_forbidden`).",
    )
    async def create_webhook(
        self,
        data: JSONBody[WebhookCreate],
        principal: NamedDependency[Principal],
        webhooks: NamedDependency[WebhookService],
    ) -> Response[WebhookWithSecret]:
        endpoint, secret = await webhooks.create(
            principal, data.url, data.events or (), data.description
        )
        return Response(
            with_secret(endpoint, secret),
            status_code=HTTP_201_CREATED,
            headers={"Location": f"/v1/webhooks/{endpoint.id}"},
        )

    @get(
        "/",
        operation_id="listWebhooks",
        **documented(AUTHENTICATED, SERVER),
        summary="List webhook endpoints",
    )
    async def list_webhooks(
        self, principal: NamedDependency[Principal], webhooks: NamedDependency[WebhookService]
    ) -> WebhookList:
        return WebhookList(items=[webhook_view(e) for e in await webhooks.list(principal)])

    @get(
        "/{webhook_id:uuid}",
        operation_id="getWebhook",
        **documented(AUTHENTICATED, PARAMETERS, NOT_FOUND, SERVER, links=_LINKS),
        summary="Read a webhook endpoint",
    )
    async def get_webhook(
        self,
        webhook_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        webhooks: NamedDependency[WebhookService],
    ) -> WebhookView:
        return webhook_view(await webhooks.get(principal, webhook_id))

    @patch(
        "/{webhook_id:uuid}",
        operation_id="updateWebhook",
        **documented(
            AUTHENTICATED,
            JSON_BODY,
            NOT_FOUND,
            SERVER,
            raises(errors.WebhookUrlForbidden),
            links=_LINKS,
        ),
        summary="Change a webhook endpoint",
        description="Change its `url`, `events`, `description`, or turn it off and on "
        "(`enabled`; enabling clears a `disabled_reason`).",
    )
    async def update_webhook(
        self,
        webhook_id: FromPath[UUID],
        data: JSONBody[WebhookUpdate],
        principal: NamedDependency[Principal],
        webhooks: NamedDependency[WebhookService],
    ) -> WebhookView:
        change = EndpointChange(
            url=data.url, events=data.events, enabled=data.enabled, description=data.description
        )
        return webhook_view(await webhooks.update(principal, webhook_id, change))

    @delete(
        "/{webhook_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        operation_id="deleteWebhook",
        **documented(AUTHENTICATED, PARAMETERS, NOT_FOUND, SERVER, idempotent=True),
        summary="Delete a webhook endpoint",
        description="With its deliveries; nothing more is sent to it.",
    )
    async def delete_webhook(
        self,
        webhook_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        webhooks: NamedDependency[WebhookService],
    ) -> None:
        await webhooks.delete(principal, webhook_id)

    @post(
        "/{webhook_id:uuid}/rotate-secret",
        status_code=HTTP_200_OK,
        operation_id="rotateWebhookSecret",
        **documented(AUTHENTICATED, PARAMETERS, NOT_FOUND, SERVER, idempotent=True, links=_LINKS),
        summary="Rotate the signing secret",
        description="Answers a new `secret` (shown only now). The previous one keeps signing "
        "beside it (a second `v1,` signature) for `HEIMDEX_WEBHOOK_SECRET_GRACE_SECONDS`.",
    )
    async def rotate_secret(
        self,
        webhook_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        webhooks: NamedDependency[WebhookService],
    ) -> WebhookWithSecret:
        endpoint, secret = await webhooks.rotate_secret(principal, webhook_id)
        return with_secret(endpoint, secret)

    @get(
        "/{webhook_id:uuid}/deliveries",
        operation_id="listWebhookDeliveries",
        **documented(AUTHENTICATED, PARAMETERS, NOT_FOUND, SERVER),
        summary="List an endpoint's deliveries",
        description="Newest first: status, attempts, the last status code and error (at most "
        "1 KB of the receiver's answer), the next attempt. Pass `next_cursor` back as `cursor`.",
    )
    async def list_deliveries(
        self,
        webhook_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        webhooks: NamedDependency[WebhookService],
        status: Annotated[DeliveryStatus | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_DELIVERY_PAGE)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> DeliveryList:
        page = await webhooks.deliveries(principal, webhook_id, status, limit, cursor)
        return DeliveryList(
            items=[delivery_view(d) for d in page.items],
            next_cursor=encode_cursor(page.next_cursor) if page.next_cursor else None,
        )

    @post(
        "/{webhook_id:uuid}/deliveries/{delivery_id:uuid}/retry",
        status_code=HTTP_200_OK,
        operation_id="retryWebhookDelivery",
        **documented(AUTHENTICATED, PARAMETERS, NOT_FOUND, SERVER, idempotent=True),
        summary="Send a delivery again",
        description="Due now, with the same `webhook-id` and a fresh retry schedule; a "
        "delivery that succeeded is answered as it is.",
    )
    async def retry_delivery(
        self,
        webhook_id: FromPath[UUID],
        delivery_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        webhooks: NamedDependency[WebhookService],
    ) -> DeliveryView:
        return delivery_view(await webhooks.retry(principal, webhook_id, delivery_id))


@get(
    "/schemas/webhook-events/v1",
    operation_id="webhookEventSchema",
    tags=["webhooks"],
    summary="The webhook events v1 JSON Schema",
    description="The body of every event, one branch per `type`.",
    media_type=SCHEMA_MEDIA_TYPE,
    responses={
        200: ResponseSpec(
            data_container=dict[str, Any],
            media_type=SCHEMA_MEDIA_TYPE,
            generate_examples=False,
            description="A JSON Schema (draft 2020-12) document",
        )
    },
    exclude_from_auth=True,  # a published contract, not tenant data
)
async def webhook_event_schema() -> Response[bytes]:
    return Response(webhook_events_schema_v1(), media_type=SCHEMA_MEDIA_TYPE)
