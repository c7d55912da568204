"""The daily digest each site's on-call receives: what is still open, what happened in a day.

At LOCKER_ONCALL_DIGEST_HOUR of the site's own time zone (wall clock: the digest is read by a
person at the start of a day, time scale or not), one message per site goes into the
notification outbox. Its dedupe key names the site and the local date, so replicas racing for
the same digest and a loop that looks again after a restart write it once. A site whose lists
were set after that hour gets its first digest the next day.

`compose` is pure; `DigestLoop` runs on the background loop helper, its clock injected so a test
can stand at any hour.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from locker_service.alerts import catalogue
from locker_service.alerts.catalogue import UNDELIVERABLE_ALERT
from locker_service.alerts.oncall import ONCALL_DIGEST
from locker_service.background import BackgroundLoop
from locker_service.config import Settings
from locker_service.models import Alert, NotificationOutbox, Order, Site, SiteOncall, utcnow

log = logging.getLogger(__name__)

DAY = timedelta(days=1)
OPEN_LISTED_MAX = 30  # more than this and the dashboard is the place to read them


@dataclass(frozen=True, slots=True)
class DigestFacts:
    """What the digest of one site says, gathered from the database."""

    site: Site
    day_ending: datetime  # the digest covers the day before this moment
    open_alerts: Sequence[Alert]
    raised_by_kind: dict[str, int]  # alerts raised in the day, by kind
    resolved: int
    orders_by_state: dict[str, int]  # orders that reached ready / picked up / expired in the day
    not_reached: int  # purchaser messages given up on in the day


def site_zone(site: Site) -> ZoneInfo:
    try:
        return ZoneInfo(site.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def latest_slot(now: datetime, hour: int, zone: ZoneInfo) -> datetime:
    """The last moment at or before `now` when the site's clock read `hour`:00."""
    local = now.astimezone(zone)
    slot = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if slot > local:
        slot = (local - DAY).replace(hour=hour, minute=0, second=0, microsecond=0)
    return slot


def compose(facts: DigestFacts, now: datetime, time_scale: float) -> tuple[str, str]:
    """Subject and body of a digest (English, with Chinese headings)."""
    site = facts.site
    local = facts.day_ending.astimezone(site_zone(site))
    subject = f"{site.name}: daily alert digest {local:%Y-%m-%d} ({len(facts.open_alerts)} open)"
    lines = [f"Daily digest for {site.name} ({site.code}), {local:%Y-%m-%d %H:%M %Z}", ""]
    lines.append(f"Open alerts / 未处理警报: {len(facts.open_alerts)}")
    for alert in facts.open_alerts[:OPEN_LISTED_MAX]:
        state = "" if alert.state == "open" else " (acknowledged)"
        summary = catalogue.summary(alert.kind, alert.count, alert.raised_at, now, time_scale)
        lines.append(f"- [{alert.severity}] {summary}{state}: {alert.message}")
    if len(facts.open_alerts) > OPEN_LISTED_MAX:
        lines.append(f"- ... and {len(facts.open_alerts) - OPEN_LISTED_MAX} more on the dashboard")
    lines += ["", "In the last day / 过去一天:"]
    raised = sum(facts.raised_by_kind.values())
    lines.append(f"- alerts raised: {raised}, resolved: {facts.resolved}")
    for kind, n in sorted(facts.raised_by_kind.items(), key=lambda item: (-item[1], item[0])):
        lines.append(
            f"  - {catalogue.words(kind).title} / {catalogue.words(kind, 'zh-Hans').title}: {n}"
        )
    for state, label in (("ready", "ready"), ("picked_up", "picked up"), ("expired", "expired")):
        lines.append(f"- orders {label}: {facts.orders_by_state.get(state, 0)}")
    lines.append(f"- purchasers not reached: {facts.not_reached}")
    return subject, "\n".join(lines) + "\n"


async def gather(session: AsyncSession, site: Site, day_ending: datetime) -> DigestFacts:
    since = day_ending - DAY
    open_alerts = (
        await session.scalars(
            select(Alert)
            .where(Alert.site_id == site.id, Alert.state != "resolved")
            .order_by(Alert.raised_at)
        )
    ).all()
    raised = await session.execute(
        select(Alert.kind, func.count())
        .where(Alert.site_id == site.id, Alert.raised_at >= since, Alert.raised_at < day_ending)
        .group_by(Alert.kind)
    )
    resolved = await session.scalar(
        select(func.count()).where(
            Alert.site_id == site.id, Alert.resolved_at >= since, Alert.resolved_at < day_ending
        )
    )
    orders_by_state: dict[str, int] = {}
    for state, column in (
        ("ready", Order.ready_at),
        ("picked_up", Order.picked_up_at),
        ("expired", Order.closed_at),
    ):
        query = select(func.count()).where(
            Order.site_id == site.id, column >= since, column < day_ending
        )
        if state == "expired":
            query = query.where(Order.state == "expired")
        orders_by_state[state] = int(await session.scalar(query) or 0)
    not_reached = await session.scalar(
        select(func.count()).where(
            Alert.site_id == site.id,
            Alert.kind == UNDELIVERABLE_ALERT,
            Alert.raised_at >= since,
            Alert.raised_at < day_ending,
        )
    )
    return DigestFacts(
        site,
        day_ending,
        open_alerts,
        Counter({kind: int(n) for kind, n in raised.all()}),
        int(resolved or 0),
        orders_by_state,
        int(not_reached or 0),
    )


async def queue_due_digests(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, now: datetime
) -> int:
    """Write the digest of every site whose hour has come and whose digest of that day is not
    written yet; returns how many were written."""
    hour = settings.oncall_digest_hour
    if hour < 0:
        return 0
    written = 0
    async with sessionmaker() as session:
        lists = (await session.scalars(select(SiteOncall))).all()
    for oncall in lists:
        if not oncall.urls.strip():
            continue
        async with sessionmaker() as session, session.begin():
            site = await session.get(Site, oncall.site_id)
            assert site is not None
            slot = latest_slot(now, hour, site_zone(site))
            if slot <= oncall.updated_at:
                continue  # set after this hour: the first digest is the next one
            key = f"digest:{site.id}:{slot:%Y-%m-%d}"
            if await session.scalar(
                select(NotificationOutbox.id).where(NotificationOutbox.dedupe_key == key)
            ):
                continue
            subject, body = compose(await gather(session, site, slot), now, settings.time_scale)
            row = NotificationOutbox(
                order_id=None,
                kind=ONCALL_DIGEST,
                channel=oncall.urls,
                dedupe_key=key,
                subject=subject[:300],
                body=body,
                status="pending",
                attempts=0,
                next_attempt_at=utcnow(),  # the outbox's own clock, not the injected one
            )
            try:
                async with session.begin_nested():
                    session.add(row)
            except IntegrityError:
                continue  # another replica wrote it between our look and our write
            written += 1
    return written


class DigestLoop:
    """Looks every LOCKER_ONCALL_DIGEST_POLL_S for sites whose digest hour has come."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._clock = clock
        self.written = 0
        self._loop = BackgroundLoop(
            "oncall-digest",
            self._round,
            period_s=settings.oncall_digest_poll_s,
            log=log,
            failure="on-call digest round failed",
        )

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def run_once(self, now: datetime | None = None) -> int:
        written = await queue_due_digests(self._sessionmaker, self._settings, now or self._clock())
        self.written += written
        return written

    async def _round(self) -> bool:
        await self.run_once()
        return False  # one look per period: a digest is never a backlog
