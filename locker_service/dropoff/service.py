"""Drop-off: a courier at a kiosk names an order; a free compartment that fits is reserved
and opened.

Allocation is a compare-and-set on the compartment (available -> reserved) inside the same
transaction as the order's created -> assigned step: two couriers can never get the same
compartment, and an order can never get two. The transaction commits before the unlock is sent,
so nothing is held locked while the kiosk answers.

A compartment whose occupancy sensor says something is inside is never given to a courier,
whatever its state says (ADR 0037); one the service thinks free raises an alert for staff.

An unlock with no final answer may have released the lock, so its drop-off keeps the compartment
and the courier is told to look at it; the same courier naming the same order again at that
kiosk has his compartment opened again rather than a new one given (ADR 0088). The door timer
frees a compartment whose door never opened.

The courier stands at the kiosk meanwhile: every transaction here runs on the connections of
attended work (`ctx.attended_sessions`), never behind a takeover's reports (ADR 0096).
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.alerts.service import (
    open_alert,
    raise_alert,
    raise_compartment_alert,
    resolve_alerts,
)
from locker_service.compartments import openings
from locker_service.compartments import repository as compartments
from locker_service.compartments import service as doors
from locker_service.compartments.lifecycle import CompartmentState, CompartmentTrigger
from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.errors import (
    Conflict,
    Forbidden,
    NoAnswerInTime,
    NotFound,
    ServiceError,
    TooManyRequests,
)
from locker_service.events import publish_after_commit
from locker_service.kiosk_link.errors import CommandTimeout
from locker_service.lifecycles import save_step
from locker_service.metrics import DROPOFFS
from locker_service.models import Compartment, Courier, Kiosk, Order, utcnow
from locker_service.orders import repository as orders
from locker_service.orders import service as orders_service
from locker_service.orders.lifecycle import OrderState, OrderTrigger
from locker_service.orders.schemas import NOTICE_PREFIX
from locker_service.orders.schemas import live_view as order_view
from locker_service.pickup import repository as pickup_repository
from locker_service.pickup import service as pickup_service
from locker_service.pickup import throttle
from locker_service.pickup.service import KillSwitchEngaged
from locker_service.security import hash_pin, same
from locker_service.sites import service as sites
from locker_service.timers import service as timers
from locker_service.timers.service import TimerKind

log = logging.getLogger(__name__)


# Why a drop-off's door opening was authorised; reconciliation finds the drop-off by it.
DROPOFF_OPENING_WHY = "drop-off"
AWAITING_DROPOFF = (OrderState.CREATED, OrderState.ASSIGNED)
STALE_REFERENCE = timedelta(days=1)
PREHEAT_TIMEOUT_S = 3.0  # one round trip to the board; the courier's answer waits for it


class NoFreeCompartment(Conflict):
    code = "no_free_compartment"

    def __init__(self, message: str, order: Order) -> None:
        super().__init__(message)
        self.order_id, self.ref, self.size, self.hot = (
            order.id,
            order.external_ref,
            order.size,
            order.temperature_class == "hot",
        )


class FoodTooOld(Conflict):
    """The food in the courier's hands has too little of its safe time left (from when it was
    cooked, under the site's food-safety profile) for the disinfection cycle and the
    purchaser's time to collect it: it does not go into a locker."""

    code = "food_too_old"

    def __init__(self, order: Order, left: timedelta) -> None:
        minutes = max(left.total_seconds(), 0) / 60
        super().__init__(
            f"order {order.external_ref} has {minutes:.0f} min of its safe time left, too "
            "little for the locker: take the food back to the merchant"
        )
        self.order_id = order.id
        self.why = (
            f"only {minutes:.0f} min of its safe time was left when the courier brought it, "
            "too little for the cycle and the time to collect it"
        )


class DropoffsFrozen(KillSwitchEngaged):
    code = "dropoffs_frozen"


