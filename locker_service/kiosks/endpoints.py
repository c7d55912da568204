"""The kiosk screen's API (Bearer kiosk token): who am I, courier drop-off, typed-code pickup.

Openings do their own short transactions (they must commit before the unlock is sent), so these
endpoints use the service context rather than the request's session for the opening itself.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from sqlalchemy import func, select

from locker_service.api.deps import AttendedKioskDep, ContextDep, KioskDep, SessionDep
from locker_service.compartments.lifecycle import CompartmentState
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.dropoff import service as dropoff_service
from locker_service.errors import BadRequest
from locker_service.foodsafety.watch import Unsafe
from locker_service.kiosks.schemas import (
    DropoffAnswer,
    DropoffRequest,
    KioskMe,
    PickupAnswer,
    PickupRequest,
)
from locker_service.kiosks.story import Story
from locker_service.models import Compartment, Order, Site, utcnow
from locker_service.orders import codes
from locker_service.orders.lifecycle import OrderState
from locker_service.pickup import service as pickup_service
from locker_service.pickup.repository import SCREEN_SOURCE

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/kiosk", tags=["kiosk"])


@router.get("/me", response_model=KioskMe)
async def me(kiosk: KioskDep, session: SessionDep) -> KioskMe:
    site = await session.get(Site, kiosk.site_id)
    assert site is not None
    total, free = (
        await session.execute(
            select(
                func.count(),
                func.count().filter(Compartment.state == CompartmentState.AVAILABLE.value),
            ).where(Compartment.kiosk_id == kiosk.id)
        )
    ).one()
    return KioskMe(
        code=kiosk.code,
        name=kiosk.name,
        site_code=site.code,
        site_name=site.name,
        online=kiosk.online,
        kill_switch_engaged=site.kill_switch_engaged,
        compartments_total=total,
        compartments_free=free,
    )


@router.post("/dropoff", response_model=DropoffAnswer)
async def dropoff(body: DropoffRequest, kiosk: AttendedKioskDep, ctx: ContextDep) -> DropoffAnswer:
    """The courier names the order; a fitting compartment is reserved and opens."""
    try:
        result = await dropoff_service.dropoff(
            ctx, kiosk, body.courier_code, body.pin, body.order_ref
        )
    except dropoff_service.FoodTooOld as too_old:
        await _too_old(ctx, too_old)
        raise  # he is told to take it back, whatever became of the order's end
    return DropoffAnswer(
        compartment=result.compartment.number,
        order_id=result.order.id,
        state=result.order.state,
        message=f"Compartment {result.compartment.number} is open: put the food in, shut the door.",
    )


async def _too_old(ctx: ServiceContext, too_old: dropoff_service.FoodTooOld) -> None:
    """The food is out of safe time for the locker (ADR 0124): the order ends now as unsafe,
    each person told (her message, the merchant's notice), not at its drop-off deadline as
    "never dropped off" while the courier carries it back."""
    try:
        async with session_scope(ctx.attended_sessions) as session:  # he waits on it (ADR 0096)
            order = await session.scalar(
                select(Order).where(Order.id == too_old.order_id).with_for_update()
            )
            if order is not None and order.state == OrderState.CREATED:
                await Story(ctx).spoil(session, order, Unsafe(utcnow(), too_old.why))
    except Exception:
        log.exception("order %s, too old for the locker, was not ended", too_old.order_id)


@router.post("/pickup", response_model=PickupAnswer)
async def pickup(
    body: PickupRequest, kiosk: AttendedKioskDep, ctx: ContextDep, request: Request
) -> PickupAnswer:
    """The purchaser types her fallback code; her compartment, and only hers, opens."""
    code = codes.normalise_code(body.code)
    if code is None:
        raise BadRequest("the code has 8 digits", code="malformed_code")
    source = f"{SCREEN_SOURCE}{request.client.host if request.client else 'unknown'}"
    result = await pickup_service.pickup(ctx, kiosk, source=source, code=code)
    return PickupAnswer(
        compartment=result.compartment.number,
        message=f"Compartment {result.compartment.number} is open: enjoy your meal.",
    )
