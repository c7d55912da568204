"""What each kind of timer does when it falls due.

A handler returns None when done, or a time to try again (the kiosk is unreachable, a door is
still open). Commands to kiosks live here rather than in the event handler: the decision is
already committed when its timer runs, so a crash is recovered by running the timer again, and
commands are safe to repeat: a heater setpoint twice sets it once, and a cycle start whose
outcome is unknown goes again under the request id it was first sent with, which a kiosk that
ran it answers from its record (ADR 0082).
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from firmware_bridge import contract
from locker_service.alerts import oncall
from locker_service.alerts.service import raise_compartment_alert
from locker_service.compartments import repository as compartments
from locker_service.compartments import service as doors
from locker_service.compartments.lifecycle import CompartmentState, CompartmentTrigger
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.foodsafety import watch
from locker_service.foodsafety.profiles import Profile
from locker_service.foodsafety.watch import Unsafe
from locker_service.kiosk_link.errors import KioskLinkError
from locker_service.kiosks import repository as kiosk_reports
from locker_service.kiosks.story import Story
from locker_service.models import (
    Compartment,
    DisinfectionCycle,
    Kiosk,
    KioskEvent,
    NotificationOutbox,
    Order,
    OrderEvent,
    Timer,
    utcnow,
)
from locker_service.orders import outbox, webhooks
from locker_service.orders import repository as orders
from locker_service.orders.lifecycle import HOLD_GIVEN_BACK, HOLDING, OrderState
from locker_service.orders.outbox import RESUMED
from locker_service.pickup import repository as pickup_repository
from locker_service.pickup import service as pickups
from locker_service.sites import service as sites
from locker_service.telemetry import repository as telemetry
from locker_service.timers import service as timers
from locker_service.timers.service import TimerKind

log = logging.getLogger(__name__)

RETRY_NOMINAL_S = 30.0  # a kiosk that did not answer is asked again after this (nominal)
RETRY_MIN_REAL_S = 1.0  # but never faster than this, however high the time scale
# A hold's end waiting on her code-release timer looks again this long after it is due.
RELEASE_FIRST = timedelta(seconds=1)
# While a kill switch refuses her code at her hold's end, it is looked at again this often
# (nominal seconds): the release moves it to her new end, so this only bounds a missed one.
FROZEN_HOLD_LOOK_S = 300.0
# A cycle start sent by an earlier run of its timer that the kiosk has not confirmed: its report
# may still be on its way (a restarted service handles the kiosk's queued reports while its
# timers already run), so it is sent again only once a snapshot since says the kiosk is idle,
# or after this long (real seconds, at least twice the command's own timeout); and then as the
# same request, since "idle" may mean it ran and ended (ADR 0082).
UNCONFIRMED_START_WAIT_S = 10.0

Handler = Callable[[ServiceContext, Timer], Awaitable[datetime | None]]
# Timers of one kind claimed together and run as one: by timer id, when to run each again, or
# the error its own step raised (retried after its lease, as a handler that raised).
BatchOutcome = datetime | None | Exception
BatchHandler = Callable[[ServiceContext, Sequence[Timer]], Awaitable[dict[int, BatchOutcome]]]


def _retry(ctx: ServiceContext, nominal_s: float = RETRY_NOMINAL_S) -> datetime:
    return utcnow() + timedelta(seconds=max(ctx.settings.scaled(nominal_s), RETRY_MIN_REAL_S))


async def _load(
    ctx: ServiceContext, timer: Timer
) -> tuple[Order | None, Compartment | None, Kiosk | None]:
    async with ctx.sessionmaker() as session:
        order = await session.get(Order, timer.order_id) if timer.order_id else None
        compartment_id = timer.compartment_id or (order.compartment_id if order else None)
        if compartment_id is None:
            return order, None, None
        found = await compartments.with_kiosk(session, compartment_id)
        return (order, *found) if found else (order, None, None)


class CycleStart(enum.Enum):
    STARTED = "started"
    RETRY = "retry"  # unreachable, interlock: asked again later
    FAULTED = "faulted"  # the board refuses while a fault is latched: asking again cannot help


def _faulted(reply: contract.Reply) -> bool:
    return reply.data.get("error") == "faulted"


async def _cycle_commands(
    ctx: ServiceContext,
    kiosk: Kiosk,
    c: Compartment,
    setpoint_c: float | None,
    nominal_s: float,
    cycle: DisinfectionCycle,
) -> CycleStart:
    """Heater setpoint, then the cycle under the request id its row was made with (committed
    before this runs); STARTED once the kiosk runs it. A start sent again after an unknown
    outcome (the service died waiting, no final answer) is the same request, which a kiosk that
    ran it answers from its record instead of running the cycle again (ADR 0082). A row from
    before that has none: each try is a new request."""
    request_id = cycle.start_request_id
    try:
        heater = await doors.send(
            ctx, kiosk.code, "set_heater", c.number, {"setpoint_c": setpoint_c}
        )
        if heater.status != "succeeded":
            log.warning(
                "set_heater on %s/%s: %s %s", kiosk.code, c.number, heater.status, heater.detail
            )
            if _faulted(heater):
                return CycleStart.FAULTED
            if setpoint_c is not None:
                return CycleStart.RETRY
        reply = await doors.send(
            ctx,
            kiosk.code,
            "start_disinfection",
            c.number,
            {"duration_s": int(nominal_s)},
            request_id=request_id,
        )
    except KioskLinkError as exc:
        # No final answer (it may have run), or nothing sent: the next try is the same request.
        log.warning("cycle start on %s/%s: %s", kiosk.code, c.number, exc)
        return CycleStart.RETRY
    if reply.status == "succeeded":
        return CycleStart.STARTED
    log.warning(
        "start_disinfection on %s/%s: %s %s", kiosk.code, c.number, reply.status, reply.detail
    )
    # A final answer other than success: the kiosk's record of this request would give it
    # again, so the next try is a new request (a new id, compare-and-set on the row). `rejected`
    # and a refusal before the board (board offline, a fault) did not run it; a `failed` after
    # the start left for the board (a bridge restart, the board's answer lost) may hide a cycle
    # that ran, which the waits above and the kiosk's `disinfection_started`, handled by then,
    # keep from running twice (ADR 0082).
    async with session_scope(ctx.sessionmaker) as session:
        await session.execute(
            update(DisinfectionCycle)
            .where(
                DisinfectionCycle.id == cycle.id,
                DisinfectionCycle.start_request_id == request_id,
            )
            .values(start_request_id=uuid.uuid4().hex)
        )
    return CycleStart.FAULTED if _faulted(reply) else CycleStart.RETRY


async def _cannot_start(ctx: ServiceContext, c: Compartment, kind: str) -> None:
    """A cycle the board will not run while its fault is latched: decided once, with an alert,
    and the cycle row closed (ADR 0047). Clearing the fault is the operator's step."""
    async with session_scope(ctx.sessionmaker) as session:
        fresh = await session.get(Compartment, c.id)
        found = await compartments.with_kiosk(session, c.id)
        if fresh is None or found is None:
            return
        cycle = await Story(ctx).running_cycle(session, fresh)
        if cycle is not None:
            cycle.state, cycle.finished_at = "aborted", utcnow()
        await timers.cancel(session, [TimerKind.CYCLE_WATCHDOG], compartment_id=c.id)
        await raise_compartment_alert(
            session,
            ctx.hub,
            found[1],
            fresh,
            kind="cycle_not_started",
            severity="critical",
            what=f"the {kind} cycle cannot start while the fault "
            f"{fresh.fault or 'reported by the board'} is latched; not tried again",
            dedupe_key=f"cycle_not_started:{c.id}",
        )


