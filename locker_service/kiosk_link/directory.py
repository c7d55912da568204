"""Which database kiosk (and site) an MQTT kiosk id names, cached for the link and the ingest.

Telemetry and live updates arrive hundreds of times a second; a kiosk's site never changes
while it runs, so one query per kiosk per `KIOSK_CACHE_TTL_S` is enough. Unknown kiosk ids are
remembered as unknown for the same time, so a stranger publishing on our topics costs nothing.
The site's food-safety profile comes with it (the hot-holding alerts judge by its floor): a
profile changed with `lockerctl set-food-profile` reaches the alerts within that time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from locker_service.models import Kiosk, Site

KIOSK_CACHE_TTL_S = 60.0  # a kiosk created with lockerctl is picked up within a minute at worst


@dataclass(frozen=True, slots=True)
class KioskRef:
    id: int
    site_id: int
    food_profile: str = "custom"  # its site's (locker_service.foodsafety.profiles)


class KioskDirectory:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._cache: dict[str, tuple[float, KioskRef | None]] = {}

    async def lookup(self, kiosk_code: str) -> KioskRef | None:
        now = time.monotonic()
        cached = self._cache.get(kiosk_code)
        if cached is not None and now - cached[0] < KIOSK_CACHE_TTL_S:
            return cached[1]
        async with self._sessionmaker() as session:
            row = (
                await session.execute(
                    select(Kiosk.id, Kiosk.site_id, Site.food_safety_profile)
                    .join(Site, Site.id == Kiosk.site_id)
                    .where(Kiosk.code == kiosk_code)
                )
            ).first()
        ref = KioskRef(row.id, row.site_id, row.food_safety_profile) if row is not None else None
        self._cache[kiosk_code] = (now, ref)
        return ref

    async def lookup_many(self, kiosk_codes: set[str]) -> dict[str, KioskRef]:
        """Known kiosks among `kiosk_codes`, with one query for those not cached."""
        now = time.monotonic()
        found: dict[str, KioskRef] = {}
        missing: list[str] = []
        for code in kiosk_codes:
            cached = self._cache.get(code)
            if cached is not None and now - cached[0] < KIOSK_CACHE_TTL_S:
                if cached[1] is not None:
                    found[code] = cached[1]
            else:
                missing.append(code)
        if missing:
            async with self._sessionmaker() as session:
                rows = (
                    await session.execute(
                        select(Kiosk.code, Kiosk.id, Kiosk.site_id, Site.food_safety_profile)
                        .join(Site, Site.id == Kiosk.site_id)
                        .where(Kiosk.code.in_(missing))
                    )
                ).all()
            for row in rows:
                found[row.code] = KioskRef(row.id, row.site_id, row.food_safety_profile)
            for code in missing:
                self._cache[code] = (now, found.get(code))
        return found

    async def site_of(self, kiosk_id: str) -> int | None:
        """`SiteResolver` for the kiosk link's live updates."""
        ref = await self.lookup(kiosk_id)
        return ref.site_id if ref is not None else None
