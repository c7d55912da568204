"""What a running service holds: settings, database, live hub, the kiosk link.

Made once in `lifespan` and handed to endpoints (through `request.app.state.ctx`), the kiosk
event handler and the timer loop, so none of them reaches for globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from firmware_bridge import wire
from locker_service.cache import TtlCache
from locker_service.config import Settings
from locker_service.live import LiveHub
from locker_service.orders.writer import OrderWriter

if TYPE_CHECKING:
    from locker_service.models import Merchant


class KioskCommander(Protocol):
    """The part of the kiosk link the story uses (`KioskLink` implements it)."""

    async def command(
        self, kiosk_id: str, action: str, compartment: int, args: dict[str, Any], timeout_s: float
    ) -> wire.Reply: ...


@dataclass
class ServiceContext:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    hub: LiveHub
    commander: KioskCommander | None = None
    components: dict[str, Any] = field(default_factory=dict)  # link, workers: for /readyz
    merchant_keys: TtlCache[Merchant] = field(init=False)  # API key hash -> merchant
    site_ids: TtlCache[int] = field(init=False)  # site code -> id, for creating orders
    order_writer: OrderWriter = field(init=False)  # new orders, group-committed

    def __post_init__(self) -> None:
        self.merchant_keys = TtlCache(self.settings.credential_cache_s)
        self.site_ids = TtlCache(self.settings.credential_cache_s)
        self.order_writer = OrderWriter(self.engine, self.sessionmaker)