async def _start_reported(session: AsyncSession, c: Compartment, cycle: DisinfectionCycle) -> bool:
    """Has the kiosk reported this cycle's start (`disinfection_started`)?"""
    # Received after the cycle row was made (our clock on both sides): this cycle's start,
    # not the end of the previous one.
    started = await session.scalar(
        select(KioskEvent.id).where(
            KioskEvent.kiosk_id == c.kiosk_id,
            KioskEvent.compartment == c.number,
            KioskEvent.type == "disinfection_started",
            KioskEvent.received_at >= cycle.started_at,
        )
    )
    return started is not None


async def _kiosk_runs(session: AsyncSession, c: Compartment, cycle: DisinfectionCycle) -> bool:
    """Has the kiosk already started this cycle? Then starting it again would restart it.

    A retried timer (its first run died after sending) must not send the cycle twice: the
    `disinfection_started` event or a snapshot with the lamp on since the cycle began says so.
    """
    if cycle.confirmed_at is not None or await _start_reported(session, c, cycle):
        return True
    return (
        c.snapshot_at is not None
        and c.snapshot_at >= cycle.started_at
        and (c.uv_on or c.disinfect_remaining_s > 0)
    )


def _unconfirmed_start(
    ctx: ServiceContext, c: Compartment, cycle: DisinfectionCycle
) -> datetime | None:
    """When to look again at a cycle an earlier run of the timer may have started (None: send
    it now). Sending it again while the kiosk runs it would restart it and lock the purchaser
    out behind the UV interlock for a whole cycle more."""
    idle_since = (
        c.snapshot_at is not None
        and c.snapshot_at >= cycle.started_at
        and not c.uv_on
        and c.disinfect_remaining_s == 0
    )
    wait_s = max(UNCONFIRMED_START_WAIT_S, 2 * ctx.settings.command_timeout_s)
    if idle_since or utcnow() - cycle.started_at >= timedelta(seconds=wait_s):
        return None
    return utcnow() + timedelta(seconds=RETRY_MIN_REAL_S)


