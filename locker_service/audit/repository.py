"""The openings audit's one query: door openings joined to where they were, newest first.

Pages are keyset pages on (at, id) descending, so a page does not shift when new openings are
written while an operator reads older ones.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Row, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from locker_service.audit.schemas import OpeningFilters
from locker_service.compartments.openings import ROLE_OF_KIND, OpeningKind
from locker_service.models import Compartment, Courier, DoorOpening, Kiosk, Operator, Order, Site

# The order's reference is NULL (outer join) for an opening without an order.
OpeningRow = Row[DoorOpening, Compartment, Kiosk, Site, str]


def _who_is(role_or_actor: str) -> ColumnElement[bool]:
    """`who` is this actor, or (given a role) any actor of it: `operator` matches `operator:7`."""
    return or_(
        DoorOpening.who == role_or_actor,
        DoorOpening.who.startswith(role_or_actor + ":", autoescape=True),
    )


def conditions(
    site_ids: frozenset[int] | None, filters: OpeningFilters
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if site_ids is not None:
        where.append(Kiosk.site_id.in_(site_ids))
    if filters.site_id is not None:
        where.append(Kiosk.site_id == filters.site_id)
    if filters.kiosk_id is not None:
        where.append(Kiosk.id == filters.kiosk_id)
    if filters.compartment is not None:
        where.append(Compartment.number == filters.compartment)
    if filters.order:
        by_ref = Order.external_ref.icontains(filters.order, autoescape=True)
        by_id: ColumnElement[bool] | None = None
        with contextlib.suppress(ValueError):
            by_id = DoorOpening.order_id == uuid.UUID(filters.order)
        where.append(by_ref if by_id is None else or_(by_ref, by_id))
    if filters.actor:
        where.append(_who_is(filters.actor))
    if filters.kind is not None:
        if filters.kind == OpeningKind.OTHER:
            where.extend(~_who_is(role) for role in ROLE_OF_KIND.values())
        else:
            where.append(_who_is(ROLE_OF_KIND[filters.kind]))
    if filters.since is not None:
        where.append(DoorOpening.at >= filters.since)
    if filters.until is not None:
        where.append(DoorOpening.at < filters.until)
    if filters.merchant_ids is not None:
        where.append(Order.merchant_id.in_(filters.merchant_ids))
    return where


async def search(
    session: AsyncSession,
    site_ids: frozenset[int] | None,
    filters: OpeningFilters,
    *,
    after: tuple[datetime, int] | None,
    limit: int,
) -> Sequence[OpeningRow]:
    """Openings matching `filters` within `site_ids` (None: every site), newest first, the
    ones older than the keyset `after` (at, id)."""
    query = (
        select(DoorOpening, Compartment, Kiosk, Site, Order.external_ref)
        .join(Compartment, Compartment.id == DoorOpening.compartment_id)
        .join(Kiosk, Kiosk.id == Compartment.kiosk_id)
        .join(Site, Site.id == Kiosk.site_id)
        .outerjoin(Order, Order.id == DoorOpening.order_id)
        .where(*conditions(site_ids, filters))
        .order_by(DoorOpening.at.desc(), DoorOpening.id.desc())
        .limit(limit)
    )
    if after is not None:
        at, opening_id = after
        query = query.where(
            or_(DoorOpening.at < at, and_(DoorOpening.at == at, DoorOpening.id < opening_id))
        )
    return (await session.execute(query)).all()


async def operator_names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await session.execute(select(Operator.id, Operator.name).where(Operator.id.in_(ids)))
    return {row.id: row.name for row in rows}


async def courier_names(session: AsyncSession, codes: set[str]) -> dict[str, str]:
    if not codes:
        return {}
    rows = await session.execute(select(Courier.code, Courier.name).where(Courier.code.in_(codes)))
    return {row.code: row.name for row in rows}
