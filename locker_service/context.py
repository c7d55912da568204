"""What a running service holds: settings, database, live hub, the kiosk link.

Made once in `lifespan` and handed to endpoints (through `request.app.state.ctx`), the kiosk
event handler and the timer loop, so none of them reaches for globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from firmware_bridge import wire
from locker_service.config import Settings
from locker_service.live import LiveHub


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
