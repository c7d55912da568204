"""Telling operators about a kiosk whose clock is off (ADR 0089).

The kiosk link keeps, per kiosk, how far behind the service's clock the kiosk's may be
(`kiosk_link/clocks.py`). A clock off by more than the allowance, either way, is a fault to fix
at the kiosk (its time service): commands to a kiosk behind wait longer before "it never had
the command", a kiosk ahead refuses commands as expired and its scans as from the future, and
its reports' times (door events, readings) cannot be taken at their word. Each replica looks at
the kiosks it handles once a minute, raises `kiosk_clock_off` for a clock that turned off and
resolves it once the clock is back within the allowance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from locker_service.alerts.service import raise_alert, resolve_alerts
from locker_service.background import BackgroundLoop
from locker_service.db import session_scope
from locker_service.kiosk_link.clocks import MAX_WAIT_S, KioskClock, KioskClocks
from locker_service.live import LiveHub
from locker_service.models import Kiosk

log = logging.getLogger(__name__)

CHECK_S = 60.0
ALERT = "kiosk_clock_off"
# A kiosk is judged only once heard this long without a break: its first messages after a
# restart of either side may all have waited (a broker's backlog), and its telemetry (every
# 10 s) has given fresh stamps by then.
SETTLE_S = 120.0


class ClockLink(Protocol):
    """What the watch asks of the kiosk link (`kiosk_link.link.KioskLink`)."""

    @property
    def clocks(self) -> KioskClocks: ...

    def handled_kiosks(self) -> frozenset[str] | None: ...


def describe(clock: KioskClock) -> str:
    """What the alert says of the clock, in the operators' words (the catalogue's advice says
    what to do)."""
    off = clock.behind_at_most_s
    if off < 0:
        return f"its clock is at least {-off:.0f} s ahead of the service's"
    return (
        f"its clock is up to {off:.0f} s behind the service's (or all its messages arrive that "
        f"late); commands to it wait as long more as its last minute's messages show, at most "
        f"{MAX_WAIT_S:.0f} s, before it counts as unreachable"
    )


class ClockWatch:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        hub: LiveHub | None,
        link: ClockLink,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._hub = hub
        self._link = link
        self._now = now
        # What this process last told of each kiosk: True when it raised the alert. A kiosk
        # not in here is looked at in the database once (an alert another replica, or this
        # one before a restart, raised may be open).
        self._told: dict[str, bool] = {}
        self._loop = BackgroundLoop(
            "kiosk-clocks", self.round, period_s=CHECK_S, log=log, error_pause_s=CHECK_S
        )

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def round(self) -> bool:
        """Raise or resolve where a kiosk's clock changed side; never busy."""
        handled = self._link.handled_kiosks()
        if handled is not None:
            # Another replica tells of a kiosk handed to it; back here, it is looked at afresh.
            self._told = {k: off for k, off in self._told.items() if k in handled}
        now = self._now()
        changed: dict[str, KioskClock] = {}
        for kiosk_id in self._link.clocks.kiosks():
            if handled is not None and kiosk_id not in handled:
                continue
            clock = self._link.clocks.clock(kiosk_id, now)
            if clock is None or clock.heard_for_s < SETTLE_S:
                continue  # gone quiet (its alert, if any, stays until it is heard), or too new
            if self._told.get(kiosk_id) != clock.off:
                changed[kiosk_id] = clock
        if not changed:
            return False
        async with session_scope(self._sessionmaker) as session:
            kiosks = (
                await session.scalars(select(Kiosk).where(Kiosk.code.in_(list(changed))))
            ).all()
            for kiosk in kiosks:
                clock = changed[kiosk.code]
                key = f"{ALERT}:{kiosk.id}"
                if clock.off:
                    await raise_alert(
                        session,
                        kind=ALERT,
                        severity="warning",
                        message=f"kiosk {kiosk.code} ({kiosk.name}): {describe(clock)}",
                        dedupe_key=key,
                        site_id=kiosk.site_id,
                        kiosk_id=kiosk.id,
                        hub=self._hub,
                    )
                else:
                    await resolve_alerts(session, key, self._hub)
        for kiosk_id, clock in changed.items():
            self._told[kiosk_id] = clock.off
        return False
