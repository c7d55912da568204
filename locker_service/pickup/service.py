"""Pickup by code: check throttling, kill switch and the code, claim its single use, unlock.

Every try is recorded (in its own transaction, so a refusal still counts) for throttling. A
claimed code is given back if the door did not open, so a kiosk hiccup does not cost the
purchaser her food.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.api.errors import Conflict, Forbidden, ServiceError, TooManyRequests
from locker_service.compartments import service as doors
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.kiosk_link.errors import CommandTimeout, KioskLinkError
from locker_service.metrics import PICKUPS
from locker_service.models import Compartment, Kiosk, Order, PickupAttempt, Site, utcnow
from locker_service.orders import repository as orders
from locker_service.orders.lifecycle import OrderState
from locker_service.pickup import codes, throttle
from locker_service.timers import service as timers
from locker_service.timers.service import TimerKind

log = logging.getLogger(__name__)


class InvalidCode(Forbidden):
    code = "invalid_code"


class KillSwitchEngaged(Forbidden):
    code = "kill_switch_engaged"


@dataclass(frozen=True)
class PickupResult:
    order: Order
    compartment: Compartment
    request_id: str


def limits_of(ctx: ServiceContext) -> throttle.Limits:
    s = ctx.settings
    return throttle.Limits(
        window=timedelta(seconds=s.scaled(s.pickup_window_s)),
        lockout=timedelta(seconds=s.scaled(s.pickup_lockout_s)),
        per_source=s.pickup_max_failures_per_source,
        per_kiosk=s.pickup_max_failures_per_kiosk,
        per_order=s.pickup_max_failures_per_order,
    )


async def _failures(
    session: AsyncSession, since: datetime, *conditions: ColumnElement[bool]
) -> list[datetime]:
    query = (
        select(PickupAttempt.at)
        .where(PickupAttempt.ok.is_(False), PickupAttempt.at >= since, *conditions)
        .order_by(PickupAttempt.at.desc())
        .limit(200)
    )
    return list((await session.scalars(query)).all())


async def _record(
    ctx: ServiceContext, kiosk: Kiosk, source: str, order: Order | None, ok: bool
) -> None:
    async with session_scope(ctx.sessionmaker) as session:
        session.add(
            PickupAttempt(
                kiosk_id=kiosk.id,
                source=source,
                order_id=order.id if order else None,
                at=utcnow(),
                ok=ok,
            )
        )


async def pickup(
    ctx: ServiceContext,
    kiosk: Kiosk,
    *,
    source: str,
    code: str | None = None,
    token: str | None = None,
) -> PickupResult:
    """Open the compartment of the order a code names, if everything allows it."""
    try:
        result = await _pickup(ctx, kiosk, source=source, code=code, token=token)
    except (ServiceError, KioskLinkError) as exc:
        PICKUPS.labels(exc.code).inc()
        raise
    PICKUPS.labels("ok").inc()
    return result


async def _pickup(
    ctx: ServiceContext,
    kiosk: Kiosk,
    *,
    source: str,
    code: str | None,
    token: str | None,
) -> PickupResult:
    settings = ctx.settings
    limits = limits_of(ctx)
    now = utcnow()
    since = now - limits.window - limits.lockout
    async with session_scope(ctx.sessionmaker) as session:
        lockout = throttle.check(
            now,
            limits,
            by_source=await _failures(
                session, since, PickupAttempt.source == source, PickupAttempt.kiosk_id == kiosk.id
            ),
            by_kiosk=await _failures(session, since, PickupAttempt.kiosk_id == kiosk.id),
        )
        site = await session.get(Site, kiosk.site_id)
    if lockout is not None:
        await _record(ctx, kiosk, source, None, False)
        raise TooManyRequests(
            f"too many wrong codes ({lockout.dimension}): try again later",
            retry_after_s=lockout.retry_after_s,
            code="locked_out",
        )
    if site is not None and site.kill_switch_engaged:
        raise KillSwitchEngaged("openings are frozen at this site: please ask staff")

    opening_id: int | None = None
    compartment: Compartment | None = None
    async with session_scope(ctx.sessionmaker) as session:
        order = await _find(session, settings.secret_key, kiosk, code=code, token=token)
        refusal = await _refusal(session, ctx, kiosk, order, limits, since)
        if refusal is None and order is not None:
            if await orders.mark_code_used(session, order, utcnow()):
                # One transaction: the code's single use, the audited reason to open, and the
                # timer that gives the code back should the door never open (e.g. the service
                # dies before the unlock leaves).
                compartment = await session.get(Compartment, order.compartment_id)
                assert compartment is not None
                opening = doors.authorise(
                    session, compartment, who="purchaser", why="pickup", order_id=order.id
                )
                orders.add_event(session, order.id, "purchaser", source, "code_accepted", {})
                session.add(
                    PickupAttempt(
                        kiosk_id=kiosk.id, source=source, order_id=order.id, at=utcnow(), ok=True
                    )
                )
                timers.schedule(
                    session,
                    TimerKind.CODE_RELEASE,
                    utcnow() + timedelta(seconds=doors.authorisation_window_s(ctx)),
                    order_id=order.id,
                    compartment_id=compartment.id,
                )
                await session.flush()
                opening_id = opening.id
            else:
                refusal = Conflict("this code has been used already", code="code_used")
    if refusal is not None or order is None or compartment is None or opening_id is None:
        await _record(ctx, kiosk, source, order, False)
        raise refusal or InvalidCode("this code does not open anything here")

    try:
        reply = await doors.unlock(ctx, kiosk, compartment, opening_id)
    except CommandTimeout:
        raise  # the lock may have released: keep the code used until the door events tell
    except Exception:
        async with session_scope(ctx.sessionmaker) as session:
            fresh = await session.get(Order, order.id)
            if fresh is not None:
                await orders.mark_code_used(session, fresh, None)
        raise
    return PickupResult(order=order, compartment=compartment, request_id=reply.request_id)


async def _find(
    session: AsyncSession,
    secret_key: str,
    kiosk: Kiosk,
    *,
    code: str | None,
    token: str | None,
) -> Order | None:
    if token is not None:
        return await orders.by_token_hash(session, codes.token_hash(token))
    if code is None:
        return None
    matches = await orders.by_code_hash_at_kiosk(
        session, codes.code_hash(secret_key, code), kiosk.id
    )
    ready = [o for o in matches if o.state == OrderState.READY]
    if len(ready) > 1:
        # Two ready orders at one kiosk with the same 8 digits (odds ~1e-6): open neither.
        log.error("fallback code collision at kiosk %s; purchasers must use the QR", kiosk.code)
        return None
    return ready[0] if ready else (matches[0] if matches else None)


async def _refusal(
    session: AsyncSession,
    ctx: ServiceContext,
    kiosk: Kiosk,
    order: Order | None,
    limits: throttle.Limits,
    since: datetime,
) -> Exception | None:
    if order is None:
        return InvalidCode("this code does not open anything here")
    order_failures = await _failures(session, since, PickupAttempt.order_id == order.id)
    lockout = throttle.check(utcnow(), limits, by_source=[], by_kiosk=[], by_order=order_failures)
    if lockout is not None:
        return TooManyRequests(
            "too many tries for this order: try again later",
            retry_after_s=lockout.retry_after_s,
            code="locked_out",
        )
    compartment = (
        await session.get(Compartment, order.compartment_id) if order.compartment_id else None
    )
    if compartment is None or compartment.kiosk_id != kiosk.id:
        return InvalidCode("this code does not open anything here")
    if order.state == OrderState.PICKED_UP or (
        order.state == OrderState.READY and order.code_used_at is not None
    ):
        return Conflict("this code has been used already", code="code_used")
    if order.state in (OrderState.EXPIRED, OrderState.CANCELLED, OrderState.FAILED):
        return Conflict(f"this order is {order.state}: please ask staff", code="code_expired")
    if order.state != OrderState.READY:
        return Conflict("the order is not ready yet", code="not_ready")
    return None
