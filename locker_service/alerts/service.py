"""Raising, acknowledging and resolving alerts.

`raise_alert` is what every part of the service calls (the story, telemetry's floor/ceiling
checks, the timers). The same `dedupe_key` while an alert is unresolved bumps its `count`
instead of adding a row, so a flapping sensor makes one alert, not hundreds.

A new alert (not a repeat) of a site with an on-call is queued for it in the same transaction,
with its escalation timer (`locker_service.alerts.oncall`); acknowledging or resolving it stops
the escalation. Each alert is shown with its title in both languages (`catalogue`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy import and_, false, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.alerts import catalogue, oncall
from locker_service.errors import NotFound
from locker_service.events import publish_after_commit
from locker_service.live import LiveHub
from locker_service.models import Alert, Compartment, Kiosk, utcnow

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]


def alert_view(alert: Alert) -> dict[str, object]:
    return {
        "id": alert.id,
        "kind": alert.kind,
        "title": catalogue.titles(alert.kind),
        "advice": catalogue.advice(alert.kind),
        "site_id": alert.site_id,
        "kiosk_id": alert.kiosk_id,
        "compartment_id": alert.compartment_id,
        "severity": alert.severity,
        "message": alert.message,
        "state": alert.state,
        "count": alert.count,
        "raised_at": alert.raised_at.isoformat(),
        "last_raised_at": alert.last_raised_at.isoformat(),
        "acked_by": alert.acked_by,
        "acked_at": alert.acked_at.isoformat() if alert.acked_at else None,
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "notification_id": alert.notification_id,
        "corrective_action": alert.corrective_action,
        "action_by": alert.action_by,
        "action_at": alert.action_at.isoformat() if alert.action_at else None,
    }


async def open_alert(session: AsyncSession, dedupe_key: str) -> Alert | None:
    """The key's alert not resolved yet (open or acknowledged), if any."""
    return await session.scalar(
        select(Alert).where(Alert.dedupe_key == dedupe_key, Alert.state != "resolved")
    )


async def raise_alert(
    session: AsyncSession,
    *,
    kind: str,
    severity: Severity,
    message: str,
    dedupe_key: str,
    site_id: int | None = None,
    kiosk_id: int | None = None,
    compartment_id: int | None = None,
    notification_id: int | None = None,
    hub: LiveHub | None = None,
) -> Alert:
    now = utcnow()
    for _ in range(3):  # a racing replica may insert the same key between our read and write
        alert = await open_alert(session, dedupe_key)
        if alert is not None:
            alert.count += 1
            alert.last_raised_at = now
            alert.message = message
            await session.flush()
            publish_after_commit(session, hub, "alert", alert_view(alert), alert.site_id)
            return alert
        alert = Alert(
            kind=kind,
            severity=severity,
            message=message,
            dedupe_key=dedupe_key,
            site_id=site_id,
            kiosk_id=kiosk_id,
            compartment_id=compartment_id,
            notification_id=notification_id,
            state="open",
            raised_at=now,
            last_raised_at=now,
            count=1,
        )
        try:
            async with session.begin_nested():
                session.add(alert)
        except IntegrityError:
            continue
        log.warning("alert %s: %s", kind, message)
        await oncall.page_new_alert(session, alert)
        publish_after_commit(session, hub, "alert", alert_view(alert), site_id)
        return alert
    raise RuntimeError(f"could not raise alert {dedupe_key}")


async def raise_compartment_alert(
    session: AsyncSession,
    hub: LiveHub | None,
    kiosk: Kiosk,
    compartment: Compartment,
    *,
    kind: str,
    severity: Severity,
    what: str,
    dedupe_key: str,
) -> Alert:
    """An alert about one compartment, its message saying where: "kiosk-1 compartment 3: ..."."""
    return await raise_alert(
        session,
        kind=kind,
        severity=severity,
        message=f"{kiosk.code} compartment {compartment.number}: {what}",
        dedupe_key=dedupe_key,
        site_id=kiosk.site_id,
        kiosk_id=kiosk.id,
        compartment_id=compartment.id,
        hub=hub,
    )


async def resolve_alerts(session: AsyncSession, dedupe_key: str, hub: LiveHub | None = None) -> int:
    """The condition behind the key is over: its unresolved alert becomes resolved."""
    alert = await open_alert(session, dedupe_key)
    if alert is None:
        return 0
    alert.state = "resolved"
    alert.resolved_at = utcnow()
    await oncall.stop_escalation(session, alert.id)
    await session.flush()
    publish_after_commit(session, hub, "alert", alert_view(alert), alert.site_id)
    return 1


async def acknowledge(
    session: AsyncSession, alert_id: int, operator_id: int, hub: LiveHub | None = None
) -> Alert:
    alert = await session.get(Alert, alert_id)
    if alert is None:
        raise NotFound(f"no alert {alert_id}")
    if alert.state == "open":
        await session.execute(
            update(Alert)
            .where(Alert.id == alert_id, Alert.state == "open")
            .values(state="acknowledged", acked_by=operator_id, acked_at=utcnow())
        )
        await oncall.stop_escalation(session, alert_id)
        await session.refresh(alert)
        publish_after_commit(session, hub, "alert", alert_view(alert), alert.site_id)
    return alert


async def record_action(
    session: AsyncSession,
    alert: Alert,
    action: str,
    operator_id: int,
    who: str,
    hub: LiveHub | None = None,
) -> Alert:
    """What an operator did about the alert (HACCP's corrective action): kept with who and
    when, and in the day's HACCP record. A later action replaces the text and says so."""
    alert.corrective_action = (
        action
        if alert.corrective_action is None
        else (f"{action} (replaces: {alert.corrective_action})"[:1000])
    )
    alert.action_by, alert.action_at = who, utcnow()
    if alert.state == "open":
        alert.state, alert.acked_by, alert.acked_at = "acknowledged", operator_id, alert.action_at
        await oncall.stop_escalation(session, alert.id)
    await session.flush()
    publish_after_commit(session, hub, "alert", alert_view(alert), alert.site_id)
    return alert


async def list_alerts(
    session: AsyncSession,
    site_ids: frozenset[int] | None,
    state: str | None,
    limit: int,
    compartments: Mapping[int, datetime] | None = None,
) -> Sequence[Alert]:
    """The newest alerts within `site_ids`; with `compartments`, only those about these
    compartments raised since the moment given for each (an operator for merchants: the ones
    holding their food, since it was theirs, ADR 0075)."""
    query = select(Alert).order_by(Alert.last_raised_at.desc()).limit(limit)
    if site_ids is not None:
        query = query.where(Alert.site_id.in_(site_ids))
    if compartments is not None:
        query = query.where(
            or_(
                false(),
                *(
                    and_(Alert.compartment_id == c, Alert.raised_at >= since)
                    for c, since in compartments.items()
                ),
            )
        )
    if state:
        query = query.where(Alert.state == state)
    return (await session.scalars(query)).all()
