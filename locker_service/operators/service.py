"""Operator actions: remote open (reason required, audited), service status, kill switch."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.alerts.catalogue import LAMP_LIFE_ALERT
from locker_service.alerts.service import raise_alert, resolve_alerts
from locker_service.api.deps import OperatorPrincipal
from locker_service.compartments import openings
from locker_service.compartments import repository as compartments
from locker_service.compartments import service as doors
from locker_service.compartments.lifecycle import (
    FOOD_INSIDE,
    CompartmentState,
    CompartmentTrigger,
)
from locker_service.context import ServiceContext
from locker_service.db import session_scope
from locker_service.errors import Conflict, Forbidden, NotFound
from locker_service.events import publish_after_commit
from locker_service.foodsafety.faults import keeps_food_hot
from locker_service.models import Compartment, Kiosk, Order, Site, utcnow
from locker_service.operators.notes import signed
from locker_service.orders import outbox, webhooks
from locker_service.orders import repository as orders
from locker_service.orders.lifecycle import HOLD_GIVEN_BACK, OrderState
from locker_service.orders.outbox import RESUMED
from locker_service.orders.schemas import live_view
from locker_service.orders.webhooks import HOLD_EXTENDED
from locker_service.pickup.service import KillSwitchEngaged
from locker_service.timers import service as timers
from locker_service.timers.service import TimerKind

log = logging.getLogger(__name__)


async def _load(ctx: ServiceContext, compartment_id: int) -> tuple[Compartment, Kiosk, Site]:
    async with ctx.sessionmaker() as session:
        found = await compartments.with_kiosk(session, compartment_id)
        if found is None:
            raise NotFound(f"no compartment {compartment_id}")
        compartment, kiosk = found
        site = await session.get(Site, kiosk.site_id)
        assert site is not None
        return compartment, kiosk, site


ABORT_AND_OPEN = "abort the cycle and open"  # the dashboard's words for override_cycle


async def remote_open(
    ctx: ServiceContext,
    principal: OperatorPrincipal,
    compartment_id: int,
    reason: str,
    override_cycle: bool,
    purpose: openings.OpenPurpose | None = None,
) -> tuple[Compartment, str]:
    """Open a door from the dashboard or the API, for the reason and (ADR 0120) the purpose
    the operator gives: one that does not fit the compartment's food is refused before anything
    is written or sent. Without a purpose (an older client), the door's closing is read as
    before: from the compartment's latched fault (ADR 0047)."""
    compartment, kiosk, site = await _load(ctx, compartment_id)
    if principal.merchant_ids is None:
        principal.require_act(site.id)
    else:  # an operator for merchants opens only a compartment holding one of their orders
        async with ctx.sessionmaker() as session:
            inside = await orders.food_in_compartment(session, compartment.id)
        principal.require_act_on_order(site.id, inside.merchant_id if inside else None)
    if site.kill_switch_engaged:
        raise KillSwitchEngaged("remote openings are frozen at this site (kill switch)")
    if compartment.state == CompartmentState.DISINFECTING and not override_cycle:
        raise Conflict(
            "a disinfection cycle is running: use 'abort the cycle and open' "
            "(override_cycle) to abort it and open",
            code="cycle_running",
        )
    async with session_scope(ctx.sessionmaker) as session:
        order = await orders.food_in_compartment(session, compartment.id)
        if purpose is not None:
            # Said what it is for: about the food inside, not an order whose food is gone.
            order = order if compartment.state in FOOD_INSIDE else None
            _check_purpose(purpose, compartment, order)
        opening = doors.authorise(
            session,
            compartment,
            who=openings.operator(principal.id),
            # The audit says the cycle was aborted for this opening (ADR 0047).
            why=f"{ABORT_AND_OPEN}: {reason}" if override_cycle else reason,
            order_id=order.id if order else None,
        )
        opening.purpose = purpose
        if order is not None:
            orders.add_event(
                session,
                order.id,
                "operator",
                str(principal.id),
                "remote_open",
                {
                    "reason": reason,
                    **({"purpose": purpose.value} if purpose is not None else {}),
                    **({"aborted_cycle": True} if override_cycle else {}),
                },
            )
        await session.flush()
        authorised = doors.Authorised.of(opening)
    reply = await doors.unlock(ctx, kiosk, compartment, authorised, override_cycle=override_cycle)
    return compartment, reply.request_id


def _check_purpose(
    purpose: openings.OpenPurpose, compartment: Compartment, order: Order | None
) -> None:
    """Raise a `Conflict` when the purpose does not fit the food in the compartment."""
    hold_until = order.hold_until if order is not None else None
    refused = openings.purpose_refusal(
        purpose,
        order_state=order.state if order is not None else None,
        occupied=compartment.occupied,
        kept_hot=keeps_food_hot(compartment.fault),
        food_unsafe=order is not None and order.food_unsafe_at is not None,
        hold_over=hold_until is not None and utcnow() >= hold_until,
    )
    if refused is not None:
        raise Conflict(refused.message, code=refused.code)