class DropoffInProgress(Conflict):
    """The order's drop-off holds a compartment already (another courier's, or at another
    kiosk): `details` say where, so the courier can go there or wait for it to be freed."""

    code = "dropoff_in_progress"

    def __init__(self, ref: str, kiosk_name: str, number: int) -> None:
        super().__init__(
            f"order {ref} is being dropped off at {kiosk_name}, compartment {number}: if the "
            "food is in it, shut its door; if not, try again once it is freed (a few minutes)"
        )
        self.details = {"kiosk": kiosk_name, "compartment": number}


class DropoffUnconfirmed(NoAnswerInTime):
    """The kiosk took the unlock but gave no final answer: the door may be open. The
    compartment stays the courier's; `details["compartment"]` tells him which to look at."""

    code = "dropoff_unconfirmed"

    def __init__(self, number: int) -> None:
        super().__init__(
            f"the kiosk did not confirm that compartment {number} opened: if it is open, put "
            "the food in and shut the door; if not, try again"
        )
        self.details = {"compartment": number}


@dataclass(frozen=True)
class DropoffResult:
    order: Order
    compartment: Compartment
    request_id: str
    opened_again: bool = False  # the compartment his drop-off held, opened once more


def courier_rules(s: Settings) -> throttle.Rules:
    """Courier logins' own throttling (docs/adr/0039): per courier id a lockout after a few wrong
    PINs; per kiosk a growing delay for logins of every id (made-up ids among them). Kept apart
    from pickups', so a courier's failures never stand in a purchaser's way."""

    def real(nominal_s: float) -> timedelta:
        return timedelta(seconds=s.scaled(nominal_s))

    lockout = real(s.courier_lockout_s)
    per_courier = throttle.Backoff(lockout, s.courier_free_failures, lockout, lockout)
    max_delay = real(s.pickup_source_max_delay_s)
    per_kiosk = throttle.Backoff(
        window=real(s.pickup_source_window_s),
        free=s.courier_kiosk_free_failures,
        first_delay=min(real(pickup_service.FIRST_DELAY_S), max_delay),
        max_delay=max_delay,
    )
    return throttle.Rules(source=per_courier, kiosk=per_kiosk, order=per_courier)


async def _check_courier(ctx: ServiceContext, kiosk: Kiosk, code: str, pin: str) -> Courier:
    """The courier, if the PIN is right; wrong PINs slow down further logins (their own rules)."""
    settings = ctx.settings
    source = f"{pickup_repository.COURIER_SOURCE}{code}"
    now = utcnow()
    rules = courier_rules(settings)
    async with session_scope(ctx.attended_sessions) as session:
        courier = await session.scalar(select(Courier).where(Courier.code == code))
        lifted = courier.lockout_lifted_at if courier is not None else None
        recent = await pickup_repository.courier_failures(
            session, now, rules, kiosk_id=kiosk.id, source=source, lifted_at=lifted
        )
        wait = throttle.check(now, rules, source=recent.courier, kiosk=recent.kiosk)
        if wait is not None:
            # Refused before the PIN is looked at: no guess, so not recorded as one.
            raise TooManyRequests(
                "too many wrong courier logins: try again later",
                retry_after_s=wait.retry_after_s,
                code="locked_out",
            )
        ok = courier is not None and same(
            courier.pin_hash, hash_pin(settings.secret_key, code, pin)
        )
        await pickup_repository.record_attempt(session, kiosk.id, source, None, ok)
    # Told after the attempt is committed, in transactions of their own: a report that fails
    # never un-counts a wrong PIN, nor turns a login into a 500.
    failed = recent.courier.plus(now)
    if courier is not None and not ok and rules.source.wait(now, failed):
        await _tell(_report_lockout(ctx, kiosk, courier, failed.count), courier)
    elif courier is not None and ok:
        await _tell(_lockout_over(ctx, courier), courier)  # he is in: nothing to lift
    if not ok or courier is None:
        raise Forbidden("unknown courier or wrong PIN", code="bad_courier_credentials")
    return courier