_HOLD_CYCLE_ORDER = (OrderState.DEPOSITED, OrderState.DISINFECTING)
_HOLD_CYCLE_COMPARTMENT = (CompartmentState.OCCUPIED, CompartmentState.DISINFECTING)


async def start_hold_cycle(ctx: ServiceContext, timer: Timer) -> datetime | None:
    order, c, kiosk = await _load(ctx, timer)
    if order is None or c is None or kiosk is None:
        return None
    if order.state not in _HOLD_CYCLE_ORDER:
        return None
    if c.door_open:
        return _retry(ctx)  # the interlock refuses a cycle with the door open
    story = Story(ctx)
    async with session_scope(ctx.sessionmaker) as session:
        order = await session.get(Order, order.id)
        c = await session.get(Compartment, c.id)
        assert order is not None and c is not None
        # Looked at again in this transaction: the kiosk's report that the cycle ran and ended
        # may have been handled since the first look (a restart runs this timer and the
        # reports queued for it at once). A second cycle would shut the purchaser out.
        if order.state not in _HOLD_CYCLE_ORDER or c.state not in _HOLD_CYCLE_COMPARTMENT:
            return None
        faulted = c.fault is not None  # the board starts no cycle while a fault is latched
        # The order stays `deposited` until the board reports the lamp on
        # (`Story.cycle_confirmed`): the purchaser is never told of a disinfection not running.
        if not faulted and c.state == CompartmentState.OCCUPIED:
            await compartments.transition(session, c, CompartmentTrigger.START_CYCLE)
        if faulted:
            cycle = None
        else:
            earlier = await story.running_cycle(session, c)
            cycle = await story.begin_cycle(session, c, "hold", order)
            if await _kiosk_runs(session, c, cycle):
                return None
            if earlier is not None and earlier.kind == "hold":
                later = _unconfirmed_start(ctx, c, cycle)
                if later is not None:
                    return later
    if cycle is None:
        await _cannot_start(ctx, c, "hold")
        return None
    hot = order.temperature_class == "hot" and c.heated
    setpoint = None
    if hot:
        async with ctx.sessionmaker() as session:
            rules = await sites.food_profile(session, ctx.settings, kiosk.site_id)
        setpoint = rules.setpoint_c  # the site's profile's
    started = await _cycle_commands(ctx, kiosk, c, setpoint, ctx.settings.disinfection_s, cycle)
    if started is CycleStart.FAULTED:
        await _cannot_start(ctx, c, "hold")
    return _retry(ctx) if started is CycleStart.RETRY else None


async def start_cleaning(ctx: ServiceContext, timer: Timer) -> datetime | None:
    _, c, kiosk = await _load(ctx, timer)
    if c is None or kiosk is None or c.state != CompartmentState.CLEANING:
        return None
    if c.door_open:
        return _retry(ctx)
    async with session_scope(ctx.sessionmaker) as session:
        fresh = await session.get(Compartment, c.id)
        assert fresh is not None
        if fresh.state != CompartmentState.CLEANING:
            return None  # the cleaning ran and ended since the first look (as for a hold cycle)
        earlier = await Story(ctx).running_cycle(session, fresh)
        cycle = await Story(ctx).begin_cycle(session, fresh, "cleaning", None)
        if await _kiosk_runs(session, fresh, cycle):
            return None
        if earlier is not None and earlier.kind == "cleaning":
            later = _unconfirmed_start(ctx, fresh, cycle)
            if later is not None:
                return later
    started = await _cycle_commands(ctx, kiosk, c, None, ctx.settings.cleaning_s, cycle)
    if started is CycleStart.FAULTED:
        await _cannot_start(ctx, c, "cleaning")
    return _retry(ctx) if started is CycleStart.RETRY else None


