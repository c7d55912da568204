"""Order events for merchants' webhooks, queued in the transaction of the step they report.

Each step of an order that a merchant can act on becomes an event (`EVENT_TYPES`); for each of
the merchant's enabled endpoints that asked for its type a delivery row is written with the
step, so an event is never lost (the step did not happen) nor invented (it did). The delivery
worker (`locker_service.notifications.webhooks`) sends them, signed, in order per order.

The payload says what the order is and where, never who the purchaser is: her name and contact
stay with the service (and are erased with the order's data, ADR 0067).
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.models import Compartment, Order, Site, WebhookDelivery, WebhookEndpoint, utcnow
from locker_service.orders.lifecycle import OrderState

EVENT_TYPES: Final[tuple[str, ...]] = (
    "order.dropped_off",
    "order.ready",
    "order.reminder_sent",
    "order.picked_up",
    "order.expired",
    "order.food_unsafe",
    "order.cancelled",
    "order.failed",
)
BY_STATE: Final[dict[str, str]] = {
    OrderState.DEPOSITED: "order.dropped_off",
    OrderState.READY: "order.ready",
    OrderState.PICKED_UP: "order.picked_up",
    OrderState.EXPIRED: "order.expired",
    OrderState.CANCELLED: "order.cancelled",
    OrderState.FAILED: "order.failed",
}


def event_of(state: str, values: dict[str, Any]) -> str | None:
    """The event a step into `state` (with the columns it set) is, if merchants hear of it."""
    if state == OrderState.EXPIRED and values.get("food_unsafe_at") is not None:
        return "order.food_unsafe"
    return BY_STATE.get(state)


def _when(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def enqueue(
    session: AsyncSession, order: Order, event_type: str, key: str | None = None
) -> int:
    """Queue `event_type` of `order` (as it now is) for each endpoint of its merchant that
    wants it; how many deliveries were queued. `key`: what makes this event once (a timer's
    id), so a retried timer queues nothing twice: its message ids are derived from it."""
    endpoints = (
        await session.scalars(
            select(WebhookEndpoint).where(
                WebhookEndpoint.merchant_id == order.merchant_id,
                WebhookEndpoint.enabled.is_(True),
            )
        )
    ).all()
    wanted = [e for e in endpoints if event_type in e.events]
    if not wanted:
        return 0
    site = await session.get(Site, order.site_id)
    compartment = (
        await session.get(Compartment, order.compartment_id) if order.compartment_id else None
    )
    now = utcnow()
    data = {
        "order_id": str(order.id),
        "external_ref": order.external_ref,
        "state": order.state,
        "site": site.code if site else None,
        "compartment": compartment.number if compartment else None,
        "deposited_at": _when(order.deposited_at),
        "ready_at": _when(order.ready_at),
        "hold_until": _when(order.hold_until),
        "food_deadline": _when(order.food_deadline),
        "food_unsafe_at": _when(order.food_unsafe_at),
        "picked_up_at": _when(order.picked_up_at),
        "closed_at": _when(order.closed_at),
        "reason": order.failure_reason,
        "version": order.version,  # grows with every step: a redelivered event is told apart
    }
    queued = 0
    for endpoint in wanted:
        if key is None:
            message_id = f"msg_{uuid.uuid4().hex}"
        else:
            name = f"{order.id}/{event_type}/{key}/{endpoint.id}"
            message_id = f"msg_{uuid.uuid5(uuid.NAMESPACE_URL, name).hex}"
            if await session.scalar(
                select(WebhookDelivery.id).where(WebhookDelivery.message_id == message_id)
            ):
                continue  # queued by an earlier run of the same timer
        queued += 1
        session.add(
            WebhookDelivery(
                endpoint_id=endpoint.id,
                order_id=order.id,
                message_id=message_id,
                event_type=event_type,
                payload={"type": event_type, "timestamp": now.isoformat(), "data": data},
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    return queued