async def _tell(report: Coroutine[Any, Any, None], courier: Courier) -> None:
    try:
        await report
    except Exception:
        log.exception("courier %s's lockout alert was not updated", courier.code)


LOCKOUT_ALERT = "courier_locked_out"


def lockout_key(courier_id: int) -> str:
    """The dedupe key of a courier's lockout alert: one open alert per courier."""
    return f"{LOCKOUT_ALERT}:{courier_id}"


def courier_of_lockout(dedupe_key: str) -> int | None:
    """The courier a lockout alert's key names, if it is one."""
    kind, _, courier_id = dedupe_key.partition(":")
    return int(courier_id) if kind == LOCKOUT_ALERT and courier_id.isdigit() else None


async def _report_lockout(
    ctx: ServiceContext, kiosk: Kiosk, courier: Courier, failures: int
) -> None:
    """A known courier's logins now wait (his screen says to wait): perhaps him, with the
    food in his hands and a PIN he mistyped, perhaps someone trying his PIN. The operator of
    the kiosk's site is told, once per courier until it is lifted or he logs in, and decides.
    One left open at another kiosk (he never came back there) is resolved first: the alert
    names where he is now, and is shown to that site."""
    minutes = max(1, round(ctx.settings.courier_lockout_s / 60))  # story time, as every alert
    key = lockout_key(courier.id)
    async with session_scope(ctx.attended_sessions) as session:
        if (open_ := await open_alert(session, key)) is not None and open_.kiosk_id != kiosk.id:
            await resolve_alerts(session, key, ctx.hub)
        await raise_alert(
            session,
            kind=LOCKOUT_ALERT,
            severity="warning",
            message=f"{kiosk.name}: courier {courier.code} ({courier.name}) is locked out after "
            f"{failures} wrong PINs; his logins wait up to {minutes} min. If it is him, lift the "
            "lockout from this alert (with a reason); if not, someone is trying his PIN",
            dedupe_key=key,
            site_id=kiosk.site_id,
            kiosk_id=kiosk.id,
            hub=ctx.hub,
        )


async def _lockout_over(ctx: ServiceContext, courier: Courier) -> None:
    async with session_scope(ctx.attended_sessions) as session:
        await resolve_alerts(session, lockout_key(courier.id), ctx.hub)


async def lift_lockout(session: AsyncSession, courier_id: int) -> Courier:
    """An operator lifts a courier's lockout: his wrong PINs until now no longer count (the
    kiosk's own limit on logins of every id stays, it is what stops a guesser of ids)."""
    courier = await session.get(Courier, courier_id)
    if courier is None:
        raise NotFound(f"no courier {courier_id}")
    courier.lockout_lifted_at = utcnow()
    return courier


async def dropoff(
    ctx: ServiceContext, kiosk: Kiosk, courier_code: str, pin: str, order_ref: str
) -> DropoffResult:
    try:
        result = await _dropoff(ctx, kiosk, courier_code, pin, order_ref)
    except ServiceError as exc:
        DROPOFFS.labels(exc.code).inc()
        raise
    DROPOFFS.labels("opened_again" if result.opened_again else "ok").inc()
    return result


async def _dropoff(
    ctx: ServiceContext, kiosk: Kiosk, courier_code: str, pin: str, order_ref: str
) -> DropoffResult:
    async with ctx.attended_sessions() as session:
        frozen = await pickup_repository.site_frozen(session, kiosk.site_id)
    if frozen:
        # The kill switch stops every opening at the site, a courier's too: nothing is checked
        # or reserved, so the courier keeps the food and asks staff (or the dispatcher).
        raise DropoffsFrozen("drop-offs are frozen at this site: please ask staff")
    courier = await _check_courier(ctx, kiosk, courier_code, pin)
    not_empty: list[int] = []  # ids: the rows may be gone with a rolled-back transaction
    try:
        return await _allocate(ctx, kiosk, courier, order_ref, not_empty)
    except NoFreeCompartment as full:
        try:
            await _report_full(ctx, kiosk, courier, full)
        except Exception:  # the courier is still told why, whatever became of the report
            log.exception("a courier turned away at kiosk %s was not reported", kiosk.code)
        raise
    finally:
        if not_empty:
            await _report_not_empty(ctx, kiosk, not_empty)


