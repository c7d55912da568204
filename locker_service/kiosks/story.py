"""The steps of the locker story, shared by the kiosk event handler and the timers.

Each step runs inside the caller's transaction: it moves the order and the compartment with
compare-and-set, writes the audit trail, schedules the follow-up timers and, where the purchaser
must hear of it, the outbox row, all in that one transaction. Commands to the kiosk are never
sent from here: they are timers (START_HOLD_CYCLE, START_CLEANING) so that a crash between a
decision and its command is recovered by whichever replica claims the timer next.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.alerts.catalogue import UNDELIVERABLE_ALERT
from locker_service.alerts.service import raise_compartment_alert, resolve_alerts
from locker_service.compartments import openings
from locker_service.compartments import repository as compartments
from locker_service.compartments import service as doors
from locker_service.compartments.lifecycle import CompartmentState, CompartmentTrigger
from locker_service.context import ServiceContext
from locker_service.events import publish_after_commit
from locker_service.foodsafety import watch
from locker_service.foodsafety.faults import LOCK_JAMMED, keeps_food_hot
from locker_service.foodsafety.uv_dose import LAMP_FAILED
from locker_service.foodsafety.watch import Unsafe
from locker_service.kiosks import disinfection_proof as proof
from locker_service.kiosks import exceptions
from locker_service.models import (
    Compartment,
    DisinfectionCycle,
    Kiosk,
    Order,
    Site,
    utcnow,
)
from locker_service.orders import outbox
from locker_service.orders import repository as orders
from locker_service.orders.lifecycle import (
    CODE_RETURNED,
    DISCARDED,
    TAKEN_OUT_BY_STAFF,
    TAKEN_OUT_ON_INSPECTION,
    OrderState,
    OrderTrigger,
    after_fault_reason,
)
from locker_service.orders.schemas import live_view
from locker_service.pickup import offline as pickup_offline
from locker_service.pickup import repository as pickup_repository
from locker_service.sites import service as sites
from locker_service.timers import service as timers
from locker_service.timers.service import TimerKind

log = logging.getLogger(__name__)

# Faults that keep food from being held (its heat or its disinfection), as told in ADR 0047,
# and the merchant's notice of one with food inside.
FOOD_FAULTS = (exceptions.Exceptional.HEATER_FAULT, exceptions.Exceptional.LAMP_FAULT)
# What an order that has ended leaves to run: nothing.
ORDER_TIMERS = (
    TimerKind.REMINDER,
    TimerKind.HOLD_EXPIRY,
    TimerKind.ORDER_EXPIRY,
    TimerKind.FOOD_CHECK,
)


def latched_food_fault(c: Compartment) -> str | None:
    """The heater, probe or lamp fault the compartment's board has latched now, if any: with
    food inside, everyone was told staff would take it out and contact her (ADR 0047)."""
    if c.fault is not None and exceptions.fault_exception(c.fault) in FOOD_FAULTS:
        return c.fault
    return None


def compartment_view(c: Compartment, kiosk: Kiosk) -> dict[str, object]:
    return {
        "id": c.id,
        "kiosk_id": kiosk.id,
        "kiosk": kiosk.code,
        "number": c.number,
        "state": c.state,
        "door_open": c.door_open,
        "occupied": c.occupied,
    }


class Story:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings

    def _later(self, nominal_s: float) -> timedelta:
        return timedelta(seconds=self.settings.scaled(nominal_s))

    def _publish(
        self, session: AsyncSession, kiosk: Kiosk, c: Compartment, o: Order | None
    ) -> None:
        publish_after_commit(
            session, self.ctx.hub, "compartment", compartment_view(c, kiosk), kiosk.site_id
        )
        if o is not None:
            publish_after_commit(session, self.ctx.hub, "order", live_view(o), o.site_id)

    async def where(self, session: AsyncSession, kiosk: Kiosk, c: Compartment) -> outbox.Place:
        site = await session.get(Site, kiosk.site_id)
        return outbox.Place(site.name if site else "", kiosk.name, c.number)

    # -- drop-off ---------------------------------------------------------------------------

    async def deposit(
        self, session: AsyncSession, kiosk: Kiosk, c: Compartment, order: Order
    ) -> None:
        """The courier shut the door with the food inside: hold it, then disinfect. The food's
        clock starts (from cooked_at if the merchant gave it) and its watch with it."""
        now = utcnow()
        rules = await sites.food_profile(session, self.settings, kiosk.site_id)
        await orders.transition(
            session,
            order,
            OrderTrigger.DEPOSIT,
            actor_type="kiosk",
            actor_id=kiosk.code,
            deposited_at=now,
            food_deadline=watch.deadline(rules, order.cooked_at or now),
            food_watch=watch.Watch(last_ts=now).to_json(),
        )
        await compartments.transition(session, c, CompartmentTrigger.OCCUPY)
        await timers.cancel(session, [TimerKind.DROPOFF_TIMEOUT], order_id=order.id)
        timers.schedule(
            session, TimerKind.START_HOLD_CYCLE, now, order_id=order.id, compartment_id=c.id
        )
        timers.schedule(
            session,
            TimerKind.FOOD_CHECK,
            # At the kiosk's slot, with its other food checks (ADR 0104).
            timers.slot_after(now, self._later(self.settings.food_check_s), kiosk.id),
            order_id=order.id,
            compartment_id=c.id,
        )
        fault = latched_food_fault(c)
        if fault is not None:
            # The heater or lamp failed while the compartment was reserved, and the courier, who
            # is not told of faults, shut the food in: it is now a fault with food inside, and
            # everyone is told so (else its cycle only fails to start, and nobody hears).
            await self.fault_with_food(session, kiosk, c, fault)
        self._publish(session, kiosk, c, order)

    async def release_empty(
        self, session: AsyncSession, kiosk: Kiosk, c: Compartment, order: Order, reason: str
    ) -> None:
        """The door shut with nothing inside: the compartment is free, the order waits again."""
        await orders.transition(
            session,
            order,
            OrderTrigger.RELEASE,
            actor_type="kiosk",
            actor_id=kiosk.code,
            detail={"reason": reason},
            compartment_id=None,
        )
        await compartments.transition(session, c, CompartmentTrigger.RELEASE)
        await timers.cancel(session, [TimerKind.DROPOFF_TIMEOUT], order_id=order.id)
        if order.temperature_class == "hot" and c.heated:
            timers.schedule(session, TimerKind.HEATER_OFF, utcnow(), compartment_id=c.id)
        self._publish(session, kiosk, c, order)
        publish_after_commit(
            session,
            self.ctx.hub,
            "dropoff",
            {
                # Shown on the kiosk's lobby screen too (its stream): nothing of the order.
                "kiosk": kiosk.code,
                "compartment": c.number,
                "outcome": "empty",
                "message": "Nothing was put in: the order was not dropped off.",
            },
            kiosk.site_id,
        )

    # -- cycles -----------------------------------------------------------------------------

    async def running_cycle(
        self, session: AsyncSession, c: Compartment
    ) -> DisinfectionCycle | None:
        return await compartments.running_cycle(session, c.id)

    async def begin_cycle(
        self, session: AsyncSession, c: Compartment, kind: str, order: Order | None
    ) -> DisinfectionCycle:
        """The cycle row and its watchdog (once: a retried start reuses the running one)."""
        cycle = await self.running_cycle(session, c)
        if cycle is not None and cycle.kind == kind:
            return cycle
        nominal = self.settings.disinfection_s if kind == "hold" else self.settings.cleaning_s
        now = utcnow()
        cycle = DisinfectionCycle(
            compartment_id=c.id,
            order_id=order.id if order else None,
            kind=kind,
            started_at=now,
            ends_at=now + self._later(nominal),
            state="running",
            commanded_s=float(int(nominal)),  # the board is asked for whole seconds
            # Committed with the row, before the start leaves: a start sent again is the same
            # request (ADR 0082).
            start_request_id=uuid.uuid4().hex,
        )
        session.add(cycle)
        await timers.cancel(session, [TimerKind.CYCLE_WATCHDOG], compartment_id=c.id)
        timers.schedule(
            session,
            TimerKind.CYCLE_WATCHDOG,
            cycle.ends_at + self._later(self.settings.cycle_watchdog_margin_s),
            compartment_id=c.id,
            order_id=order.id if order else None,
        )
        await session.flush()
        return cycle

    async def cycle_confirmed(self, session: AsyncSession, kiosk: Kiosk, c: Compartment) -> None:
        """The board reports the lamp on (its `disinfection_started`, or a snapshot with the
        lamp on): the order's disinfection has begun. Not before: a cycle the service decided
        to start may be refused by the board (door open, a fault) or never reach it."""
        if c.state != CompartmentState.DISINFECTING:
            return
        cycle = await self.running_cycle(session, c)
        if cycle is None or cycle.kind != "hold":
            return
        if cycle.confirmed_at is None:
            cycle.confirmed_at = utcnow()  # this cycle ran: its watchdog may end it (ADR 0113)
        order = await orders.active_in_compartment(session, c.id)
        if order is None or order.state != OrderState.DEPOSITED:
            return  # confirmed already (a restarted cycle), or no order to tell
        await orders.transition(
            session,
            order,
            OrderTrigger.START_CYCLE,
            actor_type="kiosk",
            actor_id=kiosk.code,
            disinfecting_at=utcnow(),
        )
        self._publish(session, kiosk, c, order)

    async def cycle_completed(
        self,
        session: AsyncSession,
        kiosk: Kiosk,
        c: Compartment,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """The kiosk reports the cycle done: food ready for pickup, or compartment free; unless
        the lamp record in its event's `data` shows the dose short (or cannot be true): then
        the cycle runs again."""
        # The start's report may have been lost (an event the broker refused): the completion
        # says the lamp ran. First, while the cycle is still the running one.
        await self.cycle_confirmed(session, kiosk, c)
        cycle = await self.running_cycle(session, c)
        now = utcnow()
        if cycle is not None:
            outcome = await proof.record_cycle_end(
                session, self.ctx, kiosk, c, cycle, data, completed=True
            )
            if outcome in proof.NOT_COMPLETE:
                cycle.state, cycle.finished_at = "short", now
                await timers.cancel(session, [TimerKind.CYCLE_WATCHDOG], compartment_id=c.id)
                if await proof.lamp_has_failed(session, self.ctx, c):
                    await self.lamp_failed(session, kiosk, c)
                else:
                    await self._run_again(session, c)
                self._publish(session, kiosk, c, None)
                return
            cycle.state, cycle.finished_at = "completed", now
        await timers.cancel(session, [TimerKind.CYCLE_WATCHDOG], compartment_id=c.id)
        if c.state == CompartmentState.CLEANING:
            await compartments.transition(session, c, CompartmentTrigger.COMPLETE_CLEANING)
            self._publish(session, kiosk, c, None)
            return
        if c.state != CompartmentState.DISINFECTING:
            log.info("cycle completed on compartment %s in state %s: nothing to do", c.id, c.state)
            return
        order = await orders.active_in_compartment(session, c.id)
        await compartments.transition(session, c, CompartmentTrigger.COMPLETE_CYCLE)
        if order is None or order.state != OrderState.DISINFECTING:
            self._publish(session, kiosk, c, None)
            return
        if order.food_deadline is not None and order.food_deadline <= now:
            self._publish(session, kiosk, c, None)
            await self.spoil(
                session, order, Unsafe(order.food_deadline, "its time ran out before it was ready")
            )
            return
        rules = await sites.food_profile(session, self.settings, kiosk.site_id)
        hold_until = watch.hold_until(rules, now, order.food_deadline)
        await orders.transition(
            session,
            order,
            OrderTrigger.COMPLETE_CYCLE,
            actor_type="kiosk",
            actor_id=kiosk.code,
            ready_at=now,
            hold_until=hold_until,
        )
        timers.schedule(
            session,
            TimerKind.REMINDER,
            now + self._later(self.settings.reminder_after_s),
            order_id=order.id,
        )
        timers.schedule(
            session, TimerKind.HOLD_EXPIRY, hold_until, order_id=order.id, compartment_id=c.id
        )
        await outbox.enqueue(
            session, order, "ready", where=await self.where(session, kiosk, c), deadline=hold_until
        )
        self._publish(session, kiosk, c, order)

    async def cycle_aborted(
        self,
        session: AsyncSession,
        kiosk: Kiosk,
        c: Compartment,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        cycle = await self.running_cycle(session, c)
        if cycle is not None:
            cycle.state, cycle.finished_at = "aborted", utcnow()
            await proof.record_cycle_end(session, self.ctx, kiosk, c, cycle, data, completed=False)
        await timers.cancel(session, [TimerKind.CYCLE_WATCHDOG], compartment_id=c.id)
        await raise_compartment_alert(
            session,
            self.ctx.hub,
            kiosk,
            c,
            kind="cycle_aborted",
            severity="warning",
            what="disinfection cycle aborted",
            dedupe_key=f"cycle_aborted:{c.id}",
        )
        await self._run_again(session, c)

    async def _run_again(self, session: AsyncSession, c: Compartment) -> None:
        """The food (or the emptied compartment) still needs its cycle: start again once the
        door is shut; the start timer waits for that."""
        retry_at = utcnow() + self._later(30)
        if c.fault is not None:
            # A faulted compartment starts no cycle (PROTOCOL.md section 6): decided once here,
            # the fault's alert already tells the operator what to do (ADR 0047).
            return
        if c.state == CompartmentState.DISINFECTING:
            order = await orders.active_in_compartment(session, c.id)
            if order is not None:
                timers.schedule(
                    session,
                    TimerKind.START_HOLD_CYCLE,
                    retry_at,
                    order_id=order.id,
                    compartment_id=c.id,
                )
        elif c.state == CompartmentState.CLEANING:
            timers.schedule(session, TimerKind.START_CLEANING, retry_at, compartment_id=c.id)

    async def lamp_failed(self, session: AsyncSession, kiosk: Kiosk, c: Compartment) -> None:
        """Too many cycles short of their dose in a row: the lamp has failed. No cycle runs
        again until an operator marks it replaced; with food inside, everyone waiting on it is
        told as for a board's lamp fault (ADR 0047, 0073)."""
        order = await orders.active_in_compartment(session, c.id)
        if order is not None and order.state == OrderState.DISINFECTING:
            await self.fault_with_food(session, kiosk, c, LAMP_FAILED)
            return
        await self._compartment_task(
            session,
            kiosk,
            c,
            f"{LAMP_FAILED}: the UV-C lamp fell short of its dose "
            f"{self.settings.uv_max_short_cycles} cycles in a row; the compartment stays out of "
            "use until the lamp is replaced and marked replaced",
        )

    async def fault_with_food(
        self, session: AsyncSession, kiosk: Kiosk, c: Compartment, fault: str
    ) -> None:
        """A board fault in a compartment holding food: each person told once (ADR 0047).

        The board has aborted the cycle and dropped the setpoint; no cycle start is tried
        again until the fault is cleared (the start timer and the abort see `c.fault`).
        """
        told = exceptions.decide(exceptions.fault_exception(fault))
        await self._alert(
            session,
            kiosk,
            c,
            told,
            told.operator_message.format(fault=fault),
            dedupe_key=f"compartment_fault:{c.id}",
        )
        order = await orders.active_in_compartment(session, c.id)
        if order is None:
            return
        # The kiosk's offline supply carries it at once: her food is held for staff (ADR 0128).
        order.updated_at = utcnow()
        if told.merchant_event is not None:
            orders.add_notice(
                session,
                order.id,
                "kiosk",
                kiosk.code,
                told.merchant_event,
                told.merchant_message.format(fault=fault, ref=order.external_ref),
                {"fault": fault, "temp_c": c.temp_c},
            )
        if told.purchaser_message is not None:
            await outbox.enqueue(
                session,
                order,
                told.purchaser_message,
                where=await self.where(session, kiosk, c),
                deadline=None,
            )
            # Told that staff will contact her: no reminder to come and collect it after that.
            await timers.cancel(session, [TimerKind.REMINDER], order_id=order.id)
        self._publish(session, kiosk, c, order)

    async def fault_cleared_with_food(
        self, session: AsyncSession, kiosk: Kiosk, c: Compartment, fault: str
    ) -> bool:
        """The board cleared a fault while the food she was told of is still inside: she was
        told staff would contact her, and nothing has been done yet. The operator's task stays
        open, saying what is left to decide (hand it over or discard it: ADR 0120), until the
        food leaves the compartment. False when there is no such order (the alert resolves)."""
        order = await orders.active_in_compartment(session, c.id)
        if order is None or order.state == OrderState.ASSIGNED:
            return False  # no food of hers behind the door yet
        if await orders.fault_told(session, order) is None:
            return False
        await self._compartment_task(
            session,
            kiosk,
            c,
            f"{fault} cleared with order {order.external_ref}'s food inside; the purchaser "
            "was told staff would contact her: open it to hand the food over or to discard it",
        )
        return True

    # -- pickup and emptying ----------------------------------------------------------------

    async def emptied(
        self,
        session: AsyncSession,
        kiosk: Kiosk,
        c: Compartment,
        opener: openings.Opener | None,
    ) -> None:
        """The door shut on an empty compartment that held food: close the order, clean.

        The last opening says how: an operator's purpose, when one was given (ADR 0120), is
        what happened; staff emptying after a heater fault took it out (ADR 0047); a look in,
        which was to leave the food in, took it out unaccounted for (ADR 0129); and anyone
        else's emptying of a ready order is her pickup."""
        who = opener.who if opener is not None else None
        purpose = opener.purpose if opener is not None else None
        order = await orders.active_in_compartment(session, c.id)
        now = utcnow()
        if (
            order is not None
            and order.state in (OrderState.READY, OrderState.DEPOSITED, OrderState.DISINFECTING)
            and purpose is openings.OpenPurpose.DISCARD
            and order.code_used_at is None  # her code opened it since: she took it
        ):
            await self._discarded(session, kiosk, c, order, who)
        elif order is not None and order.state == OrderState.READY:
            # Handed to her by staff, as the operator said; or, unsaid, taken out by staff
            # after a heater fault, as everyone was told: not collected; or taken out while
            # staff looked in, her code unused: not handed to her as far as anyone said.
            if purpose is openings.OpenPurpose.HANDOVER:
                await self._picked_up(session, order, who, now)
            elif await self._taken_out_after_fault(session, c, order, who):
                pass
            elif (
                purpose is openings.OpenPurpose.INSPECT
                and order.code_used_at is None
                and not await self._her_lock_jammed(session, c, order)
            ):
                await self._taken_out_on_inspection(session, kiosk, c, order, who)
            else:
                await self._picked_up(session, order, who, now)
        elif order is not None and order.state in (OrderState.DEPOSITED, OrderState.DISINFECTING):
            await orders.transition(
                session,
                order,
                OrderTrigger.FAIL,
                actor_type="kiosk",
                actor_id=kiosk.code,
                failure_reason="the food was taken out before the cycle finished",
                closed_at=now,
            )
            told = exceptions.decide(exceptions.Exceptional.REMOVED_EARLY)
            await self._alert(
                session,
                kiosk,
                c,
                told,
                told.operator_message,
                dedupe_key=f"{told.alert_kind}:{order.id}",
            )
            if told.merchant_event is not None:
                orders.add_notice(
                    session,
                    order.id,
                    "kiosk",
                    kiosk.code,
                    told.merchant_event,
                    told.merchant_message.format(ref=order.external_ref, fault=""),
                    {"by": who},
                )
            if told.purchaser_message is not None:
                await outbox.enqueue(
                    session,
                    order,
                    told.purchaser_message,
                    where=await self.where(session, kiosk, c),
                    deadline=None,
                )
        else:
            ended = await orders.expired_in_compartment(session, c.id)
            if ended is not None and await self._collected_before_end(session, kiosk, c, ended):
                order = ended  # picked up after all: published with the compartment
            elif ended is not None:
                detail = {"by": who, **({"purpose": purpose.value} if purpose else {})}
                orders.add_event(session, ended.id, "kiosk", kiosk.code, "removed", detail)
        await timers.cancel(session, [TimerKind.CYCLE_WATCHDOG], compartment_id=c.id)
        running = await self.running_cycle(session, c)
        if running is not None:
            running.state, running.finished_at = "aborted", now
        await compartments.transition(session, c, CompartmentTrigger.EMPTY)
        timers.schedule(session, TimerKind.START_CLEANING, now, compartment_id=c.id)
        if c.fault is None:  # a fault cleared with food inside: its task is done with the food
            await resolve_alerts(session, f"compartment_fault:{c.id}", self.ctx.hub)
        self._publish(session, kiosk, c, order)

    async def _picked_up(
        self, session: AsyncSession, order: Order, who: str | None, now: datetime
    ) -> None:
        actor = "purchaser" if order.code_used_at is not None else (who or "unknown")
        await orders.transition(
            session,
            order,
            OrderTrigger.PICK_UP,
            actor_type=actor.split(":")[0],
            actor_id=actor,
            picked_up_at=now,
        )
        await timers.cancel(session, [TimerKind.REMINDER, TimerKind.HOLD_EXPIRY], order_id=order.id)

    async def _discarded(
        self, session: AsyncSession, kiosk: Kiosk, c: Compartment, order: Order, who: str | None
    ) -> None:
        """An operator opened the compartment to discard the food and took it out (ADR 0120):
        the order fails saying so; the operator's own act raises no alert."""
        ready = order.state == OrderState.READY
        what = DISCARDED if ready else f"{DISCARDED} before it was ready"
        await self._taken_out_by_staff(
            session, kiosk, c, order, who, what, exceptions.Exceptional.DISCARDED_BY_STAFF
        )

    async def _taken_out_on_inspection(
        self, session: AsyncSession, kiosk: Kiosk, c: Compartment, order: Order, who: str | None
    ) -> None:
        """An operator opened her ready order's compartment to look in, which was to leave the
        food in, and the door shut on it empty, her code unused (ADR 0129). Nobody said it was
        handed to her: not her pickup, and the operator's alert asks where the food went."""
        await self._taken_out_by_staff(
            session,
            kiosk,
            c,
            order,
            who,
            TAKEN_OUT_ON_INSPECTION,
            exceptions.Exceptional.TAKEN_OUT_ON_INSPECTION,
        )

    async def _her_lock_jammed(self, session: AsyncSession, c: Compartment, order: Order) -> bool:
        """Her door's lock did not open for her code since she was ready: her code was given
        back unopened, and the jam is latched still or she was told of it ("staff will contact
        you"; she waits at the locker). Staff who open it to look in (to mend the lock) free
        her door: the food leaving is her pickup, as it was before ADR 0129. A jam of staff's
        own opening, her code never tried, is not hers."""
        since = order.ready_at
        if await orders.event_since(session, order, CODE_RETURNED, since) is None:
            return False
        if c.fault == LOCK_JAMMED:
            return True
        jammed = exceptions.decide(exceptions.Exceptional.LOCK_JAMMED).merchant_event
        return (
            jammed is not None
            and await orders.notice_since(session, order, jammed, since) is not None
        )

    async def _taken_out_by_staff(
        self,
        session: AsyncSession,
        kiosk: Kiosk,
        c: Compartment,
        order: Order,
        who: str | None,
        what: str,
        exception: exceptions.Exceptional,
    ) -> None:
        """Staff took the food out, not for her: the order fails with `what` (and the fault
        she was told of, if any). She is told it cannot be collected, unless she was told of a
        fault (staff would contact her: her page keeps saying it); the merchant hears
        `order.failed` with the exception's notice; the operator gets its alert, if it has
        one."""
        fault = await self.fault_told(session, c, order)
        reason = after_fault_reason(what, fault) if fault is not None else what
        await self._failed_by_staff(session, order, who, reason)
        told = exceptions.decide(exception)
        await self._alert(
            session,
            kiosk,
            c,
            told,
            told.operator_message.format(ref=order.external_ref, why=reason, fault=""),
            dedupe_key=f"{told.alert_kind}:{order.id}",
        )
        if told.merchant_event is not None:
            orders.add_notice(
                session,
                order.id,
                "operator",
                who,
                told.merchant_event,
                told.merchant_message.format(ref=order.external_ref, why=reason, fault=""),
                {"reason": reason},
            )
        if told.purchaser_message is not None and fault is None:
            await outbox.enqueue(
                session,
                order,
                told.purchaser_message,
                where=await self.where(session, kiosk, c),
                deadline=None,
            )

    async def _taken_out_after_fault(
        self, session: AsyncSession, c: Compartment, order: Order, who: str | None
    ) -> bool:
        """Staff emptied a ready order's compartment, not through her code, while its heater or
        probe fault is latched: the food was no longer kept hot, and everyone was told staff
        would take it out and contact her (ADR 0047). It was not collected: the order fails
        with that reason, and the merchant hears `order.failed`, never `order.picked_up`.
        False, changing nothing, for anything else: her code opened it; a jammed lock staff
        opened for her; a lamp fault on food already disinfected and still hot, or a fault
        cleared since, where staff may well have handed her the food."""
        fault = c.fault
        if order.code_used_at is not None or fault is None or keeps_food_hot(fault):
            return False
        # The food no longer kept hot: taken out, not handed to her.
        await self._failed_by_staff(
            session, order, who, after_fault_reason(TAKEN_OUT_BY_STAFF, fault)
        )
        return True

    async def _failed_by_staff(
        self, session: AsyncSession, order: Order, who: str | None, reason: str
    ) -> None:
        """Staff took the food out, not for her: the order fails, nothing of it left to run."""
        await orders.transition(
            session,
            order,
            OrderTrigger.FAIL,
            actor_type=(who or "unknown").split(":")[0],
            actor_id=who,
            failure_reason=reason,
            closed_at=utcnow(),
        )
        await timers.cancel(session, ORDER_TIMERS, order_id=order.id)

    async def fault_told(self, session: AsyncSession, c: Compartment, order: Order) -> str | None:
        """The heater or lamp fault she was told of (staff would contact her): latched now, or
        told of and cleared since. For a ready order, only since it was ready: one told before
        she was told her food was ready (a lamp replaced and its cycle run again) is not."""
        return latched_food_fault(c) or await orders.fault_told(session, order, order.ready_at)

    async def expire_after_fault(self, session: AsyncSession, order: Order, fault: str) -> None:
        """Her hold is over after a fault she was told of: not "not collected in time" (she was
        told staff would contact her), no message to her, the operator's task to take the food
        out, and the merchant told why (ADR 0047)."""
        reason = after_fault_reason("not collected by the end of its hold", fault)
        await self._end(session, order, reason, exceptions.Exceptional.EXPIRED_AFTER_FAULT)

    async def _collected_before_end(
        self, session: AsyncSession, kiosk: Kiosk, c: Compartment, order: Order
    ) -> bool:
        """The door shut on an empty compartment after her code, used before the order expired,
        opened it: the expiry was wrong (ADR 0112). The kiosk decided her pickup while cut off
        and told us after the hold ran out or the food check found no reading; or her door was
        open as the hold ran out. The order is corrected to picked up and each person told: the
        purchaser that her collection stands (if she was told otherwise), the merchant by a
        notice and the `order.picked_up` webhook, the operator's task to discard resolved.
        Only when the opening this closing ends is her pickup's, opened after her code's use:
        False, changing nothing, for anything else (staff emptying an expired compartment, even
        after she had opened it and left the food)."""
        used = order.code_used_at
        if used is None or not pickup_offline.before_end(order, used):
            return False
        last = await pickup_repository.last_opening(session, c.id)
        if (
            last is None
            or last.order_id != order.id
            or last.why != "pickup"
            or not last.who.startswith("purchaser")  # an operator may type "pickup" as a reason
            or last.door_opened_at is None
            # Authorised on the clock her code's use was stamped on (the door's time is the
            # kiosk's): this opening is her use's, not an earlier one of hers.
            or last.at < used - doors.CLOCK_SKEW
        ):
            return False  # the door that shut was not opened by her pickup
        unsafe = order.food_unsafe_at is not None
        # When her door opened (the kiosk's time, never ahead of ours), not when the service
        # heard: the food's record ends there.
        picked_up_at = min(last.door_opened_at, utcnow())
        await orders.transition(
            session,
            order,
            OrderTrigger.PICKED_UP_BEFORE_END,
            actor_type="purchaser",
            actor_id=last.who,
            detail=pickup_offline.correction(order, used, picked_up_at),
            picked_up_at=picked_up_at,
            closed_at=None,
            failure_reason=None,
            food_unsafe_at=None,
        )
        for exception in (
            exceptions.Exceptional.EXPIRED_UNCOLLECTED,
            exceptions.Exceptional.FOOD_UNSAFE,
        ):
            kind = exceptions.decide(exception).alert_kind
            await resolve_alerts(session, f"{kind}:{order.id}", self.ctx.hub)
        said = "could no longer be collected" if unsafe else "had expired"
        orders.add_notice(
            session,
            order.id,
            "kiosk",
            kiosk.code,
            "collected_before_end",
            f"order {order.external_ref} was collected at {used:%Y-%m-%d %H:%M:%S} UTC, before "
            "it expired; the locker could only tell the service later. The earlier notice that "
            f"it {said} is withdrawn: there is no food to discard",
            {"collected_at": used.isoformat()},
        )
        withdrawn = await outbox.withdraw(session, order, outbox.UNTRUE_ONCE_COLLECTED)
        for row_id in withdrawn.given_up:  # nothing left for an operator to resend
            await resolve_alerts(session, f"{UNDELIVERABLE_ALERT}:{row_id}", self.ctx.hub)
        if withdrawn.may_have_reached:
            await outbox.enqueue(
                session,
                order,
                "collected",
                where=await self.where(session, kiosk, c),
                deadline=None,
            )
        return True

    async def left_inside(self, session: AsyncSession, kiosk: Kiosk, order: Order) -> None:
        """The purchaser opened and shut the door without taking the food: code valid again."""
        await orders.mark_code_used(session, order, None)
        orders.add_event(session, order.id, "kiosk", kiosk.code, "left_inside", {})

    # -- ends -------------------------------------------------------------------------------

    async def expire(self, session: AsyncSession, order: Order, reason: str) -> None:
        """The order ran out of time: never dropped off, or its food not collected.

        Each person is told as `exceptions` decides: the purchaser that it expired and will be
        discarded (not that it was removed: it is still behind the door), the merchant by a
        notice on the order, the operator by an alert that is the task to empty the
        compartment.
        """
        deposited = order.deposited_at is not None and order.compartment_id is not None
        await self._end(session, order, reason, exceptions.expiry_exception(deposited))

    async def spoil(
        self,
        session: AsyncSession,
        order: Order,
        verdict: Unsafe,
        seen: watch.Watch | None = None,
    ) -> None:
        """The food is no longer safe (an excursion below the profile's floor, no temperature
        for too long, its time up before it was ready): the order ends as `expired` with the
        reason, its code opens nothing, and everyone is told as for an expiry but with why;
        the operator's alert is the task to discard it (an audited opening)."""
        await self._end(
            session,
            order,
            f"food no longer safe: {verdict.why}",
            exceptions.Exceptional.FOOD_UNSAFE,
            food_unsafe_at=verdict.at,
            **({"food_watch": seen.to_json()} if seen is not None else {}),
        )

    async def _end(
        self,
        session: AsyncSession,
        order: Order,
        reason: str,
        exception: exceptions.Exceptional,
        **values: Any,
    ) -> None:
        deposited = order.deposited_at is not None and order.compartment_id is not None
        told = exceptions.decide(exception)
        await orders.transition(
            session,
            order,
            OrderTrigger.EXPIRE,
            actor_type="system",
            detail={"reason": reason},
            closed_at=utcnow(),
            failure_reason=reason,
            **values,
        )
        await timers.cancel(session, ORDER_TIMERS, order_id=order.id)
        publish_after_commit(session, self.ctx.hub, "order", live_view(order), order.site_id)
        if told.merchant_event is not None:
            orders.add_notice(
                session,
                order.id,
                "system",
                None,
                told.merchant_event,
                told.merchant_message.format(ref=order.external_ref, fault="", why=reason),
                {"reason": reason},
            )
        found = (
            await compartments.with_kiosk(session, order.compartment_id)
            if deposited and order.compartment_id is not None
            else None
        )
        where = await self.where(session, found[1], found[0]) if found else None
        if told.purchaser_message is not None:
            await outbox.enqueue(session, order, told.purchaser_message, where=where, deadline=None)
        if found is None:
            return
        c, kiosk = found
        await self._alert(
            session,
            kiosk,
            c,
            told,
            told.operator_message.format(ref=order.external_ref, fault="", why=reason),
            dedupe_key=f"{told.alert_kind}:{order.id}",
        )

    async def _compartment_task(
        self, session: AsyncSession, kiosk: Kiosk, c: Compartment, what: str
    ) -> None:
        """The compartment's one operator task (`compartment_fault`), at warning level."""
        await raise_compartment_alert(
            session,
            self.ctx.hub,
            kiosk,
            c,
            kind="compartment_fault",
            severity="warning",
            what=what,
            dedupe_key=f"compartment_fault:{c.id}",
        )

    async def _alert(
        self,
        session: AsyncSession,
        kiosk: Kiosk,
        c: Compartment,
        told: exceptions.Told,
        what: str,
        *,
        dedupe_key: str,
    ) -> None:
        """The operator's alert of an exception, when it has one."""
        if told.alert_kind is not None:
            await raise_compartment_alert(
                session,
                self.ctx.hub,
                kiosk,
                c,
                kind=told.alert_kind,
                severity=told.severity,
                what=what,
                dedupe_key=dedupe_key,
            )
