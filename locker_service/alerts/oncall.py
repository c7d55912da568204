"""Telling a site's on-call of its alerts: the first message, the escalation, the words of both.

Messages go through the notification outbox (`notification_outbox`, sent at least once with
retries by `locker_service.notifications.worker`), written in the transaction that raised the
alert, so an alert committed is an alert that will be told. A row for the on-call has no order;
its `kind` starts with `oncall_` and its `channel` holds the site's URLs, checked again against
the target policy before each send.

Escalation is a durable timer (`alert_escalation`, in `timers`) written with the alert. The timer
loop runs it at once; its handler (`escalate`) knows the settings, so it answers with the time the
alert becomes overdue (raised + LOCKER_ONCALL_ESCALATE_AFTER_S, scaled) and runs again then. An
acknowledged or resolved alert cancels its timer, and the handler looks at the alert's state
again, so an alert acknowledged while its timer is running is not escalated either.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.alerts import catalogue
from locker_service.models import Alert, NotificationOutbox, Site, SiteOncall, utcnow
from locker_service.timers import service as timers
from locker_service.timers.service import TimerKind

ONCALL_ALERT = "oncall_alert"
ONCALL_ESCALATION = "oncall_escalation"
ONCALL_DIGEST = "oncall_digest"
ONCALL_KINDS = frozenset({ONCALL_ALERT, ONCALL_ESCALATION, ONCALL_DIGEST})
# An info alert (a board restarted once) wakes nobody: it is in the daily digest.
PAGED_SEVERITIES = frozenset({"warning", "critical"})


def is_oncall(kind: str) -> bool:
    return kind in ONCALL_KINDS


async def oncall_of(session: AsyncSession, site_id: int) -> SiteOncall | None:
    return await session.get(SiteOncall, site_id)


def alert_text(alert: Alert, site: Site, *, escalated: bool = False) -> tuple[str, str]:
    """Subject and body of the message about one alert, in both languages."""
    en = catalogue.words(alert.kind, "en")
    zh = catalogue.words(alert.kind, "zh-Hans")
    prefix = "ESCALATED " if escalated else ""
    subject = f"[{prefix}{alert.severity.upper()}] {site.name}: {en.title}"
    lines = [
        f"{en.title} / {zh.title}",
        "",
        alert.message,
        "",
        en.advice,
        zh.advice,
        "",
        f"Site: {site.name} ({site.code}) · alert #{alert.id} · {alert.severity}",
    ]
    if escalated:
        lines.append("Not acknowledged in time: please acknowledge it on the dashboard.")
        lines.append("未在规定时间内确认：请在控制台确认此警报。")
    return subject, "\n".join(lines) + "\n"


def _message(
    kind: str, channel: str, dedupe_key: str, subject: str, body: str, now: datetime
) -> NotificationOutbox:
    return NotificationOutbox(
        order_id=None,
        kind=kind,
        channel=channel,
        dedupe_key=dedupe_key,
        subject=subject[:300],
        body=body,
        attachment=None,
        status="pending",
        attempts=0,
        next_attempt_at=now,
    )


async def page_new_alert(session: AsyncSession, alert: Alert) -> bool:
    """Queue the first message about a new alert and its escalation timer; False if the site has
    no on-call or the alert does not page."""
    if alert.site_id is None or alert.severity not in PAGED_SEVERITIES:
        return False
    oncall = await oncall_of(session, alert.site_id)
    if oncall is None or not oncall.urls.strip():
        return False
    site = await session.get(Site, alert.site_id)
    assert site is not None  # foreign key
    subject, body = alert_text(alert, site)
    now = utcnow()
    session.add(_message(ONCALL_ALERT, oncall.urls, f"alert:{alert.id}:oncall", subject, body, now))
    timers.schedule(session, TimerKind.ALERT_ESCALATION, now, alert_id=alert.id)
    await session.flush()
    return True


async def stop_escalation(session: AsyncSession, alert_id: int) -> None:
    """The alert was acknowledged or resolved: nobody else needs waking."""
    await timers.cancel(session, [TimerKind.ALERT_ESCALATION], alert_id=alert_id)


async def escalate(
    session: AsyncSession, alert_id: int, escalate_after_real_s: float, now: datetime
) -> datetime | None:
    """Escalate the alert if it is still open and overdue. Returns when to look again (not yet
    overdue) or None (escalated, or nothing to do)."""
    alert = await session.get(Alert, alert_id)
    if alert is None or alert.state != "open" or alert.site_id is None:
        return None
    overdue_at = alert.raised_at + timedelta(seconds=escalate_after_real_s)
    if now < overdue_at:
        return overdue_at
    oncall = await oncall_of(session, alert.site_id)
    if oncall is None:
        return None
    channel = oncall.escalation_urls.strip() or oncall.urls.strip()
    if not channel:
        return None
    key = f"alert:{alert.id}:escalation"
    if await session.scalar(
        select(NotificationOutbox.id).where(NotificationOutbox.dedupe_key == key)
    ):
        return None  # a timer run again after a crash: told once already
    site = await session.get(Site, alert.site_id)
    assert site is not None
    subject, body = alert_text(alert, site, escalated=True)
    session.add(_message(ONCALL_ESCALATION, channel, key, subject, body, now))
    await session.flush()
    return None