async def _report_full(
    ctx: ServiceContext, kiosk: Kiosk, courier: Courier, full: NoFreeCompartment
) -> None:
    """A courier turned away with the food (his screen says to call the operator): the
    operator is alerted, once per kiosk until resolved, and the merchant reads it on the order,
    once per kiosk (a courier trying again and again writes it once); in a transaction of its
    own, the drop-off's was rolled back."""
    what = f"{'hot ' if full.hot else ''}order {full.ref} (size {full.size})"
    async with session_scope(ctx.attended_sessions) as session:
        await raise_alert(
            session,
            kind="no_free_compartment",
            severity="warning",
            message=f"{kiosk.name}: courier {courier.code} found no free compartment for {what}",
            dedupe_key=f"no_free_compartment:{kiosk.id}",
            site_id=kiosk.site_id,
            kiosk_id=kiosk.id,
            hub=ctx.hub,
        )
        told = await orders.notices(session, full.order_id)
        if any(
            n.action == NOTICE_PREFIX + NoFreeCompartment.code
            and n.detail.get("kiosk") == kiosk.code
            for n in told
        ):
            return
        orders.add_notice(
            session,
            full.order_id,
            "kiosk",
            kiosk.code,
            "no_free_compartment",
            f"a courier could not drop off order {full.ref} at {kiosk.name}: no free "
            "compartment fitted it; staff were alerted, and the order still waits for a courier",
            {"kiosk": kiosk.code},
        )


async def _report_not_empty(ctx: ServiceContext, kiosk: Kiosk, found: list[int]) -> None:
    """Alert on free compartments with something inside (in a transaction of its own, so a
    drop-off refused for want of a compartment still tells staff why)."""
    async with session_scope(ctx.attended_sessions) as session:
        for compartment_id in found:
            c = await session.get(Compartment, compartment_id)
            if c is None:
                continue
            await raise_compartment_alert(
                session,
                ctx.hub,
                kiosk,
                c,
                kind="item_in_free_compartment",
                severity="warning",
                what="something is inside a free compartment: not given to a courier",
                dedupe_key=f"item_in_free_compartment:{c.id}",
            )


