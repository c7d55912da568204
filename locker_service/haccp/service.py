"""HACCP days from the database: gathered, sealed in order, read back and verified.

A site's day is sealed once it has ended in the site's time zone and `SEAL_AFTER` more has
passed (late telemetry: a kiosk's buffer replayed after an outage). Days are sealed in order
from the site's first day with anything to record, empty days included, so the chain has no
gap; a day is written once (the unique key settles two replicas sealing at once) and the
database refuses to change or remove it. The record is built from the minute rollups (kept
400 days, `telemetry/retention.py`) and stored whole, so it outlives them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, literal_column, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from locker_service.background import BackgroundLoop
from locker_service.compartments.openings import OpenPurpose
from locker_service.config import Settings
from locker_service.db import create_engine, create_sessionmaker, normalise_url, session_scope
from locker_service.haccp.record import (
    GENESIS,
    DayText,
    SealedDay,
    cell,
    check_day,
    quoted,
    seal,
)
from locker_service.models import (
    Alert,
    Compartment,
    DisinfectionCycle,
    DoorOpening,
    HaccpDay,
    Kiosk,
    Order,
    OrderEvent,
    Site,
    TemperatureMinute,
    utcnow,
)
from locker_service.orders.lifecycle import TAKEN_OUT_BY_STAFF, OrderState, OrderTrigger
from locker_service.sites import service as sites

log = logging.getLogger(__name__)

SEAL_AFTER = timedelta(hours=1)
SEAL_EVERY_S = 600.0
# Alerts that belong in a HACCP record: the temperature, the sensors and heaters, the cycles,
# the food found unsafe, and a kiosk gone quiet (its temperatures unknown).
HACCP_ALERTS = (
    "below_floor",
    "above_ceiling",
    "compartment_fault",
    "food_unsafe",
    "expired_food",
    "cycle_aborted",
    "cycle_overdue",
    "cycle_not_started",
    "cycle_short_dose",
    "cycle_report_impossible",
    "uv_lamp_life",
    "board_rebooted",
    "kiosk_offline",
)
ENDED = ("picked_up", "expired", "cancelled", "failed")


@dataclass(frozen=True, slots=True)
class Bounds:
    """A local day's first and last instants, in UTC."""

    day: date
    zone: ZoneInfo
    start: datetime
    end: datetime
    # The zone's offset as a fixed zone when it is the same all day (no clock change within
    # it): converting a million minutes to it is several times faster than through the zone.
    fixed: timezone | None

    @classmethod
    def of(cls, day: date, zone: ZoneInfo) -> Bounds:
        start = datetime.combine(day, time(), zone)
        end = datetime.combine(day + timedelta(days=1), time(), zone)
        utc_start, utc_end = start.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC"))
        # A day of 24 hours whose offset is the same at both ends has no clock change in it
        # (a change at midnight makes a 23- or 25-hour day; wall-clock arithmetic near it, as
        # `end - 1 µs` would be, lands on the wrong side of a repeated hour).
        first, last = start.utcoffset(), end.utcoffset()
        same = first is not None and first == last and utc_end - utc_start == timedelta(days=1)
        fixed = timezone(first) if same and first is not None else None
        return cls(day, zone, utc_start, utc_end, fixed)

    def local(self, at: datetime | None) -> str | None:
        """`at` in the site's time, with its offset."""
        if at is None:
            return None
        return at.astimezone(self.fixed or self.zone).isoformat(timespec="seconds")


def _zone(site: Site) -> ZoneInfo:
    try:
        return ZoneInfo(site.timezone)
    except (ValueError, KeyError):  # a zone this host does not know: the record says UTC
        return ZoneInfo("UTC")


