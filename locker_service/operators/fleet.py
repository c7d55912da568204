"""The fleet view's read: every kiosk in scope with its trouble, sorted worst first (ADR 0051).

Two statements whatever the fleet's size. The first ranks: compartments in trouble (a fault,
food at risk) are counted per kiosk, open alerts per kiosk, both joined to the kiosks and their
sites, filtered, sorted by trouble and cut to a page in the database; the total and the trouble
counts of everything matching ride along as window functions. The second counts the
compartments (and the free ones) of the page's kiosks only. No query per kiosk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.compartments.lifecycle import FOOD_INSIDE, CompartmentState
from locker_service.models import Alert, Compartment, Kiosk, Order, Site
from locker_service.orders.lifecycle import OrderState

# Only these can be in trouble: a fault is reported or faulted, food at risk is inside (a
# ready order waiting past its reminder is in an awaiting_pickup compartment). A plain filter
# on the scan, so the join and the grouping see only them.
CANDIDATE_STATES = (CompartmentState.FAULTED.value, *sorted(FOOD_INSIDE))
SEVERITIES = ("critical", "warning", "info")  # worst first: the order kiosks are ranked by
LIKE_ESCAPE = "\\"


@dataclass(frozen=True)
class FleetQuery:
    """What the operator asked for: scope, search, filter and page."""

    site_ids: frozenset[int] | None  # None: every site (admin)
    site_id: int | None = None
    q: str | None = None  # part of a kiosk's code or name, or of its site's
    trouble_only: bool = False
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class FleetRow:
    id: int
    code: str
    name: str
    site_id: int
    site_code: str
    site_name: str
    online: bool
    status_since: datetime | None
    last_seen_at: datetime | None
    compartments_total: int
    compartments_free: int
    compartments_faulted: int
    food_at_risk: int
    alerts_critical: int
    alerts_warning: int
    alerts_info: int

    @property
    def trouble(self) -> bool:
        return (
            not self.online
            or self.compartments_faulted > 0
            or self.food_at_risk > 0
            or self.alerts_critical + self.alerts_warning + self.alerts_info > 0
        )


@dataclass(frozen=True)
class FleetCounts:
    """How many kiosks matching the search (before paging) have each kind of trouble."""

    kiosks: int
    offline: int
    faulted: int
    food_at_risk: int
    alerting: int


@dataclass(frozen=True)
class FleetPage:
    rows: list[FleetRow]
    counts: FleetCounts


def like_pattern(text: str) -> str:
    """`%text%` with the text's own `%`, `_` and escape characters taken literally."""
    escaped = text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def fleet_page(
    session: AsyncSession,
    query: FleetQuery,
    *,
    now: datetime,
    floors: Mapping[str, float],
    reminder_after_s: float,
) -> FleetPage:
    """One page of the fleet, troubled kiosks first; `floors`: each food-safety profile's
    floor (a site is judged by its own, unknown names by `custom`'s); `reminder_after_s` in
    real seconds."""
    overdue = (
        select(Order.compartment_id)
        .where(
            Order.state == OrderState.READY.value,
            Order.compartment_id.is_not(None),
            Order.ready_at <= now - timedelta(seconds=reminder_after_s),
        )
        .distinct()
        .subquery("overdue")
    )
    faulted = or_(
        Compartment.fault.is_not(None), Compartment.state == CompartmentState.FAULTED.value
    )
    # Below its site's floor while holding food hot (a setpoint at or above the floor: the
    # telemetry monitor's notion of holding), or ready and waiting past the reminder.
    floor_c = case(floors, value=Site.food_safety_profile, else_=floors["custom"])
    at_risk = or_(
        and_(
            Compartment.state.in_(sorted(FOOD_INSIDE)),
            Compartment.setpoint_c >= floor_c,
            Compartment.temp_c < floor_c,
        ),
        overdue.c.compartment_id.is_not(None),
    )
    # Only the compartments in trouble are aggregated for the sort (a filtered scan, few
    # rows grouped); sizes and free counts are read afterwards for the page's kiosks alone.
    per_kiosk = (
        select(
            Compartment.kiosk_id.label("kiosk_id"),
            func.count().filter(faulted).label("faulted"),
            func.count().filter(at_risk).label("at_risk"),
        )
        .join(Kiosk, Kiosk.id == Compartment.kiosk_id)
        .join(Site, Site.id == Kiosk.site_id)
        .outerjoin(overdue, overdue.c.compartment_id == Compartment.id)
        .where(or_(Compartment.fault.is_not(None), Compartment.state.in_(CANDIDATE_STATES)))
        .group_by(Compartment.kiosk_id)
        .subquery("per_kiosk")
    )
    open_alert = Alert.state == "open"
    alerts = (
        select(
            Alert.kiosk_id.label("kiosk_id"),
            *(
                func.count().filter(and_(open_alert, Alert.severity == s)).label(s)
                for s in SEVERITIES
            ),
            # When the service heard the kiosk go: the raising of its offline alert. The
            # kiosk's own `last_seen_at` cannot tell, as the broker's last will carries the
            # stamp of the connection it ended.
            func.max(Alert.raised_at).filter(Alert.kind == "kiosk_offline").label("offline_at"),
        )
        .where(Alert.kiosk_id.is_not(None), Alert.state != "resolved")
        .group_by(Alert.kiosk_id)
        .subquery("alerts")
    )

    def zero(column: ColumnElement[int]) -> ColumnElement[int]:
        return func.coalesce(column, 0)

    n_faulted, n_at_risk = zero(per_kiosk.c.faulted), zero(per_kiosk.c.at_risk)
    n_alerts = [zero(alerts.c[s]) for s in SEVERITIES]
    offline = Kiosk.online.is_(False)
    alerting = (n_alerts[0] + n_alerts[1] + n_alerts[2]) > 0
    troubled = or_(offline, n_faulted > 0, n_at_risk > 0, alerting)

    def how_many(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.sum(case((condition, 1), else_=0)).over()

    statement = (
        select(
            Kiosk.id,
            Kiosk.code,
            Kiosk.name,
            Site.id.label("site_id"),
            Site.code.label("site_code"),
            Site.name.label("site_name"),
            Kiosk.online,
            case((offline, alerts.c.offline_at), else_=None).label("offline_at"),
            Kiosk.last_seen_at,
            n_faulted.label("faulted"),
            n_at_risk.label("at_risk"),
            *(n.label(f"alerts_{s}") for n, s in zip(n_alerts, SEVERITIES, strict=True)),
            func.count().over().label("matching"),
            how_many(offline).label("matching_offline"),
            how_many(n_faulted > 0).label("matching_faulted"),
            how_many(n_at_risk > 0).label("matching_at_risk"),
            how_many(alerting).label("matching_alerting"),
        )
        .join(Site, Site.id == Kiosk.site_id)
        .outerjoin(per_kiosk, per_kiosk.c.kiosk_id == Kiosk.id)
        .outerjoin(alerts, alerts.c.kiosk_id == Kiosk.id)
        .order_by(
            Kiosk.online.asc(),  # false first: offline kiosks lead
            n_faulted.desc(),
            n_at_risk.desc(),
            *(n.desc() for n in n_alerts),
            Kiosk.name,
            Kiosk.code,  # unique: pages never overlap or skip a kiosk
        )
        .limit(query.limit)
        .offset(query.offset)
    )
    conditions: list[ColumnElement[bool]] = []
    if query.site_ids is not None:
        conditions.append(Kiosk.site_id.in_(query.site_ids))
    if query.site_id is not None:
        conditions.append(Kiosk.site_id == query.site_id)
    if query.q:
        pattern = like_pattern(query.q)
        conditions.append(
            or_(
                *(
                    column.ilike(pattern, escape=LIKE_ESCAPE)
                    for column in (Kiosk.code, Kiosk.name, Site.code, Site.name)
                )
            )
        )
    if query.trouble_only:
        conditions.append(troubled)
    if conditions:
        statement = statement.where(*conditions)

    result = (await session.execute(statement)).all()
    sizes = await _sizes(session, [r.id for r in result])
    rows = [
        FleetRow(
            id=r.id,
            code=r.code,
            name=r.name,
            site_id=r.site_id,
            site_code=r.site_code,
            site_name=r.site_name,
            online=bool(r.online),
            status_since=r.offline_at if not r.online and r.offline_at else r.last_seen_at,
            last_seen_at=r.last_seen_at,
            compartments_total=sizes.get(r.id, (0, 0))[0],
            compartments_free=sizes.get(r.id, (0, 0))[1],
            compartments_faulted=r.faulted,
            food_at_risk=r.at_risk,
            alerts_critical=r.alerts_critical,
            alerts_warning=r.alerts_warning,
            alerts_info=r.alerts_info,
        )
        for r in result
    ]
    if result:
        first = result[0]
        counts = FleetCounts(
            kiosks=first.matching,
            offline=first.matching_offline,
            faulted=first.matching_faulted,
            food_at_risk=first.matching_at_risk,
            alerting=first.matching_alerting,
        )
    elif query.offset > 0:
        # Past the last page: the window functions saw no row, so count without the page.
        again = statement.limit(None).offset(None).order_by(None).subquery()
        totals = (
            await session.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(case((again.c.online.is_(False), 1), else_=0)), 0),
                    func.coalesce(func.sum(case((again.c.faulted > 0, 1), else_=0)), 0),
                    func.coalesce(func.sum(case((again.c.at_risk > 0, 1), else_=0)), 0),
                    func.coalesce(
                        func.sum(
                            case(
                                (
                                    again.c.alerts_critical
                                    + again.c.alerts_warning
                                    + again.c.alerts_info
                                    > 0,
                                    1,
                                ),
                                else_=0,
                            )
                        ),
                        0,
                    ),
                ).select_from(again)
            )
        ).one()
        counts = FleetCounts(*(int(v) for v in totals))
    else:
        counts = FleetCounts(0, 0, 0, 0, 0)
    return FleetPage(rows, counts)


async def _sizes(session: AsyncSession, kiosk_ids: list[int]) -> dict[int, tuple[int, int]]:
    """Kiosk id -> (compartments, free ones), for one page of kiosks."""
    if not kiosk_ids:
        return {}
    result = await session.execute(
        select(
            Compartment.kiosk_id,
            func.count(),
            func.count().filter(Compartment.state == CompartmentState.AVAILABLE.value),
        )
        .where(Compartment.kiosk_id.in_(kiosk_ids))
        .group_by(Compartment.kiosk_id)
    )
    return {kiosk_id: (total, free) for kiosk_id, total, free in result.all()}