async def _allocate(
    ctx: ServiceContext,
    kiosk: Kiosk,
    courier: Courier,
    order_ref: str,
    not_empty: list[int],
) -> DropoffResult:
    settings = ctx.settings
    async with session_scope(ctx.attended_sessions) as session:
        candidates = await orders.dropoff_candidates(
            session, kiosk.site_id, order_ref, courier.merchant_id
        )
        if not candidates:
            raise NotFound(f"no order {order_ref!r} for this site", code="order_not_found")
        if len(candidates) > 1:
            # Merchants number their orders alike. The food in the courier's hands is an order
            # waiting for a courier, or one that ended without ever reaching a locker within
            # the last day (expired or cancelled while he was on his way): then he must say
            # which. Food already in a locker, or through one, is not his.
            recent = utcnow() - STALE_REFERENCE
            fresh = [
                o
                for o in candidates
                if o.state in AWAITING_DROPOFF
                or (o.deposited_at is None and (o.closed_at or recent) >= recent)
            ]
            candidates = fresh or candidates
        if len(candidates) > 1:
            raise Conflict(
                f"{len(candidates)} orders match {order_ref!r}: use the order id",
                code="ambiguous_order",
            )
        order = candidates[0]
        hot = order.temperature_class == "hot"
        if order.state == OrderState.CREATED and order.cooked_at is not None:
            await _check_food_time(session, settings, kiosk, order)
        chosen = await _held_by(session, order, courier, kiosk)
        opened_again = chosen is not None
        if chosen is not None:
            if chosen.occupied:  # the food is in: the door's shutting deposits it
                raise DropoffInProgress(order.external_ref, kiosk.name, chosen.number)
            await _open_again(session, order, chosen, courier, kiosk)
        else:
            chosen = await _reserve(session, kiosk, courier, order, not_empty)
        timers.schedule(
            session,
            TimerKind.DROPOFF_TIMEOUT,
            utcnow() + timedelta(seconds=settings.scaled(settings.dropoff_door_timeout_s)),
            order_id=order.id,
            compartment_id=chosen.id,
        )
        opening = doors.authorise(
            session,
            chosen,
            who=openings.courier(courier.code),
            why=DROPOFF_OPENING_WHY,
            order_id=order.id,
        )
        # Read now: once the door is unlocked, nothing the database does may fail the drop-off.
        preheat_c = (
            (await sites.food_profile(session, settings, kiosk.site_id)).setpoint_c
            if hot and chosen.heated
            else None
        )
        await session.flush()
        authorised = doors.Authorised.of(opening)
        publish_after_commit(session, ctx.hub, "order", order_view(order), order.site_id)

    try:
        reply = await doors.unlock(ctx, kiosk, chosen, authorised)
    except CommandTimeout as exc:
        # The lock may have released: the compartment stays his and the authorised opening
        # explains its door. His retry opens it again; the door timer frees it if it never opens.
        raise DropoffUnconfirmed(chosen.number) from exc
    except Exception:
        # A first unlock that surely did not release: nothing happened, the courier keeps the
        # food. Opened again, the first unlock's outcome is still unknown (the food may be in):
        # the compartment stays his until its door timer frees it.
        if not opened_again:
            await release(ctx, order, chosen, reason="the compartment did not open")
        raise
    if preheat_c is not None:
        await _preheat(ctx, kiosk, chosen, preheat_c)
    return DropoffResult(order, chosen, reply.request_id, opened_again=opened_again)


async def _check_food_time(
    session: AsyncSession, settings: Settings, kiosk: Kiosk, order: Order
) -> None:
    """The rule the order was accepted by (ADR 0070), again now the food is here: time for
    the cycle and her minimum window before its safe time runs out, or it stays out."""
    assert order.cooked_at is not None
    rules = await sites.food_profile(session, settings, kiosk.site_id)
    left, needed = orders_service.food_time(settings, rules, order.cooked_at, utcnow())
    if left < needed:
        raise FoodTooOld(order, left)


async def _reserve(
    session: AsyncSession, kiosk: Kiosk, courier: Courier, order: Order, not_empty: list[int]
) -> Compartment:
    """The fitting free compartment this drop-off takes (compare-and-set), and the order's
    created -> assigned step with it; for an order whose drop-off holds a compartment already
    (another courier's, or at another kiosk), where that is."""
    if order.state == OrderState.ASSIGNED and order.compartment_id is not None:
        held = await session.get(Compartment, order.compartment_id)
        where = await session.get(Kiosk, held.kiosk_id) if held is not None else None
        if held is not None and where is not None:
            raise DropoffInProgress(order.external_ref, where.name, held.number)
    if order.state != OrderState.CREATED:
        raise Conflict(
            f"order {order.external_ref} is {order.state}, not waiting for a drop-off",
            code="invalid_transition",
        )
    hot = order.temperature_class == "hot"
    free: list[Compartment] = []
    for c in await compartments.free_in_kiosk(session, kiosk.id):
        if c.occupied:  # the board's sensor outranks the state: food may be inside
            not_empty.append(c.id)
        elif compartments.fits(c.size, c.heated, order.size, hot):
            free.append(c)
    free.sort(key=lambda c: compartments.preference(c, order.size, hot))
    chosen: Compartment | None = None
    for candidate in free:
        if await compartments.try_reserve(session, candidate.id):
            chosen = candidate
            break
    if chosen is None:
        raise NoFreeCompartment(
            f"no free {'heated ' if hot else ''}compartment of size {order.size} or larger", order
        )
    chosen.state = CompartmentState.RESERVED.value  # mirror the CAS in the loaded object
    await orders.transition(
        session,
        order,
        OrderTrigger.ASSIGN,
        actor_type="courier",
        actor_id=courier.code,
        detail={"compartment": chosen.number, "kiosk": kiosk.code},
        compartment_id=chosen.id,
        courier_id=courier.id,
        assigned_at=utcnow(),
    )
    return chosen