async def set_out_of_service(
    ctx: ServiceContext, principal: OperatorPrincipal, compartment_id: int, reason: str | None
) -> Compartment:
    async with session_scope(ctx.sessionmaker) as session:
        found = await compartments.with_kiosk(session, compartment_id)
        if found is None:
            raise NotFound(f"no compartment {compartment_id}")
        compartment, kiosk = found
        principal.require_act(kiosk.site_id)
        if reason is not None:
            await compartments.transition(
                session,
                compartment,
                CompartmentTrigger.TAKE_OUT_OF_SERVICE,
                out_of_service_reason=signed(reason, principal.id),
            )
        else:
            await compartments.transition(
                session, compartment, CompartmentTrigger.BACK_IN_SERVICE, out_of_service_reason=None
            )
        publish_after_commit(
            session,
            ctx.hub,
            "compartment",
            {
                "id": compartment.id,
                "kiosk_id": kiosk.id,
                "number": compartment.number,
                "state": compartment.state,
            },
            kiosk.site_id,
        )
        return compartment


async def lamp_replaced(
    ctx: ServiceContext, principal: OperatorPrincipal, compartment_id: int, note: str
) -> Compartment:
    """A new UV-C lamp fitted: its hours start again, with who fitted it and a note (the lamp's
    make, say), and the alert that asked for it is resolved."""
    async with session_scope(ctx.sessionmaker) as session:
        found = await compartments.with_kiosk(session, compartment_id)
        if found is None:
            raise NotFound(f"no compartment {compartment_id}")
        compartment, kiosk = found
        principal.require_act(kiosk.site_id)
        # Asked of the old lamp, before the new one's fitting starts a fresh count.
        failed = await compartments.lamp_has_failed(
            session, compartment, ctx.settings.uv_max_short_cycles
        )
        compartment.lamp_on_s = 0.0
        compartment.lamp_fitted_at = utcnow()
        compartment.lamp_fitted_by = signed(note, principal.id)
        await resolve_alerts(session, f"{LAMP_LIFE_ALERT}:{compartment.id}", ctx.hub)
        again = failed and await _cycle_again(session, ctx, compartment)
        log.info(
            "operator %s: new UV-C lamp in %s compartment %s (%s)",
            principal.id,
            kiosk.code,
            compartment.number,
            note,
        )
    if again and ctx.timers is not None:
        ctx.timers.wake()  # committed: the cycle starts now, not at the loop's next look
    return compartment


async def _cycle_again(session: AsyncSession, ctx: ServiceContext, c: Compartment) -> bool:
    """A new lamp in a compartment whose cycles stopped because the old one failed (ADR 0073):
    its cycle starts again now, and the lamp's fault alert is resolved (a board fault, if any,
    keeps its own until cleared: no cycle starts under it)."""
    if c.fault is not None or await compartments.running_cycle(session, c.id) is not None:
        return False
    if c.state == CompartmentState.DISINFECTING:
        order = await orders.active_in_compartment(session, c.id)
        if order is None:
            return False
        timers.schedule(
            session, TimerKind.START_HOLD_CYCLE, utcnow(), order_id=order.id, compartment_id=c.id
        )
    elif c.state == CompartmentState.CLEANING:
        timers.schedule(session, TimerKind.START_CLEANING, utcnow(), compartment_id=c.id)
    else:
        return False
    await resolve_alerts(session, f"compartment_fault:{c.id}", ctx.hub)
    return True


async def kill_switch(
    ctx: ServiceContext, principal: OperatorPrincipal, site_id: int, engaged: bool, reason: str
) -> Site:
    async with session_scope(ctx.sessionmaker) as session:
        # FOR NO KEY UPDATE: a story's transaction adding an alert at the site (a key share of
        # the row) goes on while the release locks the site's ready orders (ADR 0123).
        site = await session.scalar(
            select(Site).where(Site.id == site_id).with_for_update(key_share=True)
        )
        if site is None:
            raise NotFound(f"no site {site_id}")
        principal.require_act(site.id)
        await _switch(session, ctx, site, engaged, signed(reason, principal.id))
        return site


FREEZE_ALL_KEY = "kill_switch:all"  # the one alert of a freeze of every site


