"""The /metrics route: the state gauges read from the database, then the whole registry."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select

from locker_service.api.deps import ContextDep
from locker_service.metrics import (
    ALERTS_OPEN,
    COMPARTMENTS,
    KIOSKS_ONLINE,
    ORDERS,
    OUTBOX_PENDING,
    REGISTRY,
)
from locker_service.models import Alert, Compartment, Kiosk, NotificationOutbox, Order

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
