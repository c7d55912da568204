"""Kiosk reports to the operators' dashboards: what the link received, published on the live hub.

Status becomes the hub's `kiosk` kind, snapshots its `compartment` kind, telemetry and events
keep theirs. With a site resolver an update reaches only the operators of the kiosk's site;
resolving it may query the database, so it runs in a task of its own and never holds up the
message that caused it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import BaseModel

from firmware_bridge.contract import MessageKind
from locker_service.kiosk_link.handler import SiteResolver
from locker_service.live import LiveHub

log = logging.getLogger(__name__)


class LivePublisher:
    """Publishes kiosk reports on the live hub; on the event loop."""

    def __init__(self, hub: LiveHub, sites: SiteResolver | None) -> None:
        self._hub = hub
        self._sites = sites
        # The tasks resolving a site: kept, because the loop holds only weak references.
        self._tasks: set[asyncio.Task[None]] = set()

    def publish(self, kiosk_id: str, kind: MessageKind, payload: BaseModel) -> None:
        """Publish without waiting: at once without sites, else once the site is known."""
        if not self._hub.watched:
            return  # nobody watching: spare the serialisation (telemetry is hundreds a second)
        if self._sites is None:
            self._hub.publish(live_kind(kind), live_data(kiosk_id, payload), None)
            return
        task = asyncio.get_running_loop().create_task(self.publish_now(kiosk_id, kind, payload))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    async def publish_now(self, kiosk_id: str, kind: MessageKind, payload: BaseModel) -> None:
        """Publish once the kiosk's site is resolved (the caller waits for that)."""
        if not self._hub.watched:
            return
        site_id = None
        if self._sites is not None:
            try:
                site_id = await self._sites.site_of(kiosk_id)
            except Exception:
                log.exception("could not resolve the site of kiosk %s", kiosk_id)
        self._hub.publish(live_kind(kind), live_data(kiosk_id, payload), site_id)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("live update failed", exc_info=task.exception())


def live_kind(kind: MessageKind) -> str:
    """The hub's name for a kind of kiosk message (what the dashboards listen for)."""
    return {"status": "kiosk", "snapshot": "compartment"}.get(kind, kind)


def live_data(kiosk_id: str, payload: BaseModel) -> dict[str, Any]:
    return {"kiosk": kiosk_id, **payload.model_dump(mode="json")}