async def _give_back_holds(
    session: AsyncSession, ctx: ServiceContext, site: Site, engaged_at: datetime
) -> None:
    """The site's codes open again (ADR 0123): each ready order gets back the time its code
    was refused during its hold, and at least the purchaser's minimum window from now, never
    past its food's safety deadline; she is told until when. Its hold's end waited meanwhile
    (the expiry does not end a hold while codes are refused)."""
    now = utcnow()
    window = timedelta(seconds=ctx.settings.scaled(ctx.settings.food_min_pickup_window_s))
    ready = await session.scalars(
        select(Order)
        .where(Order.site_id == site.id, Order.state == OrderState.READY)
        .with_for_update()
    )
    for order in ready.all():
        if order.hold_until is None or order.ready_at is None:
            continue
        refused = now - max(engaged_at, order.ready_at)
        until = max(order.hold_until + max(refused, timedelta(0)), now + window)
        if order.food_deadline is not None:
            until = min(until, order.food_deadline)
        until = max(until, order.hold_until)
        moved = until > order.hold_until
        order.hold_until = until
        order.updated_at = now  # the offline supply carries the new end (ADR 0077)
        orders.add_event(
            session,
            order.id,
            "system",
            None,
            HOLD_GIVEN_BACK,
            {
                "paused_s": refused.total_seconds(),
                "hold_until": until.isoformat(),
                "over": until <= now,
            },
        )
        await timers.cancel(session, [TimerKind.HOLD_EXPIRY], order_id=order.id)
        timers.schedule(session, TimerKind.HOLD_EXPIRY, until, order_id=order.id)
        # The operators' live views read the order again (its hold's end) once this commits.
        publish_after_commit(session, ctx.hub, "order", live_view(order), order.site_id)
        if until <= now:
            continue  # over already: its expiry ends it, and the merchant hears of that end
        if moved:  # the merchant's copy of her hold's end moves too, once per release
            key = f"kill-switch-{engaged_at.isoformat()}"
            await webhooks.enqueue(session, order, HOLD_EXTENDED, key=key)
        if order.code_used_at is not None:
            continue  # her door is opening now: its closing decides
        found = (
            await compartments.with_kiosk(session, order.compartment_id)
            if order.compartment_id is not None
            else None
        )
        if await _told_of_fault(session, order, found[0] if found else None):
            continue  # told staff would contact her: not "it is waiting for you"
        place = outbox.Place(site.name, found[1].name, found[0].number) if found else None
        await outbox.enqueue(session, order, RESUMED, where=place, deadline=until)


async def _told_of_fault(session: AsyncSession, order: Order, c: Compartment | None) -> bool:
    """A fault latched in her compartment, or one she was told of since she was ready."""
    if c is not None and c.fault is not None:
        return True
    return await orders.fault_told(session, order, order.ready_at) is not None


async def freeze_all(
    ctx: ServiceContext, principal: OperatorPrincipal, engaged: bool, reason: str
) -> list[Site]:
    """Engage (or release) the kill switch of every site at once: admins only.

    Audited three ways in the one transaction: each site keeps who froze it, why and when (as a
    single site's switch does), each site's `kill_switch` alert, and one `kill_switch_all` alert
    naming the admin and the reason; released, the alerts resolve.
    """
    if principal.role != "admin":
        raise Forbidden("only an admin may freeze every site", code="admin_only")
    async with session_scope(ctx.sessionmaker) as session:
        sites = list(
            (
                await session.scalars(
                    select(Site).order_by(Site.id).with_for_update(key_share=True)
                )
            ).all()
        )
        why = signed(reason, principal.id, every_site=True)
        for site in sites:
            await _switch(session, ctx, site, engaged, why)
        if engaged:
            await raise_alert(
                session,
                kind="kill_switch_all",
                severity="critical",
                message=(
                    f"kill switch engaged at every site ({len(sites)}) by "
                    f"{principal.operator.name} (admin {principal.id}): {reason}"
                ),
                dedupe_key=FREEZE_ALL_KEY,
                hub=ctx.hub,
            )
        else:
            await resolve_alerts(session, FREEZE_ALL_KEY, ctx.hub)
        log.warning(
            "admin %s %s every site (%d): %s",
            principal.id,
            "froze" if engaged else "unfroze",
            len(sites),
            reason,
        )
        return sites


async def _switch(
    session: AsyncSession, ctx: ServiceContext, site: Site, engaged: bool, reason: str
) -> None:
    if site.kill_switch_engaged and not engaged and site.kill_switch_at is not None:
        await _give_back_holds(session, ctx, site, site.kill_switch_at)
    if engaged != site.kill_switch_engaged:  # engaged again: it has held since the first
        site.kill_switch_at = utcnow()
    site.kill_switch_engaged = engaged
    site.kill_switch_reason = reason
    key = f"kill_switch:{site.id}"
    if engaged:
        await raise_alert(
            session,
            kind="kill_switch",
            severity="critical",
            message=f"kill switch engaged at {site.name}: {reason}",
            dedupe_key=key,
            site_id=site.id,
            hub=ctx.hub,
        )
    else:
        await resolve_alerts(session, key, ctx.hub)
    publish_after_commit(
        session,
        ctx.hub,
        "site",
        {"id": site.id, "kill_switch_engaged": engaged, "reason": site.kill_switch_reason},
        site.id,
    )