async def cycle_watchdog(ctx: ServiceContext, timer: Timer) -> datetime | None:
    """A cycle not reported done in time: done by the snapshot's word, or an alert."""
    _, c, kiosk = await _load(ctx, timer)
    if c is None or kiosk is None:
        return None
    story = Story(ctx)
    async with session_scope(ctx.sessionmaker) as session:
        fresh = await session.get(Compartment, c.id)
        assert fresh is not None
        cycle = await story.running_cycle(session, fresh)
        if cycle is None:
            return None
        # A hold cycle the board never showed running (no start event, no snapshot with the
        # lamp on, no completion) is not over by an idle snapshot: its start may never have
        # reached the board, and the start's timer sends it again (ADR 0082). Food is made
        # ready only after a cycle the board showed running (ADR 0113). A cycle started before
        # migration 0018 counts its start event as the board's word.
        seen_running = (
            cycle.kind != "hold"
            or cycle.confirmed_at is not None
            or await _start_reported(session, fresh, cycle)
        )
        finished_by_snapshot = (
            seen_running
            and fresh.snapshot_at is not None
            and fresh.snapshot_at > cycle.started_at
            and not fresh.uv_on
            and fresh.disinfect_remaining_s == 0
            and not fresh.door_open
            and fresh.fault is None
        )
        if fresh.fault is not None:
            # The fault aborted the cycle on the board (its alert says what to do): not
            # overdue, over. Repeating "overdue" every margin would bury the fault's alert.
            cycle.state, cycle.finished_at = "aborted", utcnow()
            return None
        if finished_by_snapshot:
            # The completion event was lost (e.g. during a restart): the board says it is over.
            await story.cycle_completed(session, kiosk, fresh)
            return None
        await raise_compartment_alert(
            session,
            ctx.hub,
            kiosk,
            fresh,
            kind="cycle_overdue",
            severity="warning",
            what=f"{cycle.kind} cycle overdue",
            dedupe_key=f"cycle_overdue:{cycle.id}",
        )
    return _retry(ctx, ctx.settings.cycle_watchdog_margin_s)


async def dropoff_timeout(ctx: ServiceContext, timer: Timer) -> datetime | None:
    order, c, kiosk = await _load(ctx, timer)
    if order is None or c is None or kiosk is None or order.state != OrderState.ASSIGNED:
        return None
    story = Story(ctx)
    async with session_scope(ctx.sessionmaker) as session:
        seen = await _door_still_open(session, c.id)
        if await _cancelled(session, timer):
            return None  # the courier had it opened again (ADR 0088): its new timer decides
        if seen is not None:
            # The order is not locked here: the door's shutting resolves this alert, then
            # deposits, taking the compartment and then the order.
            await raise_compartment_alert(
                session,
                ctx.hub,
                kiosk,
                seen,
                kind="door_left_open",
                severity="warning",
                what="door left open at drop-off",
                dedupe_key=f"door_left_open:{seen.id}",
            )
            return _retry(ctx, 60)
    async with session_scope(ctx.sessionmaker) as session:
        # Locked, the compartment then the order (the order a kiosk's report writes them in),
        # and only then is the timer read again: a retry that opens the compartment again (ADR
        # 0088) either committed first (its cancellation of this timer is seen here) or waits
        # for this transaction, and its compare-and-set on the order's version then loses (the
        # courier is told to try again). FOR NO KEY UPDATE: rows that merely refer to them
        # (events, timers, openings) are not held up.
        fresh = await compartments.locked(session, c.id)
        order = await session.scalar(
            select(Order).where(Order.id == order.id).with_for_update(key_share=True)
        )
        if fresh is None or order is None or order.state != OrderState.ASSIGNED:
            return None
        if await _cancelled(session, timer):
            return None
        if fresh.door_open:
            return _retry(ctx)  # opened meanwhile: looked at again
        if fresh.state != CompartmentState.RESERVED:
            return None
        assigned_at = order.assigned_at or order.updated_at
        # Opened again at the courier's asking (ADR 0088): judged from its latest unlock.
        unlocked_at = (
            await kiosk_reports.unlocked_for_order(session, order.id, assigned_at) or assigned_at
        )
        # Its stamps are by the kiosk's clock: one behind ours stamps a report made after the
        # unlock with an earlier time, by as much as its messages show it behind (ADR 0089).
        behind = ctx.commander.clock_behind_s(kiosk.code) if ctx.commander is not None else 0.0
        if fresh.snapshot_at is None or fresh.snapshot_at < unlocked_at - timedelta(seconds=behind):
            # Nothing heard from the compartment since it was unlocked (the service was down,
            # or the kiosk is): its door and occupancy here are older than the drop-off.
            # Deciding now could free a compartment that has food in it; wait for the kiosk.
            return _retry(ctx)
        opened = await kiosk_reports.door_opened_for_order(session, order.id, assigned_at)
        if opened is None and fresh.lock_released:
            # Unlocked and the door not yet seen open: the courier may be opening it now, or did
            # while the service was away and its reports are still on their way. An empty, shut
            # compartment proves nothing until the door has opened or the latch sprung back.
            return _retry(ctx)
        if fresh.occupied:
            await story.deposit(session, kiosk, fresh, order)
        else:
            await story.release_empty(session, kiosk, fresh, order, kiosk_reports.DROPOFF_TIMED_OUT)
    return None


async def _cancelled(session: AsyncSession, timer: Timer) -> bool:
    return await session.scalar(select(Timer.state).where(Timer.id == timer.id)) == "cancelled"


