"""Merchants' webhook endpoints (X-API-Key): register, list, remove, rotate the secret, and the
deliveries (the dead letters among them) with their redelivery. ADR 0072."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update

from locker_service.api.deps import (
    MERCHANT_KEY_HEADER,
    ContextDep,
    IdPath,
    MerchantDep,
    SessionDep,
    SettingsDep,
)
from locker_service.bounds import INT8_MAX, Text
from locker_service.errors import Conflict, NotFound, Unprocessable
from locker_service.models import Merchant, WebhookDelivery, WebhookEndpoint, utcnow
from locker_service.notifications import webhooks
from locker_service.notifications.webhooks import check_url, new_secret
from locker_service.orders.webhooks import EVENT_TYPES

router = APIRouter(prefix="/api/v1", tags=["webhooks"])

MAX_ENDPOINTS = 10  # per merchant: a platform's few receivers, not a fan-out service
ROTATION_OVERLAP = timedelta(hours=24)  # the old secret still signs this long after a rotation


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Text = Field(max_length=2000, description="https (http only to an allowed network)")
    events: list[str] = Field(
        default_factory=lambda: list(EVENT_TYPES),
        min_length=1,
        description=f"event types to receive: {', '.join(EVENT_TYPES)} (default: all)",
    )


class EndpointRead(BaseModel):
    id: int
    url: str
    events: list[str]
    enabled: bool
    created_at: datetime
    previous_until: datetime | None = Field(
        description="the previous secret also signs until then (after a rotation)"
    )


class EndpointSecret(EndpointRead):
    secret: str = Field(description="Standard Webhooks secret (whsec_...): shown once, keep it")


class DeliveryRead(BaseModel):
    id: int
    endpoint_id: int
    message_id: str = Field(description="the webhook-id header: the same on every retry")
    event_type: str
    order_id: str
    status: str  # pending, sending, delivered, dead
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


def _read(e: WebhookEndpoint) -> dict[str, object]:
    return {
        "id": e.id,
        "url": e.url,
        "events": e.events,
        "enabled": e.enabled,
        "created_at": e.created_at,
        "previous_until": e.previous_until,
    }


async def _endpoint(
    session: SessionDep, merchant: MerchantDep, endpoint_id: int
) -> WebhookEndpoint:
    endpoint = await session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.merchant_id != merchant.id or not endpoint.enabled:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return endpoint


@router.post(
    "/webhooks", response_model=EndpointSecret, status_code=201, openapi_extra=MERCHANT_KEY_HEADER
)
async def register(
    body: EndpointCreate, merchant: MerchantDep, session: SessionDep, settings: SettingsDep
) -> EndpointSecret:
    """Register an endpoint for some order events; the answer holds its signing secret."""
    unknown = sorted(set(body.events) - set(EVENT_TYPES))
    if unknown:
        raise Unprocessable(
            f"unknown event types {unknown}: one of {', '.join(EVENT_TYPES)}",
            code="unknown_event_type",
        )
    await check_url(body.url, settings)
    # The merchant's row locked first: two registrations at once count one after the other
    # (on SQLite the transaction's BEGIN IMMEDIATE already makes them take turns).
    await session.execute(select(Merchant.id).where(Merchant.id == merchant.id).with_for_update())
    count = len(
        (
            await session.scalars(
                select(WebhookEndpoint.id).where(
                    WebhookEndpoint.merchant_id == merchant.id, WebhookEndpoint.enabled.is_(True)
                )
            )
        ).all()
    )
    if count >= MAX_ENDPOINTS:
        raise Conflict(f"at most {MAX_ENDPOINTS} webhook endpoints", code="too_many_endpoints")
    endpoint = WebhookEndpoint(
        merchant_id=merchant.id,
        url=body.url,
        events=sorted(set(body.events), key=EVENT_TYPES.index),
        secret=new_secret(),
        enabled=True,
        created_at=utcnow(),
    )
    session.add(endpoint)
    await session.commit()
    return EndpointSecret(**_read(endpoint), secret=endpoint.secret)


@router.get("/webhooks", response_model=list[EndpointRead], openapi_extra=MERCHANT_KEY_HEADER)
async def list_endpoints(merchant: MerchantDep, session: SessionDep) -> list[EndpointRead]:
    rows = await session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.merchant_id == merchant.id, WebhookEndpoint.enabled.is_(True))
        .order_by(WebhookEndpoint.id)
    )
    return [EndpointRead(**_read(e)) for e in rows]


@router.delete("/webhooks/{endpoint_id}", status_code=204, openapi_extra=MERCHANT_KEY_HEADER)
async def remove(
    endpoint_id: IdPath, merchant: MerchantDep, session: SessionDep, ctx: ContextDep
) -> Response:
    """Stop sending to it; what was still queued for it goes to the dead letters."""
    endpoint = await _endpoint(session, merchant, endpoint_id)
    endpoint.enabled = False
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint.id,
            WebhookDelivery.status.in_(("pending", "sending")),
        )
        .values(status="dead", last_error=webhooks.REMOVED, locked_until=None)
    )
    await webhooks.endpoint_removed(session, endpoint.id, ctx.hub)
    await session.commit()
    return Response(status_code=204)


@router.post(
    "/webhooks/{endpoint_id}/rotate-secret",
    response_model=EndpointSecret,
    openapi_extra=MERCHANT_KEY_HEADER,
)
async def rotate(endpoint_id: IdPath, merchant: MerchantDep, session: SessionDep) -> EndpointSecret:
    """A new secret; the old one signs beside it for 24 h, so the receiver can switch."""
    endpoint = await _endpoint(session, merchant, endpoint_id)
    endpoint.previous_secret, endpoint.secret = endpoint.secret, new_secret()
    endpoint.previous_until = utcnow() + ROTATION_OVERLAP
    await session.commit()
    return EndpointSecret(**_read(endpoint), secret=endpoint.secret)


@router.get(
    "/webhooks/deliveries", response_model=list[DeliveryRead], openapi_extra=MERCHANT_KEY_HEADER
)
async def deliveries(
    merchant: MerchantDep,
    session: SessionDep,
    status: Annotated[Literal["pending", "sending", "delivered", "dead"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: Annotated[
        int | None,
        Query(
            ge=1,
            le=INT8_MAX,
            description="only deliveries older than this one: the last id of a page, to read "
            "the next",
        ),
    ] = None,
) -> list[DeliveryRead]:
    """The merchant's deliveries, newest first; `status=dead`: the dead letters. Page on with
    `before_id` set to the last id of the page read."""
    query = (
        select(WebhookDelivery)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookEndpoint.merchant_id == merchant.id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if before_id is not None:
        query = query.where(WebhookDelivery.id < before_id)
    return [_delivery(d) for d in await session.scalars(query)]


def _delivery(d: WebhookDelivery) -> DeliveryRead:
    return DeliveryRead(
        id=d.id,
        endpoint_id=d.endpoint_id,
        message_id=d.message_id,
        event_type=d.event_type,
        order_id=str(d.order_id),
        status=d.status,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at,
        last_error=d.last_error,
        created_at=d.created_at,
        delivered_at=d.delivered_at,
    )


@router.post(
    "/webhooks/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryRead,
    openapi_extra=MERCHANT_KEY_HEADER,
)
async def redeliver(
    delivery_id: IdPath, merchant: MerchantDep, session: SessionDep
) -> DeliveryRead:
    """Send a dead (or delivered) delivery again, with its message id: the receiver's
    "once" still holds."""
    found = (
        await session.execute(
            select(WebhookDelivery, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.id == delivery_id, WebhookEndpoint.merchant_id == merchant.id)
        )
    ).first()
    if found is None:
        raise NotFound(f"no delivery {delivery_id}")
    delivery, endpoint = found
    if not endpoint.enabled:
        raise Conflict("its endpoint was removed", code="endpoint_removed")
    if delivery.status in ("pending", "sending"):
        raise Conflict("it is on its way", code="not_finished")
    delivery.status, delivery.attempts, delivery.next_attempt_at = "pending", 0, utcnow()
    delivery.locked_until = None
    await session.commit()
    return _delivery(delivery)
