"""Order events for merchants' webhooks, queued in the transaction of the step they report.

Each step of an order that a merchant can act on becomes an event (`EVENT_TYPES`); for each of
the merchant's enabled endpoints that asked for its type a delivery row is written with the
step, so an event is never lost (the step did not happen) nor invented (it did). The delivery
worker (`locker_service.notifications.webhooks`) sends them, signed, in order per order.

The payload says what the order is and where, never who the purchaser is: her name and contact
stay with the service (and are erased with the order's data, ADR 0067).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.models import Compartment, Order, Site, WebhookDelivery, WebhookEndpoint, utcnow
from locker_service.orders.lifecycle import OrderState

EVENT_TYPES: Final[tuple[str, ...]] = (
    "order.accepted",
    "order.dropped_off",
    "order.ready",
    "order.reminder_sent",
    "order.hold_extended",
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


ACCEPTED: Final = "order.accepted"  # written with the order itself, by the order writer
# Her hold's end moved later: a kill switch's release gave back the time her code was refused
# (ADR 0123). The order's step (and `version`) is unchanged; `data.hold_until` is the new end.
HOLD_EXTENDED: Final = "order.hold_extended"
# The order's columns an event carries (as ISO times where they are times), and their names.
_CARRIED: Final[tuple[tuple[str, str], ...]] = (
    ("deposited_at", "deposited_at"),
    ("ready_at", "ready_at"),
    ("hold_until", "hold_until"),
    ("food_deadline", "food_deadline"),
    ("food_unsafe_at", "food_unsafe_at"),
    ("picked_up_at", "picked_up_at"),
    ("closed_at", "closed_at"),
    ("failure_reason", "reason"),
)


def _when(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def event_data(
    values: Mapping[str, Any], site_code: str | None, compartment: int | None
) -> dict[str, Any]:
    """What every event says of the order: from an `Order`'s columns or a new order's row."""
    return {
        "order_id": str(values["id"]),
        "external_ref": values["external_ref"],
        "state": values["state"],
        "site": site_code,
        "compartment": compartment,
        **{name: _when(values.get(column)) for column, name in _CARRIED},
        "version": values["version"],  # grows with every step: a redelivered event is told apart
    }


def accepted_payload(row: Mapping[str, Any], site_code: str) -> dict[str, Any]:
    """The `order.accepted` event of the new order `row`, stamped with its creation."""
    return {
        "type": ACCEPTED,
        "timestamp": row["created_at"].isoformat(),
        "data": event_data(row, site_code, None),
    }


def accepted_message_id(order_id: uuid.UUID, endpoint_id: int) -> str:
    """The same on both write paths (PostgreSQL computes it in the batch statement): one
    `order.accepted` per order and endpoint, whatever retries the write."""
    return "msg_" + hashlib.md5(f"{order_id}/{ACCEPTED}/{endpoint_id}".encode()).hexdigest()


async def enqueue_accepted(session: AsyncSession, row: Mapping[str, Any], site_code: str) -> int:
    """Queue `order.accepted` of the order just inserted from `row` (the SQLite write path)."""
    endpoints = await _wanting(session, row["merchant_id"], ACCEPTED)
    payload = accepted_payload(row, site_code)
    for endpoint in endpoints:
        session.add(
            WebhookDelivery(
                endpoint_id=endpoint.id,
                order_id=row["id"],
                message_id=accepted_message_id(row["id"], endpoint.id),
                event_type=ACCEPTED,
                payload=payload,
                status="pending",
                attempts=0,
                next_attempt_at=row["created_at"],
                created_at=row["created_at"],
            )
        )
    return len(endpoints)


async def _wanting(
    session: AsyncSession, merchant_id: int, event_type: str
) -> list[WebhookEndpoint]:
    endpoints = (
        await session.scalars(
            select(WebhookEndpoint).where(
                WebhookEndpoint.merchant_id == merchant_id,
                WebhookEndpoint.enabled.is_(True),
            )
        )
    ).all()
    return [e for e in endpoints if event_type in e.events]


async def enqueue(
    session: AsyncSession, order: Order, event_type: str, key: str | None = None
) -> int:
    """Queue `event_type` of `order` (as it now is) for each endpoint of its merchant that
    wants it; how many deliveries were queued. `key`: what makes this event once (a timer's
    id), so a retried timer queues nothing twice: its message ids are derived from it."""
    wanted = await _wanting(session, order.merchant_id, event_type)
    if not wanted:
        return 0
    site = await session.get(Site, order.site_id)
    compartment = (
        await session.get(Compartment, order.compartment_id) if order.compartment_id else None
    )
    now = utcnow()
    columns = ("id", "external_ref", "state", "version", *(c for c, _ in _CARRIED))
    data = event_data(
        {c: getattr(order, c) for c in columns},
        site.code if site else None,
        compartment.number if compartment else None,
    )
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