async def _door_still_open(session: AsyncSession, compartment_id: int) -> Compartment | None:
    """The compartment, locked, if its door is open: the one read a door left open alert may
    be raised on. A door report writes the compartment before it resolves that alert, so a
    door shutting meanwhile either committed first (its door is seen shut here) or waits for
    this transaction and then finds the alert to resolve; read unlocked, the alert could be
    raised after the shutting had looked for it, and stay open on a shut door."""
    c = await compartments.locked(session, compartment_id)
    return c if c is not None and c.door_open else None


async def reminder(ctx: ServiceContext, timer: Timer) -> datetime | None:
    order, c, kiosk = await _load(ctx, timer)
    if order is None or c is None or kiosk is None or order.state != OrderState.READY:
        return None
    async with session_scope(ctx.sessionmaker) as session:
        # Read again, locked: a pickup committing meanwhile either comes first (no reminder)
        # or waits for this transaction (its event after the reminder's).
        order = await session.scalar(select(Order).where(Order.id == order.id).with_for_update())
        if order is None or order.state != OrderState.READY:
            return None
        if await pickup_repository.site_frozen(session, order.site_id):
            # Her code is refused while the kill switch holds: "still waiting, collect it by"
            # would send her to a door that stays shut, by a time the release moves. It waits
            # for the release (ADR 0123).
            return utcnow() + timedelta(seconds=ctx.settings.scaled(FROZEN_HOLD_LOOK_S))
        if await _resumed_since(session, order, ctx.settings.scaled(ctx.settings.reminder_after_s)):
            return None  # the release told her since it fell due: her code works, until when
        if order.code_used_at is not None:
            # Her code is opening the door now: looked at again once its unlock's time is over
            # (the food taken, nothing to remind; left inside, her code given back).
            return utcnow() + timedelta(seconds=doors.authorisation_window_s(ctx))
        await outbox.enqueue(
            session,
            order,
            "reminder",
            where=await Story(ctx).where(session, kiosk, c),
            deadline=order.hold_until,
        )
        await webhooks.enqueue(session, order, "order.reminder_sent", key=f"timer-{timer.id}")
    return None


async def _resumed_since(session: AsyncSession, order: Order, reminder_after_s: float) -> bool:
    """A kill switch's release told her she can collect it again (`resumed`, sent once an
    order) after her reminder fell due: the reminder would say it a second time."""
    if order.ready_at is None:
        return False
    due = order.ready_at + timedelta(seconds=reminder_after_s)
    told = await session.scalar(
        select(NotificationOutbox.created_at).where(
            NotificationOutbox.dedupe_key == outbox.dedupe_key(order, RESUMED)
        )
    )
    return told is not None and told >= due


async def hold_expiry(ctx: ServiceContext, timer: Timer) -> datetime | None:
    if timer.order_id is None:
        return None
    async with session_scope(ctx.sessionmaker) as session:
        # Locked: a claim of her code committing meanwhile came first (seen here), or waits
        # and then finds the order expired.
        order = await session.scalar(
            select(Order).where(Order.id == timer.order_id).with_for_update()
        )
        if order is None or order.state != OrderState.READY:
            return None
        if order.code_used_at is not None:
            # Her code is opening the door as the hold runs out: its closing decides (picked
            # up, or her code given back and the hold ends then), not a message that it
            # expired while she takes her food (ADR 0112). Only while her code-release timer
            # is pending (her unlock may be on its way; an offline pickup's door events are
            # right behind its replay), then looked at again just after it: a closing later
            # than that is put right by the correction, never waited for without end.
            release = await session.scalar(
                select(func.min(Timer.due_at)).where(
                    Timer.order_id == order.id,
                    Timer.kind == TimerKind.CODE_RELEASE.value,
                    Timer.state == "pending",
                )
            )
            now = utcnow()
            if release is not None and release > now:
                return release + RELEASE_FIRST  # one look after it, not one a second
            window = timedelta(seconds=doors.authorisation_window_s(ctx))
            if release is not None and now - release < window:
                return now + window / 4  # overdue: its handler runs, or its worker died
        now = utcnow()
        if await _cancelled(session, timer):
            return None  # her hold was moved meanwhile (ADR 0123): its new timer ends it
        story = Story(ctx)
        compartment = (
            await session.get(Compartment, order.compartment_id) if order.compartment_id else None
        )
        fault = await story.fault_told(session, compartment, order) if compartment else None
        if fault is not None:
            # She was told staff would contact her: "not collected within the hold limit"
            # would blame her (ADR 0047), and a kill switch changes nothing of that.
            await story.expire_after_fault(session, order, fault)
            return None
        deadline = order.food_deadline
        paused = "its safe time ran out while openings at the site were paused"
        if await pickup_repository.site_frozen(session, order.site_id):
            # Her code is refused while the kill switch holds: her hold is not over, it waits
            # for the release, which gives back the time (ADR 0123); never past her food's
            # safety deadline, when it is no longer safe to collect, whatever the switch.
            if deadline is not None and now >= deadline:
                await story.spoil(session, order, Unsafe(deadline, paused))
                return None
            again = now + timedelta(seconds=ctx.settings.scaled(FROZEN_HOLD_LOOK_S))
            return min(again, deadline) if deadline is not None else again
        if deadline is not None and now >= deadline and await _released_too_late(session, order):
            # Released after her food's safe time ran out: it ran out while paused.
            await story.spoil(session, order, Unsafe(deadline, paused))
            return None
        await story.expire(session, order, "not collected within the hold limit")
    return None