async def _held_by(
    session: AsyncSession, order: Order, courier: Courier, kiosk: Kiosk
) -> Compartment | None:
    """The compartment at this kiosk that this courier's drop-off of `order` still holds: its
    unlock unconfirmed, or its door locked again before he pulled it. None for anyone else's."""
    if (
        order.state != OrderState.ASSIGNED
        or order.courier_id != courier.id
        or order.compartment_id is None
    ):
        return None
    held = await session.get(Compartment, order.compartment_id)
    if held is None or held.kiosk_id != kiosk.id or held.state != CompartmentState.RESERVED:
        return None
    return held


async def _open_again(
    session: AsyncSession, order: Order, held: Compartment, courier: Courier, kiosk: Kiosk
) -> None:
    """The courier asks again for the compartment his drop-off holds: the step goes on the
    order's record and its door timer starts over. A compare-and-set on the order's version,
    so any step taken meanwhile (a door timer that freed it, another retry) wins and the
    courier is told to try again."""
    assigned = OrderState.ASSIGNED.value
    if not await save_step(
        session, order, assigned, assigned, {"updated_at": utcnow()}, version=order.version
    ):
        raise orders.OrderChanged(f"order {order.external_ref} changed meanwhile: try again")
    orders.add_event(
        session,
        order.id,
        "courier",
        courier.code,
        "opened_again",
        {"compartment": held.number, "kiosk": kiosk.code},
    )
    await timers.cancel(session, [TimerKind.DROPOFF_TIMEOUT], order_id=order.id)


async def _preheat(
    ctx: ServiceContext, kiosk: Kiosk, compartment: Compartment, setpoint_c: float
) -> None:
    """Start heating while the courier puts the food in, so hot food never meets a cold box;
    `setpoint_c` is the site's food-safety profile's, read before the unlock.

    Best effort: the holding cycle sets the same setpoint again once the door shuts on the food,
    so a lost preheat costs only warm-up time, never the drop-off.
    """
    try:
        reply = await doors.send(
            ctx,
            kiosk.code,
            "set_heater",
            compartment.number,
            {"setpoint_c": setpoint_c},
            timeout_s=PREHEAT_TIMEOUT_S,
        )
    except ServiceError as exc:
        log.warning("preheat of %s/%s: %s", kiosk.code, compartment.number, exc)
        return
    if reply.status != "succeeded":
        log.warning("preheat of %s/%s: %s", kiosk.code, compartment.number, reply.status)


async def release(ctx: ServiceContext, order: Order, compartment: Compartment, reason: str) -> None:
    """Undo a drop-off that never put food in: order back to created, compartment free."""
    async with session_scope(ctx.attended_sessions) as session:
        # Locked, the compartment then the order, as the door timer and a kiosk's report take
        # them: written the other way round, they could deadlock with it.
        fresh_compartment = await compartments.locked(session, compartment.id)
        fresh_order = await session.scalar(
            select(Order).where(Order.id == order.id).with_for_update(key_share=True)
        )
        if fresh_order is None or fresh_compartment is None:
            return
        if fresh_order.state == OrderState.ASSIGNED:
            await orders.transition(
                session,
                fresh_order,
                OrderTrigger.RELEASE,
                actor_type="system",
                detail={"reason": reason},
                compartment_id=None,
            )
            publish_after_commit(
                session, ctx.hub, "order", order_view(fresh_order), fresh_order.site_id
            )
        if fresh_compartment.state == CompartmentState.RESERVED:
            await compartments.transition(session, fresh_compartment, CompartmentTrigger.RELEASE)
        await timers.cancel(session, [TimerKind.DROPOFF_TIMEOUT], order_id=order.id)
