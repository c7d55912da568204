"""Prometheus metrics of the service, served at /metrics.

Counters are bumped where things happen; the state gauges (orders and compartments per state,
open alerts, pending outbox rows) are read from the database at scrape time, so every replica
reports the same truth rather than its own share of it.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from sqlalchemy import func, select

from locker_service.api.deps import ContextDep
from locker_service.models import Alert, Compartment, Kiosk, NotificationOutbox, Order

REGISTRY = CollectorRegistry()
DROPOFFS = Counter(
    "locker_dropoffs_total", "Drop-off requests by outcome", ["outcome"], registry=REGISTRY
)
PICKUPS = Counter(
    "locker_pickups_total", "Pickup attempts by outcome", ["outcome"], registry=REGISTRY
)
KIOSK_EVENTS = Counter(
    "locker_kiosk_events_total", "Kiosk events handled by type", ["type"], registry=REGISTRY
)
SCANS_IGNORED = Counter(
    "locker_scans_ignored_total",
    "Scan events that opened nothing because of their timestamp (stale: replayed after an "
    "outage; ahead: the kiosk clock is ahead beyond the skew allowance)",
    ["reason"],
    registry=REGISTRY,
)
ORDERS = Gauge("locker_orders", "Orders by state", ["state"], registry=REGISTRY)
COMPARTMENTS = Gauge("locker_compartments", "Compartments by state", ["state"], registry=REGISTRY)
ALERTS_OPEN = Gauge("locker_alerts_open", "Unresolved alerts by kind", ["kind"], registry=REGISTRY)
KIOSKS_ONLINE = Gauge("locker_kiosks_online", "Kiosks reporting online", registry=REGISTRY)
OUTBOX_PENDING = Gauge(
    "locker_outbox_pending", "Purchaser messages not yet sent", registry=REGISTRY
)

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
async def metrics(ctx: ContextDep) -> Response:
    async with ctx.sessionmaker() as session:
        ORDERS.clear()
        for state, count in await session.execute(
            select(Order.state, func.count()).group_by(Order.state)
        ):
            ORDERS.labels(state).set(count)
        COMPARTMENTS.clear()
        for state, count in await session.execute(
            select(Compartment.state, func.count()).group_by(Compartment.state)
        ):
            COMPARTMENTS.labels(state).set(count)
        ALERTS_OPEN.clear()
        for kind, count in await session.execute(
            select(Alert.kind, func.count()).where(Alert.state != "resolved").group_by(Alert.kind)
        ):
            ALERTS_OPEN.labels(kind).set(count)
        KIOSKS_ONLINE.set(
            await session.scalar(select(func.count()).where(Kiosk.online.is_(True))) or 0
        )
        OUTBOX_PENDING.set(
            await session.scalar(
                select(func.count()).where(NotificationOutbox.status.in_(["pending", "sending"]))
            )
            or 0
        )
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