async def _released_too_late(session: AsyncSession, order: Order) -> bool:
    """A kill switch released after her hold could still be given back (ADR 0123)."""
    details = await session.scalars(
        select(OrderEvent.detail).where(
            OrderEvent.order_id == order.id, OrderEvent.action == HOLD_GIVEN_BACK
        )
    )
    return any(bool(detail.get("over")) for detail in details.all())


async def order_expiry(ctx: ServiceContext, timer: Timer) -> datetime | None:
    """Not dropped off by its `expires_at`: expired, the purchaser and merchant told. A
    drop-off under way (`assigned`) ends within its door's timeout, and one that ends empty
    puts the order back to `created`, past its expiry with no timer left to end it: looked at
    again then."""
    async with session_scope(ctx.sessionmaker) as session:
        order = await session.get(Order, timer.order_id) if timer.order_id else None
        if order is not None and order.state == OrderState.ASSIGNED:
            return utcnow() + timedelta(
                seconds=ctx.settings.scaled(ctx.settings.dropoff_door_timeout_s)
            )
        if order is None or order.state != OrderState.CREATED:
            return None
        await Story(ctx).expire(session, order, "never dropped off")
    return None


async def code_release(ctx: ServiceContext, timer: Timer) -> datetime | None:
    """The code was accepted but its door never opened: the purchaser may use it again."""
    async with session_scope(ctx.sessionmaker) as session:
        order = await session.get(Order, timer.order_id) if timer.order_id else None
        if order is not None:
            await pickups.return_unopened_code(session, order, "system", None, {})
    return None


# What a door standing open holds up, by the compartment's state (a drop-off's door has its
# own, longer timer: the courier is still loading).
_DOOR_LEFT_OPEN_WHAT = {
    CompartmentState.OCCUPIED: "with food inside: its cycle waits until it is shut",
    CompartmentState.DISINFECTING: "with food inside: its cycle waits until it is shut",
    CompartmentState.AWAITING_PICKUP: "after a pickup: the compartment is cleaned once it is shut",
    CompartmentState.CLEANING: "after a pickup: its cleaning waits until it is shut",
}


async def door_left_open(ctx: ServiceContext, timer: Timer) -> datetime | None:
    """A door still open a minute after it opened: staff are told to shut it; the alert is
    resolved when it shuts (`StoryHandler._door_closed`, on its event or a snapshot)."""
    _, c, kiosk = await _load(ctx, timer)
    if c is None or kiosk is None or not c.door_open:
        return None
    async with session_scope(ctx.sessionmaker) as session:
        seen = await _door_still_open(session, c.id)
        if seen is None or await _cancelled(session, timer):
            return None  # shut meanwhile (or shut and opened again: the new timer says when)
        what = _DOOR_LEFT_OPEN_WHAT.get(CompartmentState(seen.state), "")
        await raise_compartment_alert(
            session,
            ctx.hub,
            kiosk,
            seen,
            kind="door_left_open",
            severity="warning",
            what=f"door left open {what}".strip(),
            dedupe_key=f"door_left_open:{c.id}",
        )
    return None


async def heater_off(ctx: ServiceContext, timer: Timer) -> datetime | None:
    """Switch off the heater of a compartment preheated for food that did not come."""
    _, c, kiosk = await _load(ctx, timer)
    if c is None or kiosk is None or c.state != CompartmentState.AVAILABLE:
        return None  # reserved again, or holding food: its own story owns the heater
    try:
        reply = await doors.send(ctx, kiosk.code, "set_heater", c.number, {"setpoint_c": None})
    except KioskLinkError:
        return _retry(ctx)
    return None if reply.status == "succeeded" else _retry(ctx)


async def alert_escalation(ctx: ServiceContext, timer: Timer) -> datetime | None:
    """Tell the site's escalation list of an alert nobody acknowledged in time (ADR 0045)."""
    if timer.alert_id is None:
        return None
    after_s = ctx.settings.scaled(ctx.settings.oncall_escalate_after_s)
    async with session_scope(ctx.sessionmaker) as session:
        return await oncall.escalate(session, timer.alert_id, after_s, utcnow())


