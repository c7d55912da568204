"""The few reads the pages need beyond the JSON API's answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from locker_service.models import DisinfectionCycle, Site
from locker_service.orders import codes
from locker_service.orders import repository as orders
from locker_service.telemetry import record
from locker_service.telemetry.record import Kept
from locker_service.telemetry.schemas import TemperaturePoint


@dataclass(frozen=True)
class PurchaserExtras:
    site_timezone: str
    cycle_ends_at: datetime | None  # the running hold cycle's end, real (scaled) time
    kept: Kept | None = None  # the food's temperatures since it arrived
    trace: list[TemperaturePoint] = field(default_factory=list)  # and their line
    food_profile: str = "custom"  # the site's food-safety profile


async def purchaser_extras(session: AsyncSession, token: str) -> PurchaserExtras | None:
    order = await orders.by_token_hash(session, codes.token_hash(token))
    if order is None:
        return None
    site = await session.get(Site, order.site_id)
    ends_at = await session.scalar(
        select(DisinfectionCycle.ends_at)
        .where(
            DisinfectionCycle.order_id == order.id,
            DisinfectionCycle.kind == "hold",
            DisinfectionCycle.state == "running",
        )
        .order_by(DisinfectionCycle.started_at.desc())
        .limit(1)
    )
    stay = await record.stay_of(session, order) if order.temperature_class == "hot" else None
    return PurchaserExtras(
        site.timezone if site else "UTC",
        ends_at,
        await record.kept(session, stay) if stay else None,
        await record.trace(session, stay) if stay else [],
        site.food_safety_profile if site else "custom",
    )
