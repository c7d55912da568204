"""What a running service holds: settings, database, live hub, and handles on its running parts.

Made once in `lifespan` and handed to endpoints (through `request.app.state.ctx`), the kiosk
event handler and the timer loop, so none of them reaches for globals.

The context is the bottom of the service's layers: it imports no web framework and no MQTT
client (a test checks). The running parts above it (the kiosk link, the order writer, the timer
loop) are reached through the small protocols below, which they implement; the objects
themselves are made and owned by `locker_service.runtime`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from locker_service.cache import AtMostEvery, TtlCache
from locker_service.config import Settings
from locker_service.live import LiveHub

if TYPE_CHECKING:
    from firmware_bridge import contract
    from locker_service.models import Credential, Merchant


class KioskCommander(Protocol):
    """The part of the kiosk link the story uses (`KioskLink` implements it)."""

    async def command(
        self,
        kiosk_id: str,
        action: str,
        compartment: int,
        args: dict[str, Any],
        timeout_s: float,
        *,
        request_id: str | None = None,
    ) -> contract.Reply: ...

    def clock_behind_s(self, kiosk_id: str) -> float:
        """How far behind the service's clock the kiosk's may be, by its recent messages: 0
        when it is not, or nothing is known (ADR 0089)."""
        ...


class OrderWriting(Protocol):
    """New orders written with their audit event and expiry timer (`orders.writer.OrderWriter`,
    group-committed)."""

    async def write(self, row: dict[str, Any], site_code: str) -> bool: ...

    async def close(self) -> None: ...


class TimerWaker(Protocol):
    """The timer loop, woken when a step has just scheduled a timer due at once."""

    def wake(self) -> None: ...


LAST_USED_EVERY_S = 60.0  # a key's `last_used_at` is written at most this often per replica


@dataclass
class ServiceContext:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    hub: LiveHub
    order_writer: OrderWriting
    commander: KioskCommander | None = None  # None: no kiosk link (tests put a fake here)
    timers: TimerWaker | None = None  # None: timers disabled in this process
    # Connections of their own for the work a person stands at the kiosk for: a pickup's
    # decision, scanned or typed, a courier's drop-off, the kiosk's sign-in for those two, and
    # what an unlock the board refused undoes (her code given back, the opening withdrawn).
    # Nobody there may wait for a pooled connection behind the hundreds of reports a takeover
    # hands the story (ADR 0094, 0096). None: the main pool (SQLite's one writer).
    attended_sessionmaker: async_sessionmaker[AsyncSession] | None = None
    # Connections of their own for the kiosk leases (ADR 0097): a renewal must not wait for a
    # pooled connection behind the reports a takeover hands the story, or this replica's own
    # leases run out meanwhile. None: the main pool (SQLite's one writer).
    lease_sessionmaker: async_sessionmaker[AsyncSession] | None = None
    # The service's clock where time rules judge what kiosks report (a cycle cannot end before
    # its time); injected so those rules are tested without waiting for a cycle.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # API key hash -> the merchant and its key (checked for expiry and revocation on each use)
    merchant_keys: TtlCache[tuple[Merchant, Credential]] = field(init=False)
    site_ids: TtlCache[int] = field(init=False)  # site code -> id, for creating orders
    merchant_sites: TtlCache[frozenset[int]] = field(init=False)  # merchant id -> its sites
    key_uses: AtMostEvery = field(init=False)  # when a key's `last_used_at` is written

    @property
    def attended_sessions(self) -> async_sessionmaker[AsyncSession]:
        """Sessions for work a person at the kiosk waits on (`attended_sessionmaker`)."""
        return self.attended_sessionmaker or self.sessionmaker

    @property
    def lease_sessions(self) -> async_sessionmaker[AsyncSession]:
        """Sessions for the lease keeper (`lease_sessionmaker`)."""
        return self.lease_sessionmaker or self.sessionmaker

    def __post_init__(self) -> None:
        self.merchant_keys = TtlCache(self.settings.credential_cache_s)
        self.site_ids = TtlCache(self.settings.credential_cache_s)
        self.merchant_sites = TtlCache(self.settings.credential_cache_s)
        self.key_uses = AtMostEvery(LAST_USED_EVERY_S)