async def reheat(ctx: ServiceContext, timer: Timer) -> datetime | None:
    """Set the heater of a compartment holding hot food again (its board rebooted)."""
    order, c, kiosk = await _load(ctx, timer)
    if order is None or c is None or kiosk is None or order.state not in HOLDING:
        return None
    if c.fault is not None:
        return None  # the board refuses while a fault is latched: the fault's path applies
    async with ctx.sessionmaker() as session:
        rules = await sites.food_profile(session, ctx.settings, kiosk.site_id)
    try:
        reply = await doors.send(
            ctx, kiosk.code, "set_heater", c.number, {"setpoint_c": rules.setpoint_c}
        )
    except KioskLinkError:
        return _retry(ctx)
    return None if reply.status == "succeeded" else _retry(ctx)


async def food_check(ctx: ServiceContext, timer: Timer) -> datetime | None:
    """One order's food check: `food_checks` of one timer."""
    outcome = (await food_checks(ctx, [timer]))[timer.id]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


@dataclass
class _Held:
    """A held order whose food is checked: what the check reads of it (columns, not the ORM
    row: a fleet's checks would otherwise make the garbage collector run full collections),
    and its watch as folded so far."""

    order_id: uuid.UUID
    state: str  # as read: its watch is saved only if it is still so
    hot: bool
    deposited_at: datetime | None
    deadline: datetime | None
    saved: dict[str, Any] | None  # its watch as stored
    number: int  # its compartment
    seen: watch.Watch


_CHECKED = (
    select(
        Order.id,
        Order.state,
        Order.temperature_class,
        Order.deposited_at,
        Order.food_deadline,
        Order.food_watch,
        Compartment.number,
        Kiosk.id,
        Kiosk.site_id,
    )
    .join(Compartment, Compartment.id == Order.compartment_id)
    .join(Kiosk, Kiosk.id == Compartment.kiosk_id)
)


async def food_checks(ctx: ServiceContext, batch: Sequence[Timer]) -> dict[int, BatchOutcome]:
    """Fold each held order's new readings into its food's watch and look at its clock, for a
    batch of food checks at once (ADR 0104): one read of their orders, then per kiosk one
    count and one read of the readings of all its compartments checked. The orders whose
    food is no longer safe end as unsafe (`Story.spoil`), each in a transaction of its own;
    the others' watches are kept and their checks come again at their kiosk's next slot, so
    a kiosk's checks fall due, and are claimed, together. Returns, per timer, when to run it
    again (None: done), or the error that ending its order raised (a pickup at that moment)."""
    now = utcnow()
    period = timedelta(seconds=ctx.settings.scaled(ctx.settings.food_check_s))
    again: dict[int, BatchOutcome] = dict.fromkeys((t.id for t in batch), None)
    failed: dict[uuid.UUID, Exception] = {}
    unsafe: list[tuple[uuid.UUID, Unsafe, watch.Watch, bool]] = []  # bool: by its deadline
    async with session_scope(ctx.sessionmaker) as session:
        ids = {t.order_id for t in batch if t.order_id is not None}
        by_kiosk: dict[int, list[_Held]] = {}
        site_of: dict[int, int] = {}
        for (
            order_id,
            state,
            temperature,
            deposited,
            deadline,
            saved,
            number,
            kiosk_id,
            site,
        ) in await session.execute(_CHECKED.where(Order.id.in_(ids))):
            if state in HOLDING:
                held = _Held(
                    order_id, state, temperature == "hot", deposited, deadline, saved, number,
                    watch.Watch.from_json(saved),
                )  # fmt: skip
                by_kiosk.setdefault(kiosk_id, []).append(held)
                site_of[kiosk_id] = site
        next_check: dict[uuid.UUID, datetime] = {}
        watches: list[tuple[uuid.UUID, str, dict[str, Any]]] = []
        profiles: dict[int, Profile] = {}  # by site
        for kiosk_id, checked in by_kiosk.items():
            if (rules := profiles.get(site_of[kiosk_id])) is None:
                rules = await sites.food_profile(session, ctx.settings, site_of[kiosk_id])
                profiles[site_of[kiosk_id]] = rules
            verdicts = await _fold_readings(session, kiosk_id, checked, rules, now)
            for h in checked:
                verdict = verdicts.get(h.order_id)
                timed_out = verdict is None and h.deadline is not None and now >= h.deadline
                if timed_out and h.state == OrderState.READY:
                    continue  # her hold ends with it: HOLD_EXPIRY (hold_until <= deadline)
                if timed_out and h.deadline is not None:
                    verdict = Unsafe(h.deadline, "its time ran out before it was ready")
                if verdict is not None:
                    unsafe.append((h.order_id, verdict, h.seen, timed_out))
                    continue
                if (kept := h.seen.to_json()) != h.saved:
                    watches.append((h.order_id, h.state, kept))
                next_check[h.order_id] = timers.slot_after(now, period, kiosk_id)
        await orders.save_food_watches(session, watches)
    for order_id, verdict, seen, timed_out in unsafe:
        try:
            await _spoil(ctx, order_id, verdict, seen, timed_out)
        except Exception as e:  # its own: the others' checks are done
            failed[order_id] = e
    for t in batch:
        if t.order_id in failed:
            again[t.id] = failed[t.order_id]
        elif t.order_id in next_check:
            again[t.id] = next_check[t.order_id]
    return again


