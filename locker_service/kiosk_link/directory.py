"""Which database kiosk (and site) an MQTT kiosk id names, cached for the link and the ingest.

Telemetry and live updates arrive hundreds of times a second; a kiosk's site never changes
while it runs, so one query per kiosk per `KIOSK_CACHE_TTL_S` is enough. Unknown kiosk ids are
remembered as unknown for the same time, so a stranger publishing on our topics costs nothing.
Lookups not in the cache are answered together: every kiosk asked for while a query is on its
way waits for the next one, which asks for them all (up to `LOOKUP_BATCH` a query), and a kiosk
asked for twice is looked up once. A fleet connecting at once (each kiosk's status and a
snapshot per compartment, thousands of kiosks) is then a few queries, not one per message each
waiting for one of the pool's connections until they time out.
The site's food-safety profile comes with it (the hot-holding alerts judge by its floor): a
profile changed with `lockerctl set-food-profile` reaches the alerts within that time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from locker_service.models import Kiosk, Site

KIOSK_CACHE_TTL_S = 60.0  # a kiosk created with lockerctl is picked up within a minute at worst
LOOKUP_BATCH = 500  # kiosk codes in one query's IN list


def _retrieved(answer: asyncio.Future[KioskRef | None]) -> None:
    """Mark an answer's error as seen, for when every caller waiting for it was cancelled."""
    if not answer.cancelled():
        answer.exception()


@dataclass(frozen=True, slots=True)
class KioskRef:
    id: int
    site_id: int
    food_profile: str = "custom"  # its site's (locker_service.foodsafety.profiles)


class KioskDirectory:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._cache: dict[str, tuple[float, KioskRef | None]] = {}
        # Kiosks asked for and not cached, each with the answer its callers wait for; and the
        # task that looks them up (one at a time), if one runs. Event loop only.
        self._waiting: dict[str, asyncio.Future[KioskRef | None]] = {}
        self._looking: asyncio.Task[None] | None = None

    async def lookup(self, kiosk_code: str) -> KioskRef | None:
        cached = self._cache.get(kiosk_code)
        if cached is not None and time.monotonic() - cached[0] < KIOSK_CACHE_TTL_S:
            return cached[1]
        answer = self._waiting.get(kiosk_code)
        if answer is None:
            loop = asyncio.get_running_loop()
            answer = self._waiting[kiosk_code] = loop.create_future()
            answer.add_done_callback(_retrieved)
            if self._looking is None:
                self._looking = loop.create_task(self._look_up_waiting())
        # Shielded: a caller given up on (its message's task cancelled) leaves the others'.
        return await asyncio.shield(answer)

    async def _look_up_waiting(self) -> None:
        """Look up every kiosk waited for, a batch a query, until none waits."""
        taken: dict[str, asyncio.Future[KioskRef | None]] = {}
        try:
            await asyncio.sleep(0)  # the lookups asked for in this turn of the loop join
            while self._waiting:
                # All taken at once: popped one at a time from the front, a dict is walked
                # past every slot emptied before, each time (quadratic with a fleet waiting).
                taken, self._waiting = self._waiting, {}
                codes = list(taken)
                for start in range(0, len(codes), LOOKUP_BATCH):
                    await self._answer(codes[start : start + LOOKUP_BATCH], taken)
        finally:
            self._looking = None
            for answer in (*taken.values(), *self._waiting.values()):
                answer.cancel()  # only when cancelled: every answer is given otherwise
            self._waiting.clear()

    async def _answer(
        self, codes: list[str], answers: dict[str, asyncio.Future[KioskRef | None]]
    ) -> None:
        try:
            found = await self._query(codes)
        except Exception as exc:  # each caller gets the error (and logs it); nothing cached
            for code in codes:
                if not answers[code].done():
                    answers[code].set_exception(exc)
            return
        now = time.monotonic()
        for code in codes:
            ref = found.get(code)
            self._cache[code] = (now, ref)
            if not answers[code].done():
                answers[code].set_result(ref)

    async def _query(self, kiosk_codes: Collection[str]) -> dict[str, KioskRef]:
        async with self._sessionmaker() as session:
            rows = (
                await session.execute(
                    select(Kiosk.code, Kiosk.id, Kiosk.site_id, Site.food_safety_profile)
                    .join(Site, Site.id == Kiosk.site_id)
                    .where(Kiosk.code.in_(kiosk_codes))
                )
            ).all()
        return {row.code: KioskRef(row.id, row.site_id, row.food_safety_profile) for row in rows}

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
            fetched = await self._query(missing)
            found.update(fetched)
            for code in missing:
                self._cache[code] = (now, fetched.get(code))
        return found

    async def site_of(self, kiosk_id: str) -> int | None:
        """`SiteResolver` for the kiosk link's live updates."""
        ref = await self.lookup(kiosk_id)
        return ref.site_id if ref is not None else None
