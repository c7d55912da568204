"""Pickup by code: check throttling, kill switch and the code, claim its single use, unlock.

The decision is one transaction (`claim`), which the caller may share: the kiosk handler puts
the scan event's row in it, so a scan costs one commit before its unlock leaves (ADR 0043).
Every try that checks a code is recorded in that transaction, refusals included, which is why
`claim` returns a refusal instead of raising it: the caller commits, then raises. A try that has
to wait (ADR 0039) checks nothing and is not recorded; nor is a second try of a code whose door
has not opened yet (she is told to pull the door). A claimed code is given back if the door did
not open, at once when the kiosk reports the latch back, so a kiosk hiccup or a door not pulled
in time does not cost the purchaser her food.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.alerts.service import raise_alert
from locker_service.compartments import openings
from locker_service.compartments import service as doors
from locker_service.config import Settings
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.errors import (
    Conflict,
    Forbidden,
    ServiceError,
    ServiceUnavailable,
    TooManyRequests,
)
from locker_service.kiosk_link.errors import CommandTimeout
from locker_service.metrics import PICKUPS
from locker_service.models import Compartment, Kiosk, Order, utcnow
from locker_service.orders import codes
from locker_service.orders import repository as orders
from locker_service.orders.lifecycle import CODE_RETURNED, OrderState
from locker_service.pickup import repository, throttle
from locker_service.timers import service as timers
from locker_service.timers.service import TimerKind

log = logging.getLogger(__name__)

HELD_BY_FAULT = "compartment_fault"  # her code refused while her food is held for staff


class InvalidCode(Forbidden):
    code = "invalid_code"


class KillSwitchEngaged(Forbidden):
    code = "kill_switch_engaged"


class DoorUnlocked(Conflict):
    """Her code has already released the latch, and the door has not opened since."""

    code = "door_unlocked"


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
    opening: doors.Authorised


FIRST_DELAY_S = 2.0  # nominal: a second typo costs nothing, a guesser's wait doubles from here
ORDER_FIRST_DELAY_S = 60.0  # nominal: a refused code of one order, tried again and again


def rules_of(s: Settings) -> throttle.Rules:
    """The throttling rules of 8-digit codes in real time (docs/adr/0039)."""

    def real(nominal_s: float) -> timedelta:
        return timedelta(seconds=s.scaled(nominal_s))

    spacing = real(s.pickup_kiosk_spacing_s)
    order_lockout = real(s.pickup_order_lockout_s)
    return throttle.Rules(
        source=throttle.Backoff(
            window=real(s.pickup_source_window_s),
            free=s.pickup_source_free_failures,
            first_delay=min(real(FIRST_DELAY_S), real(s.pickup_source_max_delay_s)),
            max_delay=real(s.pickup_source_max_delay_s),
        ),
        # The day is nominal like every duration here: under LOCKER_TIME_SCALE it shrinks
        # with the spacing, so the bound (ADR 0039) holds per scaled day.
        kiosk=throttle.Backoff(
            window=real(throttle.KIOSK_DAY_S),
            free=s.pickup_kiosk_free_failures_per_day,
            first_delay=spacing,
            max_delay=spacing,
        ),
        order=throttle.Backoff(
            window=order_lockout,
            free=s.pickup_order_free_failures,
            first_delay=min(real(ORDER_FIRST_DELAY_S), order_lockout),
            max_delay=order_lockout,
        ),
    )


async def pickup(
    ctx: ServiceContext,
    kiosk: Kiosk,
    *,
    source: str,
    code: str | None = None,
    token: str | None = None,
) -> PickupResult:
    """Open the compartment of the order a code names, if everything allows it. Decided on the
    connections of work a person at the kiosk waits on (`ctx.attended_sessions`, ADR 0096)."""
    async with session_scope(ctx.attended_sessions) as session:
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
    rules = rules_of(ctx.settings)
    now = utcnow()
    frozen = await repository.site_frozen(session, kiosk.site_id)
    found = await find_order(session, ctx.settings.secret_key, kiosk, code=code, token=token)
    order, compartment = found if found is not None else (None, None)
    guessable = token is None  # a QR token is checked, never throttled by source or kiosk
    recent = await repository.recent_failures(
        session,
        now,
        rules,
        kiosk_id=kiosk.id,
        source=source if guessable else None,
        order_id=order.id if order else None,
    )
    wait = throttle.check(now, rules, source=recent.source, kiosk=recent.kiosk)
    if wait is not None:
        # Refused before the code is looked at: no guess, so not recorded as one.
        return TooManyRequests(
            f"too many wrong codes ({wait.dimension}): "
            f"try again in {math.ceil(wait.retry_after_s)} s",
            retry_after_s=wait.retry_after_s,
            code="locked_out",
        )
    if frozen:
        return KillSwitchEngaged("openings are frozen at this site: please ask staff")

    held_by = None
    if order is not None and compartment is not None:
        await _give_back_if_latch_held(session, ctx, kiosk, order, compartment, now)
        held_by = await orders.held_by_fault(session, order, compartment.fault)
    refusal = _refusal(now, kiosk, order, compartment, rules, recent.order, held_by)
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
            return Claim(order, compartment, doors.Authorised.of(opening))
        # Moved meanwhile: used by another try, or expired (its hold ran out): say which.
        await session.refresh(order)
        refusal = _refusal(
            now, kiosk, order, compartment, rules, recent.order, held_by
        ) or Conflict("this code has been used already", code="code_used")
    if order is not None and isinstance(refusal, Conflict) and refusal.code == HELD_BY_FAULT:
        # Her own code, held for staff: not a failed try (nothing to throttle). She is told to
        # wait for staff, who hand the food over or discard it.
        await orders.insert_event(session, order.id, "purchaser", source, "code_held_by_fault")
        return refusal
    if order is not None and _awaiting_her_door(order, refusal):
        # Her code opened the latch and the door has not opened since: she is not guessing.
        # Told so, and not counted: the code comes back when the latch is seen again.
        await orders.insert_event(session, order.id, "purchaser", source, "code_pending")
        return DoorUnlocked(
            "your compartment was unlocked a moment ago: pull its door, or wait until it has "
            "locked again and try once more"
        )
    await repository.record_attempt(session, kiosk.id, source, order.id if order else None, False)
    if guessable and order is None:
        await _guessed(session, ctx, kiosk, rules, recent)
    return refusal or InvalidCode("this code does not open anything here")


async def offline_code_refused(
    session: AsyncSession, ctx: ServiceContext, kiosk: Kiosk, at: datetime
) -> None:
    """A wrong code typed at the kiosk while it was cut off, refused there (its keypad throttles
    as the service does, ADR 0077), reported once back: counted as a wrong typed code at the
    kiosk, when the kiosk says it was typed (within the kiosk's day, never ahead of now), so
    guessing offline and online spends one daily budget and raises the same alert. The keypad
    is everyone's at the kiosk, so only the kiosk's budget raises it, not one source's count."""
    rules = rules_of(ctx.settings)
    now = utcnow()
    source = repository.KEYPAD_OFFLINE_SOURCE + kiosk.code
    recent = await repository.recent_failures(session, now, rules, kiosk_id=kiosk.id, source=source)
    typed = max(min(at, now), now - rules.kiosk.window)
    await repository.record_attempt(session, kiosk.id, source, None, False, at=typed)
    await _guessed(session, ctx, kiosk, rules, recent, per_source=False)


async def _guessed(
    session: AsyncSession,
    ctx: ServiceContext,
    kiosk: Kiosk,
    rules: throttle.Rules,
    recent: repository.RecentFailures,
    *,
    per_source: bool = True,
) -> None:
    """One more wrong 8-digit code at the kiosk, after the `recent` ones: the alert if it spent
    the kiosk's daily budget or (`per_source`) made its source wait its longest."""
    budget_spent = throttle.spends_budget(rules.kiosk, recent.kiosk.count)
    capped = per_source and throttle.reaches_cap(rules.source, recent.source.count)
    if budget_spent or capped:
        failures = recent.kiosk.count + 1 if budget_spent else recent.source.count + 1
        await _kiosk_under_attack(session, ctx, kiosk, rules, failures, budget_spent=budget_spent)


async def _give_back_if_latch_held(
    session: AsyncSession,
    ctx: ServiceContext,
    kiosk: Kiosk,
    order: Order,
    compartment: Compartment,
    now: datetime,
) -> None:
    """Her code was accepted, the unlock's time is over, and the board has reported since then
    the latch caught, the door shut and the food inside (the unlock never got through, e.g. it
    timed out; a reconnect makes the bridge report every compartment again): she is not told
    to pull a door that is locked; the code is hers again and this try opens. A latch that did
    release after all only means her own door, with her food, is unlocked twice."""
    if order.state != OrderState.READY or order.code_used_at is None:
        return
    if compartment.lock_released or compartment.door_open or not compartment.occupied:
        return  # her door is unlocked or open, or the food is gone: not given back
    seen = compartment.snapshot_at
    if seen is None or seen < order.code_used_at - doors.CLOCK_SKEW:
        return  # nothing heard from the board since her code was accepted
    # The command timeout is real seconds whatever the time scale, as `send` waits it.
    unlock_over = order.code_used_at + timedelta(seconds=ctx.settings.command_timeout_s)
    if now < unlock_over:
        return  # the unlock may still be on its way
    await give_back_unopened(session, kiosk, compartment, seen)


def _held() -> Conflict:
    """The refusal of her code while her food is held for staff (ADR 0128)."""
    return Conflict(
        "a fault was reported in this compartment: the food cannot be collected now; "
        "staff will contact you",
        code=HELD_BY_FAULT,
    )


def _awaiting_her_door(order: Order, refusal: ServiceError | None) -> bool:
    """The code was accepted (used) but the order is still ready: its door has not opened yet
    (an opening and shutting without taking the food gives the code back, as does the latch
    springing back)."""
    return (
        isinstance(refusal, Conflict)
        and refusal.code == "code_used"
        and order.state == OrderState.READY
        and order.code_used_at is not None
    )


async def _kiosk_under_attack(
    session: AsyncSession,
    ctx: ServiceContext,
    kiosk: Kiosk,
    rules: throttle.Rules,
    failures: int,
    *,
    budget_spent: bool,
) -> None:
    """Guessing at a kiosk: a source made to wait its longest, or the kiosk's daily budget of
    wrong codes spent (`failures`: the source's or the kiosk's count; the words say which).
    One alert per episode: crossings less than the kiosk's window (a day) after the last alert
    of that kiosk add nothing."""
    key = f"kiosk_under_attack:{kiosk.id}"
    if await repository.alerted_since(session, key, utcnow() - rules.kiosk.window):
        return
    await raise_alert(
        session,
        kind="kiosk_under_attack",
        severity="warning",
        message=(
            f"kiosk {kiosk.code} ({kiosk.name}): {failures} wrong pickup codes within a day; "
            f"wrong typed codes there now wait up to {ctx.settings.pickup_kiosk_spacing_s:.0f} s "
            "each (QR codes are not affected)"
            if budget_spent
            else f"kiosk {kiosk.code} ({kiosk.name}): one source typed {failures} wrong pickup "
            f"codes within {rules.source.window.total_seconds() / 60:.0f} min and now waits "
            f"{rules.source.max_delay.total_seconds():.0f} s between tries (nobody else is "
            "slowed; QR codes are not affected)"
        ),
        dedupe_key=key,
        site_id=kiosk.site_id,
        kiosk_id=kiosk.id,
        hub=ctx.hub,
    )


async def return_unopened_code(
    session: AsyncSession, order: Order, actor: str, who: str | None, detail: dict[str, Any]
) -> bool:
    """Her accepted code is hers to use again if no door of hers opened since it was accepted
    (the unlock failed, the latch caught again, the door never moved); True if given back."""
    if order.state != OrderState.READY or order.code_used_at is None:
        return False
    if await repository.opened_since(session, order.id, order.code_used_at):
        return False
    await orders.mark_code_used(session, order, None)
    orders.add_event(session, order.id, actor, who, CODE_RETURNED, detail)
    return True


async def give_back_unopened(
    session: AsyncSession, kiosk: Kiosk, compartment: Compartment, latched_at: datetime
) -> bool:
    """The kiosk reports the latch back with the door shut after a pickup's unlock: if the door
    never opened since her code was accepted, the code is hers to use again at once."""
    order = await orders.active_in_compartment(session, compartment.id)
    if order is None or order.state != OrderState.READY or order.code_used_at is None:
        return False
    if latched_at < order.code_used_at - doors.CLOCK_SKEW:
        return False  # a report from before the code's use (kiosk clock behind at most the skew)
    return await _return_before_its_timer(session, order, kiosk, {"why": "latch re-engaged"})


async def _return_before_its_timer(
    session: AsyncSession, order: Order, kiosk: Kiosk, detail: dict[str, Any]
) -> bool:
    """`return_unopened_code` on the kiosk's word, ahead of the code-release timer that would
    have given it back, which is cancelled."""
    if not await return_unopened_code(session, order, "kiosk", kiosk.code, detail):
        return False
    await timers.cancel(session, [TimerKind.CODE_RELEASE], order_id=order.id)
    return True


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
        reply = await doors.unlock(ctx, kiosk, compartment, claimed.opening)
    except CommandTimeout:
        raise  # the lock may have released: keep the code used until the door events tell
    except ServiceUnavailable as exc:
        # Not released (refused, or nothing answered a command that has expired): hers again
        # now, audited as any code given back, and its backstop timer no longer needed. Any
        # other failure keeps it used; the code-release timer gives it back if her door never
        # opens. She is still at the kiosk: attended work (ADR 0096).
        async with session_scope(ctx.attended_sessions) as session:
            fresh = await session.get(Order, order.id)
            if fresh is not None:
                await _return_before_its_timer(
                    session, fresh, kiosk, {"why": "unlock failed", "error": exc.code}
                )
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
    now: datetime,
    kiosk: Kiosk,
    order: Order | None,
    compartment: Compartment | None,
    rules: throttle.Rules,
    order_failures: throttle.Recent,
    held_by: str | None,
) -> ServiceError | None:
    if order is None:
        return InvalidCode("this code does not open anything here")
    wait = throttle.check(now, rules, order=order_failures)
    if wait is not None:
        return TooManyRequests(
            "too many tries for this order: try again later",
            retry_after_s=wait.retry_after_s,
            code="locked_out",
        )
    if compartment is None or compartment.kiosk_id != kiosk.id:
        return InvalidCode("this code does not open anything here")
    if order.state == OrderState.PICKED_UP or (
        order.state == OrderState.READY and order.code_used_at is not None
    ):
        return Conflict("this code has been used already", code="code_used")
    if order.state == OrderState.EXPIRED and order.food_unsafe_at is not None:
        return Conflict(
            f"for food safety this order can no longer be collected ({order.failure_reason}): "
            "it will be discarded; please contact the restaurant",
            code="food_unsafe",
        )
    if order.state in (OrderState.EXPIRED, OrderState.CANCELLED, OrderState.FAILED):
        return Conflict(f"this order is {order.state}: please ask staff", code="code_expired")
    if order.state != OrderState.READY:
        return Conflict("the order is not ready yet", code="not_ready")
    if held_by is not None:
        return _held()  # as her message said: staff look at the food first
    if order.hold_until is not None and now >= order.hold_until:
        # Its time to collect is over (the timer that expires it may not have run yet): as
        # the kiosk decides offline, and as her messages said.
        return Conflict(
            "this order can no longer be collected: please ask staff", code="code_expired"
        )
    return None