async def _spoil(
    ctx: ServiceContext, order_id: uuid.UUID, verdict: Unsafe, seen: watch.Watch, timed_out: bool
) -> None:
    """End the order as unsafe, read again in a transaction of its own, if still held."""
    async with session_scope(ctx.sessionmaker) as session:
        order = await session.get(Order, order_id)
        if order is None or order.state not in HOLDING:
            return  # a step taken since (a pickup, an expiry) ended the watch
        if timed_out and order.state == OrderState.READY:
            return  # ready since: her hold ends with the deadline (HOLD_EXPIRY)
        await Story(ctx).spoil(session, order, verdict, seen)


async def _fold_readings(
    session: AsyncSession, kiosk_id: int, held: list[_Held], rules: Profile, now: datetime
) -> dict[uuid.UUID, Unsafe]:
    """Fold the new readings of a kiosk's held hot orders into their watches, one count and
    one read for all their compartments: the verdicts of those no longer safe, by order."""
    verdicts: dict[uuid.UUID, Unsafe] = {}
    # The queries answer per compartment number: one order per compartment in each round (a
    # compartment holds one order at a time, so there is one round; this is only a guard).
    rounds: list[dict[int, _Held]] = []
    for h in held:
        if not h.hot:
            continue
        free = next((r for r in rounds if h.number not in r), None)
        if free is None:
            rounds.append(free := {})
        free[h.number] = h
    for by_number in rounds:
        start = {n: h.deposited_at or now for n, h in by_number.items()}
        folded = {n: (start[n], h.seen.last_ts) for n, h in by_number.items() if h.seen.last_ts}
        stored = await telemetry.stamps_after_each(session, kiosk_id, folded)
        for n, h in by_number.items():
            if h.seen.last_ts is None or h.seen.stale(stored.get(n, 0)):
                # Readings came late into what was folded (sent again after a takeover, ADR
                # 0098): the food's whole record since the drop-off is folded again (ADR 0101).
                h.seen = watch.Watch(last_ts=start[n])
        since = {n: h.seen.last_ts or start[n] for n, h in by_number.items()}
        rows = await telemetry.readings_since_each(session, kiosk_id, since, now)
        for n, h in by_number.items():
            verdict = watch.fold(h.seen, rules, rows.get(n, ()))
            verdict = verdict or watch.silent_since(h.seen, rules, now)
            if verdict is not None:
                verdicts[h.order_id] = verdict
    return verdicts


# Timers that look again by design for as long as their order lasts (a held order's food is
# checked every minute for hours; an order's expiry waits out a drop-off under way, for hours
# if its kiosk is cut off meanwhile; her hold's end and her reminder wait out a kill switch,
# ADR 0123): a run that asks to run again succeeded, so it does not count towards giving up.
# Every other timer's "again" is a retry of a step that did not happen.
RECURRING: frozenset[str] = frozenset(
    {TimerKind.FOOD_CHECK, TimerKind.ORDER_EXPIRY, TimerKind.HOLD_EXPIRY, TimerKind.REMINDER}
)

HANDLERS: dict[str, Handler] = {
    TimerKind.START_HOLD_CYCLE: start_hold_cycle,
    TimerKind.START_CLEANING: start_cleaning,
    TimerKind.CYCLE_WATCHDOG: cycle_watchdog,
    TimerKind.DROPOFF_TIMEOUT: dropoff_timeout,
    TimerKind.REMINDER: reminder,
    TimerKind.HOLD_EXPIRY: hold_expiry,
    TimerKind.ORDER_EXPIRY: order_expiry,
    TimerKind.CODE_RELEASE: code_release,
    TimerKind.DOOR_LEFT_OPEN: door_left_open,
    TimerKind.HEATER_OFF: heater_off,
    TimerKind.ALERT_ESCALATION: alert_escalation,
    TimerKind.FOOD_CHECK: food_check,
    TimerKind.REHEAT: reheat,
}

# Kinds whose claimed timers run together: each kind's `HANDLERS` entry runs one on its own.
BATCHED: dict[str, BatchHandler] = {TimerKind.FOOD_CHECK: food_checks}
