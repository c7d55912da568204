"""Keeping each kiosk's bridge supplied to decide pickups alone (docs/adr/0077).

Each replica supplies the kiosks it holds: for every order ready there, the verifiers of its QR
token and typed code, its compartment, its deadline and whether its code is in use, and the
site's kill switch. A kiosk is sent a fresh supply at once when any of that changes, when it
comes back online (a restarted bridge has lost the typed-code verifiers it kept in memory), and
at least every `offline_supply_refresh_s` otherwise, which is how its bridge knows the service
is there. Each supply has a key of its own for the typed-code verifiers, so a supply's MACs are
worth nothing once the next one has replaced it.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from firmware_bridge.contract import OfflineOrder, OfflineSupply
from firmware_bridge.contract.codes import code_mac
from firmware_bridge.contract.offline import encode_key
from locker_service.background import BackgroundLoop
from locker_service.config import Settings
from locker_service.db import session_scope
from locker_service.kiosk_link.link import KioskLink
from locker_service.models import Compartment, Kiosk, Order, Site, utcnow
from locker_service.orders import codes
from locker_service.orders.lifecycle import OrderState

log = logging.getLogger(__name__)

CHECK_S = 1.0  # real seconds between looks for a change
NO_DEADLINE = timedelta(days=1)  # an order with neither a hold nor a food deadline


@dataclass(frozen=True, slots=True)
class ReadyOrder:
    order_id: uuid.UUID
    token_salt: str
    token_sha256: str
    compartment: int
    used: bool
    deadline: datetime | None


@dataclass(frozen=True, slots=True)
class KioskFacts:
    frozen: bool
    orders: tuple[ReadyOrder, ...]

    def fingerprint(self) -> tuple[object, ...]:
        return (
            self.frozen,
            tuple((o.order_id, o.compartment, o.used, o.deadline) for o in self.orders),
        )


async def kiosk_facts(
    session: AsyncSession, kiosk_codes: Collection[str] | None
) -> dict[str, KioskFacts]:
    """What each kiosk (every one when `kiosk_codes` is None) must know: two queries."""
    kiosks = select(Kiosk.code, Site.kill_switch_engaged).join(Site, Site.id == Kiosk.site_id)
    ready = (
        select(
            Kiosk.code,
            Order.id,
            Order.token_salt,
            Order.pickup_token_hash,
            Compartment.number,
            Order.code_used_at,
            Order.hold_until,
            Order.food_deadline,
        )
        .join(Compartment, Compartment.id == Order.compartment_id)
        .join(Kiosk, Kiosk.id == Compartment.kiosk_id)
        .where(Order.state == OrderState.READY.value)
        .order_by(Kiosk.code, Compartment.number)
    )
    if kiosk_codes is not None:
        kiosks = kiosks.where(Kiosk.code.in_(list(kiosk_codes)))
        ready = ready.where(Kiosk.code.in_(list(kiosk_codes)))
    by_kiosk: dict[str, list[ReadyOrder]] = {}
    for code, order_id, salt, token_hash, number, used_at, hold_until, food_deadline in (
        await session.execute(ready)
    ).all():
        deadlines = [d for d in (hold_until, food_deadline) if d is not None]
        by_kiosk.setdefault(code, []).append(
            ReadyOrder(
                order_id,
                salt,
                token_hash,
                number,
                used_at is not None,
                min(deadlines) if deadlines else None,
            )
        )
    return {
        code: KioskFacts(bool(frozen), tuple(by_kiosk.get(code, ())))
        for code, frozen in (await session.execute(kiosks)).all()
    }


def build_supply(
    secret_key: str, facts: KioskFacts, refresh_s: float, now: datetime, key: bytes
) -> OfflineSupply:
    """The supply of one kiosk, its typed-code verifiers under `key` (pure)."""
    orders = []
    for o in facts.orders:
        token = codes.pickup_token(secret_key, o.order_id, o.token_salt)
        orders.append(
            OfflineOrder(
                order_id=str(o.order_id),
                compartment=o.compartment,
                token_sha256=o.token_sha256,
                code_mac=code_mac(key, codes.fallback_code(secret_key, token)),
                deadline=o.deadline or now + NO_DEADLINE,
                used=o.used,
            )
        )
    return OfflineSupply(
        supply_id=uuid.uuid4().hex,
        issued_at=now,
        refresh_s=refresh_s,
        frozen=facts.frozen,
        code_key=encode_key(key),
        orders=orders,
    )


@dataclass(slots=True)
class _Sent:
    fingerprint: tuple[object, ...]
    at: float  # monotonic
    status_ts: datetime | None  # the kiosk's status when it was sent: a new one means reconnected


class SupplyLoop:
    """Sends each kiosk this replica handles its supply when due (see the module's text)."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        link: KioskLink,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.refresh_s = settings.offline_supply_refresh_s
        self._sessionmaker = sessionmaker
        self._link = link
        self._monotonic = monotonic
        self._sent: dict[str, _Sent] = {}
        self.sent = 0  # supplies handed to the broker
        self._loop = BackgroundLoop(
            "offline-supply",
            self.round,
            period_s=min(CHECK_S, self.refresh_s / 3),
            log=log,
            failure="offline supply round failed",
            error_pause_s=CHECK_S,
        )

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def wake(self) -> None:
        self._loop.wake()

    async def round(self) -> bool:
        """Send every supply that is due; never busy (the next look is a period away)."""
        if not self._link.ready:
            self._sent.clear()  # whatever was sent may not have arrived: all again once back
            return False
        handled = self._link.handled_kiosks()
        if handled is not None and not handled:
            self._sent.clear()
            return False
        async with session_scope(self._sessionmaker) as session:
            facts = await kiosk_facts(session, handled)
        now, clock = utcnow(), self._monotonic()
        for kiosk_id in set(self._sent) - set(facts):
            del self._sent[kiosk_id]  # handed over, or gone: supplied afresh if it comes back
        for kiosk_id, kiosk in facts.items():
            status = self._link.kiosk_status(kiosk_id)
            if status is None or status.state != "online":
                continue  # nobody to hear it: sent when the kiosk says it is back
            sent = self._sent.get(kiosk_id)
            fingerprint = kiosk.fingerprint()
            if (
                sent is not None
                and sent.fingerprint == fingerprint
                and sent.status_ts == status.ts
                and clock - sent.at < self.refresh_s
            ):
                continue
            supply = build_supply(
                self.settings.secret_key, kiosk, self.refresh_s, now, secrets.token_bytes(32)
            )
            failure = self._link.supply(kiosk_id, supply)
            if failure is not None:
                log.warning("offline supply for kiosk %s not sent: %s", kiosk_id, failure)
                continue
            self._sent[kiosk_id] = _Sent(fingerprint, clock, status.ts)
            self.sent += 1
        return False