async def gather(session: AsyncSession, settings: Settings, site: Site, day: date) -> DayText:
    """Everything the site's `day` has to record, as its text's rows."""
    b = Bounds.of(day, _zone(site))
    profile = await sites.food_profile(session, settings, site.id)
    record = DayText(day)
    record.add(
        "site",
        (
            site.code,
            site.name,
            site.timezone,
            profile.name,
            profile.floor_c,
            profile.setpoint_c,
            day.isoformat(),
        ),
    )
    kiosks = {
        k.id: k.code for k in await session.scalars(select(Kiosk).where(Kiosk.site_id == site.id))
    }
    places = {
        c.id: (kiosks[c.kiosk_id], c.number)
        for c in await session.scalars(select(Compartment).where(Compartment.kiosk_id.in_(kiosks)))
    }
    await _readings(session, record, b, kiosks, profile.floor_c)
    await _alerts(session, record, b, site.id, kiosks, places)
    await _cycles(session, record, b, places)
    await _orders(session, record, b, site.id, places)
    await _discards(session, record, b, places)
    await _corrections(session, record, b, site.id, places)
    return record


async def _readings(
    session: AsyncSession, record: DayText, b: Bounds, kiosks: dict[int, str], floor_c: float
) -> None:
    """Every compartment's minutes, and its day summed up (in the database)."""
    m = TemperatureMinute
    in_day = (m.kiosk_id.in_(kiosks), m.minute >= b.start, m.minute < b.end)
    summaries = await session.execute(
        select(
            m.kiosk_id,
            m.number,
            func.count(),
            func.min(m.temp_min_c),
            func.max(m.temp_max_c),
            func.sum(case((m.temp_min_c < floor_c, 1), else_=0)),
        )
        .where(*in_day)
        .group_by(m.kiosk_id, m.number)
    )
    for kiosk_id, number, minutes, low, high, below in sorted(
        summaries, key=lambda r: (kiosks[r[0]], r[1])
    ):
        record.add("summary", (kiosks[kiosk_id], number, minutes, low, high, int(below or 0)))

    code = {kiosk_id: quoted(c) for kiosk_id, c in kiosks.items()}
    count = int((b.end - b.start).total_seconds() // 60)  # 1,380 to 1,500 with a clock change
    stamps = [b.local(b.start + timedelta(minutes=i)) or "" for i in range(count)]
    line = "reading,%s,%d,%s,%.1f,%.1f,%.1f,%.1f,%d"  # record.cell's 0.1 °C, for the full rows

    def partial(kiosk_id: int, number: int, i: int, *values: float | int | None) -> str:
        cells = ",".join(cell(v) for v in values)
        return f"reading,{code[kiosk_id]},{number},{stamps[i]},{cells}"

    record.add_lines(
        "reading",
        [
            partial(k, n, i, low, high, mean, setpoint, readings)
            if gap
            else line % (code[k], n, stamps[i], low, high, mean, setpoint, readings)
            for k, n, i, low, high, mean, setpoint, readings, gap in await _minutes(
                session, list(kiosks), b
            )
        ],
    )


# kiosk id, number, minute of the day (0 at its start), lowest, highest, mean, setpoint,
# readings, and whether a value is missing (a minute with a faulted sensor).
MinuteRow = tuple[int, int, int, float | None, float | None, float | None, float | None, int, bool]


async def _minutes(session: AsyncSession, kiosk_ids: list[int], b: Bounds) -> Sequence[MinuteRow]:
    """The kiosks' minute rollups of the day, in kiosk, compartment and minute order. On
    PostgreSQL straight from the driver, minutes as numbers: a large site's day is over a
    million rows, and the ORM's row processing (a datetime each) would take longer than the
    query."""
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        rows: Sequence[MinuteRow] = await driver.fetch(
            "SELECT kiosk_id, number, (extract(epoch FROM minute - $2) / 60)::int, temp_min_c, "
            "temp_max_c, temp_sum_c / NULLIF(temp_count, 0), setpoint_c, readings, "
            "(temp_min_c IS NULL OR temp_max_c IS NULL OR temp_count = 0 OR setpoint_c IS NULL) "
            "FROM temperature_minutes WHERE kiosk_id = ANY($1::int[]) AND minute >= $2 "
            "AND minute < $3 ORDER BY kiosk_id, number, minute",
            kiosk_ids,
            b.start,
            b.end,
        )
        return rows
    m = TemperatureMinute
    result = await session.execute(
        select(
            m.kiosk_id,
            m.number,
            m.minute,
            m.temp_min_c,
            m.temp_max_c,
            m.temp_sum_c,
            m.temp_count,
            m.setpoint_c,
            m.readings,
        )
        .where(m.kiosk_id.in_(kiosk_ids), m.minute >= b.start, m.minute < b.end)
        .order_by(m.kiosk_id, m.number, m.minute)
    )
    return [
        (
            k,
            n,
            int((minute - b.start).total_seconds() // 60),
            low,
            high,
            total / count if count else None,
            setpoint,
            readings,
            low is None or high is None or not count or setpoint is None,
        )
        for k, n, minute, low, high, total, count, setpoint, readings in result
    ]


async def _alerts(
    session: AsyncSession,
    record: DayText,
    b: Bounds,
    site_id: int,
    kiosks: dict[int, str],
    places: dict[int, tuple[str, int]],
) -> None:
    """The alerts open at any time of the day (one raised before it and resolved after is on
    each day it spans), each with what the day knew of it: its resolution and the corrective
    action if they came before the day's end. An action recorded today on an alert that was
    no longer open today is an `action` row."""
    active = and_(
        Alert.raised_at < b.end, or_(Alert.resolved_at.is_(None), Alert.resolved_at >= b.start)
    )
    acted_today = and_(Alert.action_at >= b.start, Alert.action_at < b.end)
    found = await session.scalars(
        select(Alert)
        .where(Alert.site_id == site_id, Alert.kind.in_(HACCP_ALERTS), or_(active, acted_today))
        .order_by(Alert.raised_at, Alert.id)
    )
    for a in found:
        was_open = a.raised_at < b.end and (a.resolved_at is None or a.resolved_at >= b.start)
        if not was_open:  # an earlier day's alert, acted on today
            record.add(
                "action",
                (
                    b.local(a.raised_at),
                    a.kind,
                    a.message,
                    a.corrective_action,
                    a.action_by,
                    b.local(a.action_at),
                ),
            )
            continue
        kiosk, number = places.get(a.compartment_id or -1, (kiosks.get(a.kiosk_id or -1, ""), None))
        acted = a.action_at is not None and a.action_at < b.end
        record.add(
            "excursion",
            (
                kiosk,
                number,
                b.local(a.raised_at),
                a.kind,
                a.severity,
                a.message,
                b.local(a.resolved_at) if a.resolved_at and a.resolved_at < b.end else None,
                a.corrective_action if acted else None,
                a.action_by if acted else None,
                b.local(a.action_at) if acted else None,
            ),
        )


async def _cycles(
    session: AsyncSession, record: DayText, b: Bounds, places: dict[int, tuple[str, int]]
) -> None:
    cycles = await session.scalars(
        select(DisinfectionCycle)
        .where(
            DisinfectionCycle.compartment_id.in_(places),
            DisinfectionCycle.started_at >= b.start,
            DisinfectionCycle.started_at < b.end,
        )
        .order_by(DisinfectionCycle.started_at, DisinfectionCycle.id)
    )
    for c in cycles:
        ran = (c.finished_at - c.started_at).total_seconds() / 60 if c.finished_at else None
        lamp = c.lamp or {}
        record.add(
            "cycle",
            (
                *places[c.compartment_id],
                str(c.order_id) if c.order_id else None,
                c.kind,
                b.local(c.started_at),
                b.local(c.ends_at),
                b.local(c.finished_at),
                c.state,
                ran,
                lamp.get("lamp_on_s"),
                lamp.get("interruptions"),
                c.dose_mj_cm2,
                c.dose_required_mj_cm2,
                c.outcome,
            ),
        )


async def _orders(
    session: AsyncSession,
    record: DayText,
    b: Bounds,
    site_id: int,
    places: dict[int, tuple[str, int]],
) -> None:
    """Orders whose food was in a compartment at any time of the day: dropped off before its
    end and not ended before its start (an order held across several days is on each)."""
    ended_at = func.coalesce(Order.picked_up_at, Order.closed_at)
    held = await session.scalars(
        select(Order)
        .where(
            Order.site_id == site_id,
            Order.deposited_at.is_not(None),
            Order.deposited_at < b.end,
            or_(ended_at.is_(None), ended_at >= b.start),
        )
        .order_by(Order.deposited_at, Order.id)
    )
    for o in held:
        kiosk, number = places.get(o.compartment_id or -1, ("", None))
        end = o.picked_up_at or o.closed_at
        # What the day saw: an order that ended after it was still held at its end.
        ended = end is not None and end < b.end and o.state in ENDED
        before_end = [
            t if t is not None and t < b.end else None for t in (o.ready_at, o.food_unsafe_at)
        ]
        record.add(
            "order",
            (
                str(o.id),
                kiosk,
                number,
                b.local(o.cooked_at),
                b.local(o.deposited_at),
                b.local(before_end[0]),
                b.local(o.food_deadline),
                b.local(end) if ended else None,
                o.state if ended else "held at the day's end",
                b.local(before_end[1]),
                o.failure_reason if ended else None,
            ),
        )


async def _discards(
    session: AsyncSession, record: DayText, b: Bounds, places: dict[int, tuple[str, int]]
) -> None:
    """Food taken out to be thrown away, one row per order: an operator's opening to discard
    it whose door opened, of an order that ended without her pickup (ADR 0120); and, of
    openings that did not say the food was to go (none said, or a look in), one of an expired
    or unsafe order's compartment after it ended, or one of a ready order that failed as taken
    out by staff: after a heater fault (ADR 0047), or during a look in (ADR 0129). Of an
    order's several, the last."""
    said = and_(
        DoorOpening.purpose == OpenPurpose.DISCARD,
        DoorOpening.door_opened_at.is_not(None),
        Order.state.in_((OrderState.EXPIRED, OrderState.FAILED)),  # not her pickup
    )
    unsaid = or_(DoorOpening.purpose.is_(None), DoorOpening.purpose == OpenPurpose.INSPECT)
    ended = and_(
        Order.state == OrderState.EXPIRED,
        Order.closed_at.is_not(None),
        DoorOpening.at >= Order.closed_at,
    )
    taken_out = and_(
        Order.state == OrderState.FAILED,
        Order.failure_reason.like(f"{TAKEN_OUT_BY_STAFF}%"),
        DoorOpening.door_opened_at.is_not(None),
        DoorOpening.door_opened_at <= Order.closed_at,
        DoorOpening.at >= Order.ready_at,
    )
    openings = await session.execute(
        select(DoorOpening, Order)
        .join(Order, Order.id == DoorOpening.order_id)
        .where(
            DoorOpening.compartment_id.in_(places),
            DoorOpening.at >= b.start,
            DoorOpening.at < b.end,
            DoorOpening.who.like("operator:%"),
            or_(said, and_(unsaid, or_(ended, taken_out))),
        )
        .order_by(DoorOpening.at, DoorOpening.id)
    )
    last = {order.id: (opening, order) for opening, order in openings}
    for opening, order in sorted(last.values(), key=lambda found: (found[0].at, found[0].id)):
        record.add(
            "discard",
            (
                *places[opening.compartment_id],
                str(order.id),
                b.local(opening.at),
                opening.who,
                opening.why,
            ),
        )


async def _corrections(
    session: AsyncSession,
    record: DayText,
    b: Bounds,
    site_id: int,
    places: dict[int, tuple[str, int]],
) -> None:
    """Outcomes corrected this day (ADR 0118): an expired order found collected before its end
    once its kiosk reported (ADR 0112). The days it was on may be sealed already, saying it
    expired; a sealed day is never written again, so the correction is recorded on the day it
    was made, one row for each value it changed, with what the record said and says now."""
    found = await session.execute(
        select(OrderEvent, Order)
        .join(Order, Order.id == OrderEvent.order_id)
        .where(
            # A literal, so that PostgreSQL's plan may use the partial index on it.
            OrderEvent.action == literal_column(f"'{OrderTrigger.PICKED_UP_BEFORE_END.value}'"),
            OrderEvent.at >= b.start,
            OrderEvent.at < b.end,
            Order.site_id == site_id,
        )
        .order_by(OrderEvent.at, OrderEvent.id)
    )
    for event, order in found:
        d = event.detail if isinstance(event.detail, dict) else {}
        kiosk, number = places.get(order.compartment_id or -1, ("", None))
        # When her door opened, as the correction set it (kept in the event since ADR 0118).
        picked_up = _stamp(b, d, "picked_up_at") or b.local(order.picked_up_at)
        changes: list[tuple[str, str | None, str | None]] = [
            ("outcome", d.get("from", "expired"), d.get("to", "picked_up")),
            ("ended_at", _stamp(b, d, "expired_at"), picked_up),
        ]
        if d.get("expired_because"):
            changes.append(("reason", str(d["expired_because"]), None))
        if d.get("food_unsafe_at"):
            changes.append(("food_unsafe_at", _stamp(b, d, "food_unsafe_at"), None))
        why = (
            f"her code was used at {_stamp(b, d, 'collected_at')}, before the order's end; the "
            "service heard she had collected only after it had ended the order (her kiosk cut "
            "off, or her door still open)"
        )
        for what, was, now in changes:
            record.add(
                "correction",
                (str(order.id), kiosk, number, b.local(event.at), what, was, now, why),
            )


def _stamp(b: Bounds, detail: dict[str, Any], key: str) -> str | None:
    """An event's time in the site's time, or None (also for a value that is no time with its
    zone: one odd event must not keep its site's days from being sealed)."""
    value = detail.get(key)
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return b.local(at) if at is not None and at.tzinfo is not None else None


# -- sealing --------------------------------------------------------------------------------


async def _first_day(session: AsyncSession, site: Site, zone: ZoneInfo) -> date | None:
    """The site's first local day with anything to record."""
    kiosk_ids = select(Kiosk.id).where(Kiosk.site_id == site.id)
    firsts = [
        await session.scalar(
            select(func.min(TemperatureMinute.minute)).where(
                TemperatureMinute.kiosk_id.in_(kiosk_ids)
            )
        ),
        await session.scalar(select(func.min(Order.deposited_at)).where(Order.site_id == site.id)),
        await session.scalar(
            select(func.min(Alert.raised_at)).where(
                Alert.site_id == site.id, Alert.kind.in_(HACCP_ALERTS)
            )
        ),
    ]
    known = [f for f in firsts if f is not None]
    if not known:
        return None
    return min(known).astimezone(zone).date()


def last_due_day(zone: ZoneInfo, now: datetime) -> date:
    """The last local day that may be sealed at `now`."""
    return (now - SEAL_AFTER).astimezone(zone).date() - timedelta(days=1)


async def seal_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    now: datetime,
    stopping: threading.Event | None = None,
) -> int:
    """Seal every site's days that are due and not sealed yet, oldest first; how many.
    `stopping` set: no further day is begun."""
    async with sessionmaker() as session:
        site_ids = list(await session.scalars(select(Site.id).order_by(Site.id)))
    sealed = 0
    for site_id in site_ids:
        try:
            sealed += await _seal_site(sessionmaker, settings, site_id, now, stopping)
        except Exception:  # the next round tries again; the other sites go on meanwhile
            log.exception("HACCP: sealing site %s failed", site_id)
    return sealed


async def _seal_site(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    site_id: int,
    now: datetime,
    stopping: threading.Event | None,
) -> int:
    sealed = 0
    while stopping is None or not stopping.is_set():
        async with session_scope(sessionmaker) as session:
            site = await session.get(Site, site_id)
            if site is None:
                return sealed
            zone = _zone(site)
            last = await session.scalar(
                select(HaccpDay).where(HaccpDay.site_id == site_id).order_by(HaccpDay.day.desc())
            )
            if last is not None:
                day, prev = last.day + timedelta(days=1), last.seal
            else:
                first = await _first_day(session, site, zone)
                if first is None:
                    return sealed
                day, prev = first, GENESIS
            if day > last_due_day(zone, now):
                return sealed
            text = (await gather(session, settings, site, day)).text()
            session.add(
                HaccpDay(
                    site_id=site_id,
                    day=day,
                    text=text,
                    prev=prev,
                    seal=seal(prev, text),
                    lines=text.count("\n"),
                    sealed_at=now,
                )
            )
            try:
                await session.flush()
            except IntegrityError:  # another replica sealed it first: go on from there
                await session.rollback()
                continue
        sealed += 1
        log.info("HACCP: sealed %s of site %s", day, site.code)
    return sealed


# -- reading back ---------------------------------------------------------------------------


async def sealed_days(
    session: AsyncSession, site_id: int, first: date | None = None, last: date | None = None
) -> list[SealedDay]:
    query = select(HaccpDay).where(HaccpDay.site_id == site_id).order_by(HaccpDay.day)
    if first is not None:
        query = query.where(HaccpDay.day >= first)
    if last is not None:
        query = query.where(HaccpDay.day <= last)
    return [SealedDay(d.day, d.text, d.prev, d.seal) for d in await session.scalars(query)]


async def seal_before(session: AsyncSession, site_id: int, day: date) -> str:
    """The seal `day` must follow: the last sealed day's before it, else the chain's start."""
    found = await session.scalar(
        select(HaccpDay.seal)
        .where(HaccpDay.site_id == site_id, HaccpDay.day < day)
        .order_by(HaccpDay.day.desc())
        .limit(1)
    )
    return found or GENESIS


async def verify_site(
    session: AsyncSession, site_id: int, first: date | None = None, now: datetime | None = None
) -> list[str]:
    """What is wrong with the site's chain in the database from `first` (default: all of it),
    each problem naming its day. Day by day: one day's text in memory at a time (a large
    site's is 100 MB), hashed off the event loop. A chain left empty though the site has
    records due (a TRUNCATE by the database's owner) is a problem too."""
    rows = (
        await session.execute(
            select(HaccpDay.id, HaccpDay.day)
            .where(HaccpDay.site_id == site_id, *([HaccpDay.day >= first] if first else []))
            .order_by(HaccpDay.day)
        )
    ).all()
    if not rows and first is None:
        site = await session.get(Site, site_id)
        begun = await _first_day(session, site, _zone(site)) if site else None
        if site and begun and begun <= last_due_day(_zone(site), now or utcnow()):
            return [f"{begun}: no day is sealed, though the site has records since then"]
        return []
    problems: list[str] = []
    before: tuple[date, str] | None = None
    first_prev = await seal_before(session, site_id, rows[0].day) if rows else GENESIS
    for row in rows:
        day = (
            await session.execute(
                select(HaccpDay.text, HaccpDay.prev, HaccpDay.seal).where(HaccpDay.id == row.id)
            )
        ).one()
        sealed = SealedDay(row.day, day.text, day.prev, day.seal)
        problems += await asyncio.to_thread(check_day, sealed, before, first_prev)
        before = (row.day, sealed.seal)
    return problems


async def verify_all(session: AsyncSession) -> dict[str, list[str]]:
    """Every site's chain: site code -> problems (empty: intact)."""
    found: dict[str, list[str]] = defaultdict(list)
    for site in await session.scalars(select(Site).order_by(Site.id)):
        found[site.code] = await verify_site(session, site.id)
    return dict(found)


class SealLoop:
    """Seals the due days of every site, every ten minutes (a new day is due an hour after it
    ends; a service that was down seals the days it missed, in order).

    On PostgreSQL in a thread of its own, with its own event loop and connections: a large
    site's day is a million and more minutes to read and write out, seconds of work that must
    not hold up the kiosks' messages on the service's loop. On SQLite (one process, a few
    kiosks) on the service's loop and connections: a second connection would only queue for
    the database's one write lock. A stop lets the day under way finish."""

    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._threaded = normalise_url(settings.database_url).get_backend_name() != "sqlite"
        self._stopping = threading.Event()
        self._loop = BackgroundLoop(
            "haccp-seal",
            self._round,
            period_s=SEAL_EVERY_S,
            log=log,
            failure="sealing HACCP days failed",
            error_pause_s=60.0,
        )

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        self._stopping.set()
        await self._loop.stop()

    async def seal_now(self) -> int:
        """A round now, as the loop runs it; the days sealed."""
        if not self._threaded:
            return await seal_due(self._sessionmaker, self._settings, utcnow(), self._stopping)
        return await asyncio.to_thread(asyncio.run, self._seal())

    async def _round(self) -> bool:
        await self.seal_now()
        return False

    async def _seal(self) -> int:
        engine = create_engine(self._settings.database_url)
        try:
            return await seal_due(
                create_sessionmaker(engine), self._settings, utcnow(), self._stopping
            )
        finally:
            await engine.dispose()
