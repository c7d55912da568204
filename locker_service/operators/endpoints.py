"""Operator endpoints (Bearer operator token, scoped to sites): views, alerts, actions."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from locker_service.alerts import service as alerts
from locker_service.api.deps import ContextDep, IdPath, OperatorDep, SessionDep
from locker_service.bounds import INT4_MAX, Text
from locker_service.compartments import repository as compartments
from locker_service.compartments.lifecycle import CompartmentState
from locker_service.config import Settings
from locker_service.dropoff import service as dropoff
from locker_service.errors import Conflict, Forbidden, NotFound, Unprocessable
from locker_service.foodsafety import profiles
from locker_service.models import Alert, Compartment, Kiosk, Order, Site, SiteOncall, utcnow
from locker_service.notifications import oncall_lists
from locker_service.notifications import resend as resending
from locker_service.operators import fleet, service
from locker_service.operators.schemas import (
    AlertRead,
    CompartmentRead,
    CorrectiveAction,
    FleetCounts,
    FleetKiosk,
    FleetPage,
    FoodSafetyRead,
    KillSwitchRequest,
    KioskDetail,
    KioskSummary,
    OncallLists,
    OncallRead,
    OpenAlerts,
    OpenAnswer,
    OpenRequest,
    OperatorMe,
    OrderInside,
    OrderRow,
    Reason,
    ResendAnswer,
    ResendRequest,
    SiteRead,
)
from locker_service.orders import repository as orders
from locker_service.orders.lifecycle import OrderState
from locker_service.telemetry import record
from locker_service.telemetry.record import FoodRecord

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/operator", tags=["operator"])


@router.get("/me", response_model=OperatorMe)
async def me(principal: OperatorDep) -> OperatorMe:
    """The signed-in operator: name and role."""
    return OperatorMe(
        id=principal.id,
        name=principal.operator.name,
        role=principal.role,
        merchant_ids=sorted(principal.merchant_ids) if principal.merchant_ids is not None else None,
    )


@router.get("/sites", response_model=list[SiteRead])
async def sites(principal: OperatorDep, session: SessionDep, ctx: ContextDep) -> list[SiteRead]:
    query = select(Site).order_by(Site.code)
    if principal.site_ids is not None:
        query = query.where(Site.id.in_(principal.site_ids))
    result = []
    for site in (await session.scalars(query)).all():
        rows = await session.execute(
            select(
                Kiosk,
                func.count(Compartment.id),
                func.count(Compartment.id).filter(
                    Compartment.state == CompartmentState.AVAILABLE.value
                ),
            )
            .outerjoin(Compartment, Compartment.kiosk_id == Kiosk.id)
            .where(Kiosk.site_id == site.id)
            .group_by(Kiosk.id)
            .order_by(Kiosk.code)
        )
        kiosks = [
            KioskSummary(
                id=k.id,
                code=k.code,
                name=k.name,
                online=k.online,
                last_seen_at=k.last_seen_at,
                compartments_total=total,
                compartments_free=free,
            )
            for k, total, free in rows.all()
        ]
        result.append(_site_read(ctx.settings, site, kiosks))
    return result


@router.get("/fleet", response_model=FleetPage)
async def fleet_view(
    principal: OperatorDep,
    session: SessionDep,
    ctx: ContextDep,
    q: Annotated[
        Text | None, Query(max_length=128, description="part of a kiosk's or site's code or name")
    ] = None,
    site_id: Annotated[int | None, Query(ge=1, le=INT4_MAX)] = None,
    trouble: Annotated[bool, Query(description="only kiosks with trouble")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT4_MAX)] = 0,
) -> FleetPage:
    """Every kiosk in scope, troubled first: offline, then compartments in fault, food at
    risk, open alerts (critical, warning, info), then by name. Paged by `limit`/`offset`."""
    if site_id is not None:
        principal.require_site(site_id)
    settings = ctx.settings
    page = await fleet.fleet_page(
        session,
        fleet.FleetQuery(
            site_ids=principal.site_ids,
            site_id=site_id,
            q=q.strip() or None if q else None,
            trouble_only=trouble,
            limit=limit,
            offset=offset,
        ),
        now=ctx.clock(),
        floors={name: profiles.for_site(settings, name).floor_c for name in profiles.PROFILE_NAMES},
        reminder_after_s=settings.scaled(settings.reminder_after_s),
    )
    return FleetPage(
        offset=offset,
        limit=limit,
        counts=FleetCounts(
            kiosks=page.counts.kiosks,
            offline=page.counts.offline,
            faulted=page.counts.faulted,
            food_at_risk=page.counts.food_at_risk,
            alerting=page.counts.alerting,
        ),
        kiosks=[
            FleetKiosk(
                id=r.id,
                code=r.code,
                name=r.name,
                site_id=r.site_id,
                site_code=r.site_code,
                site_name=r.site_name,
                online=r.online,
                status_since=r.status_since,
                last_seen_at=r.last_seen_at,
                compartments_total=r.compartments_total,
                compartments_free=r.compartments_free,
                compartments_faulted=r.compartments_faulted,
                food_at_risk=r.food_at_risk,
                open_alerts=OpenAlerts(
                    critical=r.alerts_critical, warning=r.alerts_warning, info=r.alerts_info
                ),
                trouble=r.trouble,
            )
            for r in page.rows
        ],
    )


@router.get("/kiosks/{kiosk_id}", response_model=KioskDetail)
async def kiosk(kiosk_id: IdPath, principal: OperatorDep, session: SessionDep) -> KioskDetail:
    found = await session.get(Kiosk, kiosk_id)
    if found is None:
        raise NotFound(f"no kiosk {kiosk_id}")
    principal.require_site(found.site_id)
    now = utcnow()
    rows = []
    for c in await compartments.of_kiosk(session, found.id):
        order = await orders.active_in_compartment(session, c.id)
        inside = None
        if order is not None and principal.sees_order(order.site_id, order.merchant_id):
            waited = (now - order.deposited_at).total_seconds() if order.deposited_at else None
            inside = OrderInside(
                id=order.id,
                external_ref=order.external_ref,
                state=order.state,
                purchaser_name=order.purchaser_name,
                deposited_at=order.deposited_at,
                ready_at=order.ready_at,
                hold_until=order.hold_until,
                waited_s=waited,
                food_deadline=order.food_deadline,
            )
        rows.append(CompartmentRead.model_validate({**_columns(c), "order": inside}))
    return KioskDetail(
        id=found.id,
        code=found.code,
        name=found.name,
        site_id=found.site_id,
        online=found.online,
        boot_id=found.boot_id,
        fw=found.fw,
        last_seen_at=found.last_seen_at,
        compartments=rows,
    )


def _alert(a: Alert) -> AlertRead:
    return AlertRead.model_validate(alerts.alert_view(a))


@router.get("/alerts", response_model=list[AlertRead])
async def list_alerts(
    principal: OperatorDep,
    session: SessionDep,
    state: Annotated[str | None, Query(pattern="^(open|acknowledged|resolved)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AlertRead]:
    holding = (
        await orders.compartments_holding(session, principal.merchant_ids)
        if principal.merchant_ids is not None
        else None
    )
    found = await alerts.list_alerts(session, principal.site_ids, state, limit, holding)
    return [_alert(a) for a in found]


@router.post("/alerts/{alert_id}/ack", response_model=AlertRead)
async def ack_alert(
    alert_id: IdPath, principal: OperatorDep, session: SessionDep, ctx: ContextDep
) -> AlertRead:
    alert = await session.get(Alert, alert_id)
    if alert is None or not principal.can_see(alert.site_id):
        raise NotFound(f"no alert {alert_id}")
    principal.require_act(alert.site_id)
    return _alert(await alerts.acknowledge(session, alert_id, principal.id, ctx.hub))


@router.post("/alerts/{alert_id}/corrective-action", response_model=AlertRead)
async def corrective_action(
    alert_id: IdPath,
    body: CorrectiveAction,
    principal: OperatorDep,
    session: SessionDep,
    ctx: ContextDep,
) -> AlertRead:
    """Record what was done about an alert (the HACCP record's corrective action); an open
    alert is acknowledged with it."""
    alert = await session.get(Alert, alert_id)
    if alert is None or not principal.can_see(alert.site_id):
        raise NotFound(f"no alert {alert_id}")
    principal.require_act(alert.site_id)
    who = f"operator:{principal.id} ({principal.operator.name})"
    return _alert(
        await alerts.record_action(session, alert, body.action, principal.id, who, ctx.hub)
    )


@router.post("/alerts/{alert_id}/lift-lockout", response_model=AlertRead)
async def lift_lockout(
    alert_id: IdPath, body: Reason, principal: OperatorDep, session: SessionDep, ctx: ContextDep
) -> AlertRead:
    """Lift the lockout a `courier_locked_out` alert names: it is him, with the food (the
    reason says how the operator knows). His wrong PINs until now no longer count; the alert
    is resolved with the action recorded."""
    alert = await session.get(Alert, alert_id)
    if alert is None or not principal.can_see(alert.site_id):
        raise NotFound(f"no alert {alert_id}")
    principal.require_act(alert.site_id)
    courier_id = dropoff.courier_of_lockout(alert.dedupe_key)
    if courier_id is None or alert.state == "resolved":
        raise Conflict("this alert is not an open courier lockout", code="not_a_lockout")
    courier = await dropoff.lift_lockout(session, courier_id)
    who = f"operator:{principal.id} ({principal.operator.name})"
    await alerts.record_action(
        session, alert, f"lockout lifted: {body.reason}", principal.id, who, ctx.hub
    )
    await alerts.resolve_alerts(session, alert.dedupe_key, ctx.hub)
    log.info("operator %s lifted courier %s's lockout: %s", principal.id, courier.code, body.reason)
    return _alert(alert)


@router.post("/compartments/{compartment_id}/open", response_model=OpenAnswer)
async def open_compartment(
    compartment_id: IdPath, body: OpenRequest, principal: OperatorDep, ctx: ContextDep
) -> OpenAnswer:
    """Open a door remotely; the reason is recorded with the operator's id."""
    compartment, request_id = await service.remote_open(
        ctx, principal, compartment_id, body.reason, body.override_cycle, body.purpose
    )
    return OpenAnswer(
        compartment_id=compartment.id, number=compartment.number, request_id=request_id
    )


@router.post("/compartments/{compartment_id}/out-of-service", response_model=CompartmentRead)
async def out_of_service(
    compartment_id: IdPath, body: Reason, principal: OperatorDep, ctx: ContextDep
) -> CompartmentRead:
    c = await service.set_out_of_service(ctx, principal, compartment_id, body.reason)
    return CompartmentRead.model_validate({**_columns(c), "order": None})


@router.post("/compartments/{compartment_id}/back-in-service", response_model=CompartmentRead)
async def back_in_service(
    compartment_id: IdPath, principal: OperatorDep, ctx: ContextDep
) -> CompartmentRead:
    c = await service.set_out_of_service(ctx, principal, compartment_id, None)
    return CompartmentRead.model_validate({**_columns(c), "order": None})


@router.post("/compartments/{compartment_id}/lamp-replaced", response_model=CompartmentRead)
async def lamp_replaced(
    compartment_id: IdPath, body: Reason, principal: OperatorDep, ctx: ContextDep
) -> CompartmentRead:
    """A new UV-C lamp is fitted: its hours start again (`reason`: a note such as the lamp's
    make, kept with the operator's id)."""
    c = await service.lamp_replaced(ctx, principal, compartment_id, body.reason)
    return CompartmentRead.model_validate({**_columns(c), "order": None})


def _columns(c: Compartment) -> dict[str, object]:
    return {col.key: getattr(c, col.key) for col in Compartment.__table__.columns}


@router.get("/orders", response_model=list[OrderRow])
async def search_orders(
    principal: OperatorDep,
    session: SessionDep,
    q: Annotated[Text | None, Query(max_length=128)] = None,
    state: Annotated[Text | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[OrderRow]:
    if state is not None and state not in {s.value for s in OrderState}:
        raise Unprocessable(f"unknown order state {state!r}", code="unknown_state")
    found = await orders.search(
        session, principal.site_ids, q, state, limit, merchant_ids=principal.merchant_ids
    )
    return [OrderRow.model_validate(o, from_attributes=True) for o in found]


@router.get("/orders/{order_id}/record", response_model=FoodRecord)
async def order_record(
    order_id: uuid.UUID, principal: OperatorDep, session: SessionDep
) -> FoodRecord:
    """What the order's food went through: its compartment's temperatures from the drop-off to
    the pickup (or the order's end), the door openings, the cycles and the order's steps."""
    order = await session.get(Order, order_id)
    if order is None or not principal.sees_order(order.site_id, order.merchant_id):
        raise NotFound(f"no order {order_id}")
    return await record.food_record(session, order)


def _site_read(
    settings: Settings, site: Site, kiosks: list[KioskSummary] | None = None
) -> SiteRead:
    rules = profiles.nominal(settings, site.food_safety_profile)
    return SiteRead(
        id=site.id,
        code=site.code,
        name=site.name,
        timezone=site.timezone,
        kill_switch_engaged=site.kill_switch_engaged,
        kill_switch_reason=site.kill_switch_reason,
        kill_switch_at=site.kill_switch_at,
        kiosks=kiosks or [],
        food_safety=FoodSafetyRead(**dataclasses.asdict(rules)),
    )


@router.post("/sites/{site_id}/kill-switch", response_model=SiteRead)
async def kill_switch(
    site_id: IdPath, body: KillSwitchRequest, principal: OperatorDep, ctx: ContextDep
) -> SiteRead:
    """Freeze (or unfreeze) every code and remote opening at a site."""
    site = await service.kill_switch(ctx, principal, site_id, body.engaged, body.reason)
    return _site_read(ctx.settings, site)


@router.post("/kill-switch", response_model=list[SiteRead])
async def freeze_all(
    body: KillSwitchRequest, principal: OperatorDep, ctx: ContextDep
) -> list[SiteRead]:
    """Freeze (or unfreeze) every site at once: admins only, audited (docs/adr/0039)."""
    sites = await service.freeze_all(ctx, principal, body.engaged, body.reason)
    return [_site_read(ctx.settings, site) for site in sites]


def _oncall(site_id: int, found: SiteOncall | None) -> OncallRead:
    if found is None:
        return OncallRead(site_id=site_id, urls=[], escalation_urls=[], updated_at=None)
    return OncallRead(
        site_id=site_id,
        urls=found.urls.split(),
        escalation_urls=found.escalation_urls.split(),
        updated_at=found.updated_at,
    )


async def _site_for_admin(session: SessionDep, principal: OperatorDep, site_id: int) -> Site:
    # The lists may carry credentials (an SMTP password, a paging key): admins only.
    if principal.role != "admin":
        raise Forbidden("only an admin sets who is told of a site's alerts")
    site = await session.get(Site, site_id)
    if site is None:
        raise NotFound(f"no site {site_id}")
    return site


@router.get("/sites/{site_id}/oncall", response_model=OncallRead)
async def get_oncall(site_id: IdPath, principal: OperatorDep, session: SessionDep) -> OncallRead:
    """Who is told of the site's alerts (admins only)."""
    site = await _site_for_admin(session, principal, site_id)
    return _oncall(site.id, await session.get(SiteOncall, site.id))


@router.put("/sites/{site_id}/oncall", response_model=OncallRead)
async def put_oncall(
    site_id: IdPath, body: OncallLists, principal: OperatorDep, session: SessionDep, ctx: ContextDep
) -> OncallRead:
    """Set who is told of the site's alerts; each URL is checked (scheme, no internal host)."""
    site = await _site_for_admin(session, principal, site_id)
    found = await oncall_lists.set_oncall(
        session, ctx.settings, site.id, body.urls, body.escalation_urls, operator_id=principal.id
    )
    return _oncall(site.id, found)


@router.post("/notifications/{notification_id}/resend", response_model=ResendAnswer)
async def resend_notification(
    notification_id: IdPath,
    body: ResendRequest,
    principal: OperatorDep,
    session: SessionDep,
    ctx: ContextDep,
) -> ResendAnswer:
    """Send a purchaser message the outbox gave up on again, to a corrected contact if given;
    audited on the order."""
    row, order = await resending.purchaser_message(session, notification_id)
    if not principal.sees_order(order.site_id, order.merchant_id):
        raise NotFound(f"no purchaser message {notification_id}")
    principal.require_act_on_order(order.site_id, order.merchant_id)
    await resending.resend(
        session,
        row,
        order,
        operator_id=principal.id,
        contact=body.contact,
        settings=ctx.settings,
        hub=ctx.hub,
    )
    return ResendAnswer(id=row.id, order_id=order.id, kind=row.kind, status=row.status)
