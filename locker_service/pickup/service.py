"""Pickup by code: check throttling, kill switch and the code, claim its single use, unlock.

The decision is one transaction (`claim`), which the caller may share: the kiosk handler puts
the scan event's row in it, so a scan costs one commit before its unlock leaves (ADR 0043).
Every try is recorded in that transaction, refusals included, which is why `claim` returns a
refusal instead of raising it: the caller commits, then raises. A claimed code is given back if
the door did not open, so a kiosk hiccup does not cost the purchaser her food.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.compartments import openings
from locker_service.compartments import service as doors
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.errors import Conflict, Forbidden, ServiceError, TooManyRequests
from locker_service.kiosk_link.errors import CommandTimeout
from locker_service.metrics import PICKUPS
from locker_service.models import Compartment, Kiosk, Order, utcnow
from locker_service.orders import codes
from locker_service.orders import repository as orders
from locker_service.orders.lifecycle import OrderState
from locker_service.pickup import repository, throttle
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


@dataclass(frozen=True)
class Claim:
    """A code's single use claimed with the audited opening it allows; the unlock may leave once
    the transaction that made it has committed."""

    order: Order
    compartment: Compartment
    opening_id: int


def limits_of(ctx: ServiceContext) -> throttle.Limits:
    s = ctx.settings
    return throttle.Limits(
        window=timedelta(seconds=s.scaled(s.pickup_window_s)),
        lockout=timedelta(seconds=s.scaled(s.pickup_lockout_s)),
        per_source=s.pickup_max_failures_per_source,
        per_kiosk=s.pickup_max_failures_per_kiosk,
        per_order=s.pickup_max_failures_per_order,
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
    async with session_scope(ctx.sessionmaker) as session:
        decision = await claim(session, ctx, kiosk, source=source, code=code, token=token)
    return await complete(ctx, kiosk, decision)


async def claim(
    session: AsyncSession,
    ctx: ServiceContext,
    kiosk: Kiosk,
    *,
    source: str,
    code: str | None,
    token: str | None,
) -> Claim | ServiceError:
    """Decide a pickup in the caller's transaction: the claim, or the refusal to raise after
    the commit (which records the failed try)."""
    limits = limits_of(ctx)
    now = utcnow()
    since = now - limits.window - limits.lockout
    frozen = await repository.site_frozen(session, kiosk.site_id)
    found = await find_order(session, ctx.settings.secret_key, kiosk, code=code, token=token)
    order, compartment = found if found is not None else (None, None)
    failures = await repository.failures(
        session, since, kiosk_id=kiosk.id, source=source, order_id=order.id if order else None
    )
    lockout = throttle.check(now, limits, by_source=failures.by_source, by_kiosk=failures.by_kiosk)
    if lockout is not None:
        await repository.record_attempt(session, kiosk.id, source, None, False)
        return TooManyRequests(
            f"too many wrong codes ({lockout.dimension}): try again later",
            retry_after_s=lockout.retry_after_s,
            code="locked_out",
        )
    if frozen:
        return KillSwitchEngaged("openings are frozen at this site: please ask staff")

    refusal = _refusal(kiosk, order, compartment, limits, failures.by_order)
    if refusal is None and order is not None and compartment is not None:
        if await orders.mark_code_used(session, order, utcnow()):
            # One transaction: the code's single use, the audited reason to open, and the
            # timer that gives the code back should the door never open (e.g. the service
            # dies before the unlock leaves).
            opening = doors.authorise(
                session,
                compartment,
                who=openings.purchaser(openings.pickup_method(source, by_token=token is not None)),
                why="pickup",
                order_id=order.id,
            )
            await orders.insert_event(session, order.id, "purchaser", source, "code_accepted")
            await repository.record_attempt(session, kiosk.id, source, order.id, True)
            await timers.schedule_now(
                session,
                TimerKind.CODE_RELEASE,
                utcnow() + timedelta(seconds=doors.authorisation_window_s(ctx)),
                order_id=order.id,
                compartment_id=compartment.id,
            )
            await session.flush()
            return Claim(order, compartment, opening.id)
        refusal = Conflict("this code has been used already", code="code_used")
    await repository.record_attempt(session, kiosk.id, source, order.id if order else None, False)
    return refusal or InvalidCode("this code does not open anything here")


async def complete(
    ctx: ServiceContext, kiosk: Kiosk, decision: Claim | ServiceError
) -> PickupResult:
    """Raise a refusal, or unlock a committed claim; counted in `locker_pickups_total`."""
    try:
        if isinstance(decision, ServiceError):
            raise decision
        result = await _open(ctx, kiosk, decision)
    except ServiceError as exc:
        PICKUPS.labels(exc.code).inc()
        raise
    PICKUPS.labels("ok").inc()
    return result


async def _open(ctx: ServiceContext, kiosk: Kiosk, claimed: Claim) -> PickupResult:
    order, compartment = claimed.order, claimed.compartment
    try:
        reply = await doors.unlock(ctx, kiosk, compartment, claimed.opening_id)
    except CommandTimeout:
        raise  # the lock may have released: keep the code used until the door events tell
    except Exception:
        async with session_scope(ctx.sessionmaker) as session:
            fresh = await session.get(Order, order.id)
            if fresh is not None:
                await orders.mark_code_used(session, fresh, None)
        raise
    return PickupResult(order=order, compartment=compartment, request_id=reply.request_id)


async def find_order(
    session: AsyncSession,
    secret_key: str,
    kiosk: Kiosk,
    *,
    code: str | None,
    token: str | None,
) -> tuple[Order, Compartment | None] | None:
    """The order a QR token or a fallback code at this kiosk names, with its compartment."""
    if token is not None:
        return await repository.by_token_hash(session, codes.token_hash(token))
    if code is None:
        return None
    matches = await repository.by_code_hash_at_kiosk(
        session, codes.code_hash(secret_key, code), kiosk.id
    )
    ready = [match for match in matches if match[0].state == OrderState.READY]
    if len(ready) > 1:
        # Two ready orders at one kiosk with the same 8 digits (odds ~1e-6): open neither.
        log.error("fallback code collision at kiosk %s; purchasers must use the QR", kiosk.code)
        return None
    return ready[0] if ready else (matches[0] if matches else None)


def _refusal(
    kiosk: Kiosk,
    order: Order | None,
    compartment: Compartment | None,
    limits: throttle.Limits,
    order_failures: list[datetime],
) -> ServiceError | None:
    if order is None:
        return InvalidCode("this code does not open anything here")
    lockout = throttle.check(utcnow(), limits, by_source=[], by_kiosk=[], by_order=order_failures)
    if lockout is not None:
        return TooManyRequests(
            "too many tries for this order: try again later",
            retry_after_s=lockout.retry_after_s,
            code="locked_out",
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
